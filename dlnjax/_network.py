"""The network state: the weight tuple W = (W_1, ..., W_N) of a deep linear network.

Notation of docs/theory.md §1 and Lindsey & Menon (seed 001): ``W_k`` has shape
``(d_k, d_{k-1})`` and the end-to-end matrix is ``X = W_N ... W_1``.

Storage. Depth must not make compilation slow, so a `DLN` keeps its layers in three
arrays: ``first`` (W_1, shape ``(m, d_0)``), ``inner`` (W_2 ... W_{N-1} stacked, shape
``(N-2, m, m)``) and ``last`` (W_N, shape ``(d_N, m)``), where ``m`` is the largest inner
width. Every operation loops over ``inner`` with ``lax.scan`` or batched matmuls, so the
traced program has the same size at N = 8 and N = 1024. When the inner widths differ, each
layer is zero-padded to ``m``; the padding is exactly preserved by every flow in
`dlnjax.flows` (their velocities vanish on it) and ``.layers`` strips it. A depth-one network
stores only ``first``.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Inexact

from ._activations import Activation, as_activation
from ._errors import ShapeError, UnsupportedError
from ._numerics import check_finite, ct, dot, sqabs

__all__ = [
    "DLN",
    "end_to_end",
    "forward",
    "moments",
    "gram_pairs",
    "balancedness",
    "squared_norm",
    "mask_arrays",
]


def _as_layer(w, k: int) -> Array:
    if not hasattr(w, "shape"):
        w = np.asarray(w)
    if jnp.ndim(w) != 2:
        raise ShapeError(
            f"DLN: layer W_{k} must be a 2-D array of shape (d_{k}, d_{k - 1}); "
            f"got an array with {jnp.ndim(w)} dimensions and shape {jnp.shape(w)}."
        )
    return w


def _block(rows, cols, shape) -> Array:
    """0/1 (bool) array of ``shape`` (``(..., r, c)``) that is 1 where ``row < rows`` and ``col < cols``.

    ``rows`` and ``cols`` are static integers or 1-D integer sequences (one per leading index of a stacked
    block). Built from iotas, not as an array constant, so a deep shape adds no large constants.
    """
    r = jnp.arange(shape[-2])[:, None] < jnp.asarray(rows, jnp.int32)[..., None, None]
    c = jnp.arange(shape[-1])[None, :] < jnp.asarray(cols, jnp.int32)[..., None, None]
    return jnp.broadcast_to(r & c, shape)


def mask_arrays(widths: Sequence[int], inner_width: int, dtype) -> tuple[Array, ...]:
    """The stored arrays of the 0/1 mask of a network with ``widths`` and (padded) inner width ``inner_width``.

    1 on the weights of ``W_1, ..., W_N`` and 0 on the zero padding to the common inner width ``m``:
    ``(first, inner, last)`` of shapes ``(m, d_0)``, ``(N-2, m, m)``, ``(d_N, m)``, or ``(first,)`` of shape
    ``(d_1, d_0)`` at depth one. The one mask builder of the package (`DLN.mask`, `dlnjax.pad`, the live
    subspace of `dlnjax.sharpness`).
    """
    d = tuple(int(w) for w in widths)
    n = len(d) - 1
    if n == 1:
        return (jnp.ones((d[1], d[0]), dtype),)
    m = int(inner_width)
    first = _block(d[1], d[0], (m, d[0]))
    inner = _block(np.array(d[2:-1], int), np.array(d[1:-2], int), (n - 2, m, m))
    last = _block(d[-1], d[-2], (d[-1], m))
    return tuple(a.astype(dtype) for a in (first, inner, last))


def _pack(layers: Sequence, activation: Activation) -> tuple[tuple, tuple[int, ...]]:
    """The stored arrays ``(first, inner, last)`` and the widths of a list of layers (checked)."""
    layers = [_as_layer(w, k + 1) for k, w in enumerate(layers)]
    if len(layers) == 0:
        raise ShapeError("DLN: need at least one layer.")
    for k in range(len(layers) - 1):
        if layers[k + 1].shape[1] != layers[k].shape[0]:
            raise ShapeError(
                f"DLN: layer shapes do not chain: W_{k + 2} has shape {tuple(layers[k + 1].shape)} "
                f"but W_{k + 1} has shape {tuple(layers[k].shape)}; need "
                f"W_{k + 2}.shape[1] == W_{k + 1}.shape[0] (W_k has shape (d_k, d_(k-1)))."
            )
    if any(0 in w.shape for w in layers):
        raise ShapeError(
            f"DLN: every width must be positive; got shapes {[tuple(w.shape) for w in layers]}."
        )
    dtype = jnp.result_type(*layers)
    if not jnp.issubdtype(dtype, jnp.inexact):
        dtype = jnp.result_type(float)
    _check_activation_dtype(activation, dtype)
    traced = any(isinstance(w, jax.core.Tracer) for w in layers)
    if not traced:
        for k, w in enumerate(layers):  # concrete: name the offending layer, no compilation
            check_finite(w, f"DLN: layer W_{k + 1}")
    layers = [jnp.asarray(w, dtype) for w in layers]
    widths = (layers[0].shape[1],) + tuple(w.shape[0] for w in layers)
    if len(layers) == 1:
        return (layers[0], None, None), widths
    m = max(widths[1:-1])
    grow = lambda w, rows, cols: jnp.pad(w, ((0, rows - w.shape[0]), (0, cols - w.shape[1])))
    first = grow(layers[0], m, widths[0])
    last = grow(layers[-1], widths[-1], m)
    if len(layers) > 2:
        inner = jnp.stack([grow(w, m, m) for w in layers[1:-1]])
    else:
        inner = jnp.zeros((0, m, m), dtype)
    arrays = (first, inner, last)
    if (
        traced
    ):  # one run-time check of the stored arrays (not one per layer: deep nets compile fast)
        arrays = check_finite(arrays, "DLN: a layer")
    return arrays, widths


def _check_activation_dtype(activation: Activation, dtype) -> None:
    if jnp.issubdtype(dtype, jnp.complexfloating) and not activation.is_linear:
        raise UnsupportedError(
            f"DLN: activation {activation.name!r} needs real weights; got {jnp.dtype(dtype)}."
        )


class DLN(eqx.Module):
    """A deep linear network: the weight tuple ``W = (W_1, ..., W_N)``.

    ``DLN.from_layers([W_1, ..., W_N])`` (or ``DLN([W_1, ..., W_N])``) with ``W_k`` of shape
    ``(d_k, d_{k-1})``, real or complex, float32 or float64 (all layers are promoted to one dtype).
    Shapes that do not chain (``W_{k+1}.shape[1] != W_k.shape[0]``) and arrays that are not 2-D raise
    `dlnjax.ShapeError`, non-finite entries `dlnjax.NonFiniteError`.

    ``DLN(first, inner, last, widths=widths)`` builds a network from its stored arrays (see the module
    docstring; ``DLN(first, widths=(d_0, d_1))`` at depth one). Their shapes are checked against the
    static ``widths`` (`dlnjax.ShapeError`), not their values: the padding is the caller's to keep zero.

    A `DLN` is a pytree: ``jax.vmap`` over a function that builds or takes one gives a
    batch of networks (each array gains leading axes), and a `diffrax` solve of a DLN saves
    one with a leading time axis. ``.layers`` works on those too.

    **Attributes:**

    - `widths`: the static tuple ``(d_0, ..., d_N)``.
    - `depth`: ``N``.
    - `layers`: the tuple ``(W_1, ..., W_N)``, padding stripped.
    - `activation`: the pointwise ``phi`` of ``f(x) = W_N phi(... phi(W_1 x))`` (a static
      `dlnjax.Activation`; the identity unless ``activation=`` says otherwise, e.g. ``"relu"``).
      Nonlinear networks are for the training path (`forward`, `dlnjax.train`, the gradient
      flows of a data loss); `end_to_end` and the fiber geometry need a linear network.
    """

    first: Inexact[Array, "*batch m d0"]
    inner: Inexact[Array, "*batch n2 m m"] | None
    last: Inexact[Array, "*batch dN m"] | None
    widths: tuple[int, ...] = eqx.field(static=True)
    activation: Activation = eqx.field(static=True)

    def __init__(
        self,
        first,
        inner: Array | None = None,
        last: Array | None = None,
        *,
        widths: Sequence[int] | None = None,
        activation: str | Activation | None = None,
    ):
        activation = as_activation(activation)
        if widths is None:  # DLN(layers): the layer list, as DLN.from_layers
            if inner is not None or last is not None:
                raise ShapeError(
                    "DLN: give a list of layers, DLN([W_1, ..., W_N]), or the stored arrays with their "
                    "widths, DLN(first, inner, last, widths=...)."
                )
            (first, inner, last), widths = _pack(first, activation)
        self.first, self.inner, self.last = first, inner, last
        self.widths = tuple(int(w) for w in widths)
        self.activation = activation

    def __check_init__(self):
        d = self.widths
        if len(d) < 2 or any(w < 1 for w in d):
            raise ShapeError(
                f"DLN: widths must list d_0, ..., d_N (N >= 1), all positive; got {d}."
            )
        arrays = (self.first, self.inner, self.last)
        if self.depth == 1:
            if self.inner is not None or self.last is not None:
                raise ShapeError("DLN: a depth-one network stores only first (inner, last = None).")
            expected = ((d[1], d[0]),)
            arrays = arrays[:1]
        else:
            if self.inner is None or self.last is None:
                raise ShapeError(
                    f"DLN: a network of depth {self.depth} stores first, inner and last; got None."
                )
            m = self.first.shape[-2] if hasattr(self.first, "shape") else max(d[1:-1])
            if m < max(d[1:-1]):
                raise ShapeError(
                    f"DLN: the inner width m = {m} is below the hidden widths {d[1:-1]}."
                )
            expected = ((m, d[0]), (self.depth - 2, m, m), (d[-1], m))
        if not all(hasattr(a, "shape") and hasattr(a, "dtype") for a in arrays):
            return  # a pytree of placeholders (e.g. a partition of a network): nothing to check
        batch = jnp.shape(arrays[0])[: jnp.ndim(arrays[0]) - 2]
        for name, a, shape in zip(("first", "inner", "last"), arrays, expected):
            if tuple(jnp.shape(a)) != batch + shape:
                raise ShapeError(
                    f"DLN: {name} must have shape {batch + shape} for widths {d} (leading batch axes "
                    f"{batch}); got {tuple(jnp.shape(a))}."
                )
        dtypes = {jnp.dtype(a.dtype) for a in arrays}
        if len(dtypes) != 1 or not jnp.issubdtype(next(iter(dtypes)), jnp.inexact):
            raise ShapeError(
                f"DLN: the stored arrays must share one floating or complex dtype; got {sorted(map(str, dtypes))}."
            )
        _check_activation_dtype(self.activation, self.first.dtype)

    @classmethod
    def from_layers(
        cls, layers: Sequence[Array], *, activation: str | Activation | None = None
    ) -> DLN:
        """The network of the layers ``[W_1, ..., W_N]`` (``W_k`` of shape ``(d_k, d_{k-1})``), checked.

        The layers are promoted to one inexact dtype and zero-padded to the largest inner width. Raises
        `dlnjax.ShapeError` for layers that are not 2-D, do not chain or have a zero width,
        `dlnjax.NonFiniteError` for a non-finite entry (concrete input; traced input is checked at run
        time), `dlnjax.UnsupportedError` for complex weights with a nonlinear activation.
        """
        activation = as_activation(activation)
        (first, inner, last), widths = _pack(layers, activation)
        return cls(first, inner, last, widths=widths, activation=activation)

    @property
    def depth(self) -> int:
        return len(self.widths) - 1

    @property
    def inner_width(self) -> int:
        """``m``: the (padded) common width of the hidden layers."""
        return self.first.shape[-2] if self.depth > 1 else self.widths[-1]

    @property
    def dtype(self):
        return self.first.dtype

    @property
    def layers(self) -> tuple[Array, ...]:
        d = self.widths
        if self.depth == 1:
            return (self.first,)
        out = [self.first[..., : d[1], :]]
        out += [self.inner[..., k, : d[k + 2], : d[k + 1]] for k in range(self.depth - 2)]
        out.append(self.last[..., :, : d[-2]])
        return tuple(out)

    def arrays(self) -> tuple[Array, ...]:
        """The stored arrays ``(first, inner, last)`` (only ``(first,)`` at depth one)."""
        return (self.first,) if self.depth == 1 else (self.first, self.inner, self.last)

    def mask(self) -> DLN:
        """A network of the same widths whose entries are 1 on the weights and 0 on the zero padding
        (`mask_arrays`; no leading batch axes)."""
        return self.replace_arrays(*mask_arrays(self.widths, self.inner_width, self.dtype))

    def with_activation(self, activation: str | Activation | None) -> DLN:
        """The same weights with another activation (``None`` or ``"identity"``: the linear network)."""
        return DLN(*self.arrays(), widths=self.widths, activation=activation)

    def replace_arrays(self, *arrays: Array) -> DLN:
        """A network of the same widths whose stored arrays are ``arrays`` (no checks).

        This is how flows return velocities: ``net.replace_arrays(v_first, v_inner, v_last)``.
        """
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(self), arrays)


def require_linear(net: DLN, what: str) -> None:
    """Raise a clear error if ``net`` carries a nonlinear activation (``what`` names the caller)."""
    if not net.activation.is_linear:
        raise UnsupportedError(
            f"{what} is defined for linear networks only; this network has activation "
            f"{net.activation.name!r} (use net.with_activation(None) for its linear counterpart)."
        )


def end_to_end(net: DLN) -> Inexact[Array, "dN d0"]:
    """The end-to-end matrix ``X = W_N ... W_1`` (docs/theory.md §1), computed with one ``lax.scan``.

    Linear networks only: a network with a nonlinear activation has no end-to-end matrix (use `forward`).
    """
    require_linear(net, "end_to_end")
    if net.depth == 1:
        return net.first

    def step(y, w):
        return dot(w, y), None

    y, _ = jax.lax.scan(step, net.first, net.inner)
    return dot(net.last, y)


def forward(net: DLN, inputs: Inexact[Array, "n d0"]) -> Inexact[Array, "n dN"]:
    """The network function ``f(x) = W_N phi(W_{N-1} ... phi(W_1 x))`` on a batch of inputs (docs/theory.md §6).

    ``inputs`` has shape ``(n, d_0)`` (rows are samples, as in seed 004's ``X``) and the result
    ``(n, d_N)``. ``phi`` is ``net.activation``; for a linear network this is ``inputs @ X^T``.
    """
    if jnp.ndim(inputs) != 2 or jnp.shape(inputs)[-1] != net.widths[0]:
        raise ShapeError(
            f"forward: inputs must have shape (n, d_0) = (n, {net.widths[0]}); got {jnp.shape(inputs)}."
        )
    phi = net.activation
    h = dot(inputs, jnp.swapaxes(net.first, -1, -2))
    if net.depth == 1:
        return h

    def step(h, w):
        return dot(phi(h), jnp.swapaxes(w, -1, -2)), None

    h, _ = jax.lax.scan(step, h, net.inner)
    return dot(phi(h), jnp.swapaxes(net.last, -1, -2))


def gram_pairs(net: DLN) -> tuple[Array, Array]:
    """``(L, R)`` with ``L[k-1] = W_k W_k^*`` and ``R[k-1] = W_{k+1}^* W_{k+1}``, ``k = 1..N-1`` (depth >= 2).

    Stacked on axis ``-3`` after any leading batch axes, each of the padded size ``m x m``. The moments are
    ``L - R`` (`moments`); `dlnjax.padded_balancedness` pairs them across frozen layers.
    """
    gram = lambda w: dot(w, ct(w))
    cogram = lambda w: dot(ct(w), w)
    left = jnp.concatenate([gram(net.first)[..., None, :, :], gram(net.inner)], axis=-3)
    right = jnp.concatenate([cogram(net.inner), cogram(net.last)[..., None, :, :]], axis=-3)
    return left, right


def moments(net: DLN) -> Inexact[Array, "N-1 m m"]:
    """The moments ``G_k = W_k W_k^* - W_{k+1}^* W_{k+1}``, ``k = 1..N-1`` (docs/theory.md §2; (1.9) of seed 001).

    Returned stacked, with leading axis ``k - 1``; each ``G_k`` is Hermitian of size ``d_k``
    (zero-padded to the common inner width ``m`` when the inner widths differ). The
    balanced variety is ``{G = 0}``. At depth one there are no moments (shape ``(0, d_1, d_1)``).
    """
    if net.depth == 1:
        m = net.widths[1]
        return jnp.zeros((0, m, m), net.dtype)
    left, right = gram_pairs(net)
    return left - right


def squared_norm(net: DLN) -> Array:
    """``||W||^2 = sum_k ||W_k||_F^2``, the L2 regularizer times two (Theorem 1 of seed 001).

    Summed as ``Re(w conj w)``: smooth everywhere (``jnp.abs(w) ** 2`` has second derivative 0, not 2, at ``w = 0``
    under JAX's rules), so Hessians of the regularizer are exact at zero entries."""
    return sum(jnp.sum(sqabs(a)) for a in net.arrays())


def balancedness(net: DLN) -> Array:
    """Relative distance to the balanced variety: ``||G||_F / ||W||^2`` (zero iff balanced).

    Dimensionless and invariant under rescaling ``W -> c W`` (zero for the zero network); ``||G||_F`` itself is
    ``jnp.linalg.norm(moments(net))``.
    """
    g = jnp.sqrt(jnp.sum(jnp.abs(moments(net)) ** 2))
    sq = squared_norm(net)
    return jnp.where(sq > 0, g / jnp.where(sq > 0, sq, 1.0), 0.0)  # the zero network is balanced
