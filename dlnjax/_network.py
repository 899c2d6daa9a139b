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
from ._numerics import check_finite, ct, dot

__all__ = ["DLN", "end_to_end", "forward", "moments", "balancedness", "squared_norm"]


def _as_layer(w, k: int) -> Array:
    if not hasattr(w, "shape"):
        w = np.asarray(w)
    if jnp.ndim(w) != 2:
        raise ValueError(
            f"DLN: layer W_{k} must be a 2-D array of shape (d_{k}, d_{k - 1}); "
            f"got an array with {jnp.ndim(w)} dimensions and shape {jnp.shape(w)}."
        )
    return w


class DLN(eqx.Module):
    """A deep linear network: the weight tuple ``W = (W_1, ..., W_N)``.

    ``DLN([W_1, ..., W_N])`` with ``W_k`` of shape ``(d_k, d_{k-1})``, real or complex,
    float32 or float64 (all layers are promoted to one dtype). Shapes that do not chain
    (``W_{k+1}.shape[1] != W_k.shape[0]``), arrays that are not 2-D and non-finite entries
    raise a clear error.

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

    def __init__(self, layers: Sequence[Array], *, activation: str | Activation | None = None):
        self.activation = as_activation(activation)
        layers = [_as_layer(w, k + 1) for k, w in enumerate(layers)]
        if len(layers) == 0:
            raise ValueError("DLN: need at least one layer.")
        for k in range(len(layers) - 1):
            if layers[k + 1].shape[1] != layers[k].shape[0]:
                raise ValueError(
                    f"DLN: layer shapes do not chain: W_{k + 2} has shape {tuple(layers[k + 1].shape)} "
                    f"but W_{k + 1} has shape {tuple(layers[k].shape)}; need "
                    f"W_{k + 2}.shape[1] == W_{k + 1}.shape[0] (W_k has shape (d_k, d_(k-1)))."
                )
        if any(0 in w.shape for w in layers):
            raise ValueError(
                f"DLN: every width must be positive; got shapes {[tuple(w.shape) for w in layers]}."
            )
        dtype = jnp.result_type(*layers)
        if not jnp.issubdtype(dtype, jnp.inexact):
            dtype = jnp.result_type(float)
        if jnp.issubdtype(dtype, jnp.complexfloating) and not self.activation.is_linear:
            raise ValueError(
                f"DLN: activation {self.activation.name!r} needs real weights; got {dtype}."
            )
        traced = any(isinstance(w, jax.core.Tracer) for w in layers)
        if not traced:
            for k, w in enumerate(layers):  # concrete: name the offending layer, no compilation
                check_finite(w, f"DLN: layer W_{k + 1}")
        layers = [jnp.asarray(w, dtype) for w in layers]
        widths = (layers[0].shape[1],) + tuple(w.shape[0] for w in layers)
        self.widths = widths
        n = len(layers)
        if n == 1:
            self.first, self.inner, self.last = layers[0], None, None
        else:
            m = max(widths[1:-1])
            pad = lambda w, rows, cols: jnp.pad(w, ((0, rows - w.shape[0]), (0, cols - w.shape[1])))
            self.first = pad(layers[0], m, widths[0])
            self.last = pad(layers[-1], widths[-1], m)
            if n > 2:
                self.inner = jnp.stack([pad(w, m, m) for w in layers[1:-1]])
            else:
                self.inner = jnp.zeros((0, m, m), dtype)
        if (
            traced
        ):  # one run-time check of the stored arrays (not one per layer: deep nets compile fast)
            arrays = check_finite(self.arrays(), "DLN: a layer")
            self.first = arrays[0]
            if n > 1:
                self.inner, self.last = arrays[1], arrays[2]

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
        """A network of the same widths whose entries are 1 on the weights and 0 on the zero padding."""
        d = self.widths
        if self.depth == 1:
            return self.replace_arrays(jnp.ones(self.first.shape[-2:], self.dtype))
        m = self.inner_width

        def live(
            rows, cols, shape
        ):  # 1 where (row < rows) and (col < cols) on a grid of the given shape
            r = np.arange(shape[0])[:, None] < np.asarray(rows)[..., None, None]
            c = np.arange(shape[1])[None, :] < np.asarray(cols)[..., None, None]
            return r & c

        first = live(d[1], d[0], (m, d[0]))
        inner = live(np.array(d[2:-1], dtype=int), np.array(d[1:-2], dtype=int), (m, m)).reshape(
            self.depth - 2, m, m
        )
        last = live(d[-1], d[-2], (d[-1], m))
        first, inner, last = (jnp.asarray(a, self.dtype) for a in (first, inner, last))
        return self.replace_arrays(first, inner, last)

    def with_activation(self, activation: str | Activation | None) -> DLN:
        """The same weights with another activation (``None`` or ``"identity"``: the linear network)."""
        activation = as_activation(activation)
        if jnp.iscomplexobj(self.first) and not activation.is_linear:
            raise ValueError(
                f"DLN: activation {activation.name!r} needs real weights; got {self.dtype}."
            )
        leaves, treedef = jax.tree_util.tree_flatten(self)
        new = jax.tree_util.tree_unflatten(treedef, leaves)
        object.__setattr__(new, "activation", activation)
        return new

    def replace_arrays(self, *arrays: Array) -> DLN:
        """A network of the same widths whose stored arrays are ``arrays`` (no checks).

        This is how flows return velocities: ``net.replace_arrays(v_first, v_inner, v_last)``.
        """
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(self), arrays)


def require_linear(net: DLN, what: str) -> None:
    """Raise a clear error if ``net`` carries a nonlinear activation (``what`` names the caller)."""
    if not net.activation.is_linear:
        raise ValueError(
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
        raise ValueError(
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


def moments(net: DLN) -> Inexact[Array, "N-1 m m"]:
    """The moments ``G_k = W_k W_k^* - W_{k+1}^* W_{k+1}``, ``k = 1..N-1`` (docs/theory.md §2; (1.9) of seed 001).

    Returned stacked, with leading axis ``k - 1``; each ``G_k`` is Hermitian of size ``d_k``
    (zero-padded to the common inner width ``m`` when the inner widths differ). The
    balanced variety is ``{G = 0}``. At depth one there are no moments (shape ``(0, d_1, d_1)``).
    """
    if net.depth == 1:
        m = net.widths[1]
        return jnp.zeros((0, m, m), net.dtype)
    gram = lambda w: dot(w, ct(w))
    cogram = lambda w: dot(ct(w), w)
    left = jnp.concatenate(
        [gram(net.first)[None], gram(net.inner)], axis=0
    )  # W_k W_k^*, k = 1..N-1
    right = jnp.concatenate(
        [cogram(net.inner), cogram(net.last)[None]], axis=0
    )  # W_{k+1}^* W_{k+1}
    return left - right


def squared_norm(net: DLN) -> Array:
    """``||W||^2 = sum_k ||W_k||_F^2``, the L2 regularizer times two (Theorem 1 of seed 001)."""
    return sum(jnp.sum(jnp.abs(a) ** 2) for a in net.arrays())


def balancedness(net: DLN) -> Array:
    """Relative distance to the balanced variety: ``||G||_F / ||W||^2`` (zero iff balanced).

    Dimensionless and invariant under rescaling ``W -> c W`` (zero for the zero network); ``||G||_F`` itself is
    ``jnp.linalg.norm(moments(net))``.
    """
    g = jnp.sqrt(jnp.sum(jnp.abs(moments(net)) ** 2))
    sq = squared_norm(net)
    return jnp.where(sq > 0, g / jnp.where(sq > 0, sq, 1.0), 0.0)  # the zero network is balanced
