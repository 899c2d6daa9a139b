"""Padded networks: every depth-``N``, width-``w`` network as one fixed shape, so that a sweep over a depth x width
grid runs as one compiled program.

A real network with widths ``(d_0, d_1, ..., d_{N-1}, d_N)`` (``N >= 2``) is embedded into the shape
``(d_0, W, ..., W, d_N)`` of depth ``N_max >= N`` and hidden width ``W >= max_k d_k`` (`pad`):

- padded layer 1 is the real ``W_1`` (rows ``>= d_1`` zero);
- padded layers ``2 .. N_max - N + 1`` are **frozen**: each is ``F = [[I_{d_1}, 0], [0, 0]]`` (``W x W``);
- padded layers ``N_max - N + 2 .. N_max`` are the real ``W_2 .. W_N``, zero-padded to ``W x W`` (the last to
  ``d_N x W``).

Since ``F`` is the identity on the span of ``W_1``'s rows, the padded end-to-end matrix is
``W_N ... W_2 F^(N_max - N) W_1 = W_N ... W_1``: every function of the end-to-end matrix (the loss, the
test error, the ranks) is unchanged, and so is the network function of a ReLU network (``relu`` is
idempotent). The 0/1 network ``live`` returned alongside marks the real weights. The gradient of the loss
is the real gradient on ``live`` entries and zero on the zero padding; it is *not* zero on the frozen
block, so training must multiply every update by ``live`` (``dlnjax.train(..., mask=live)``,
``dlnjax.flows.Masked(flow, live)``). Then the padded trajectory is the real one, entry for entry, and
`unpad` recovers it. The Hessian restricted to the ``live`` entries is the real Hessian
(``dlnjax.sharpness(loss, padded, mask=live)``).

Quantities that see the layers one by one (norms, moments, balancedness) are computed from ``(padded,
live)`` by the ``padded_*`` functions, with no static knowledge of the real depth: a layer is real iff its
``live`` block is nonzero, so under ``jax.vmap`` runs of different real depth (a per-run ``live``) share one
program.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from ._diagnostics import layer_norms
from ._errors import InputTypeError, ShapeError, UnsupportedError
from ._network import DLN, gram_pairs, mask_arrays
from ._numerics import sqabs

__all__ = [
    "pad",
    "unpad",
    "padded_squared_norm",
    "padded_layer_norms",
    "padded_balancedness",
]


def _with_widths(like: DLN, widths: tuple[int, ...], arrays: tuple[Array, Array, Array]) -> DLN:
    """A `DLN` with static ``widths``, stored ``arrays`` and the activation of ``like`` (shapes checked, values not)."""
    return DLN(*arrays, widths=widths, activation=like.activation)


def _grow(a: Array, rows: int, cols: int) -> Array:
    """Zero-pad the last two axes of ``a`` to ``(rows, cols)``."""
    cfg = [(0, 0)] * (a.ndim - 2) + [(0, rows - a.shape[-2]), (0, cols - a.shape[-1])]
    return jnp.pad(a, cfg)


def _check_real(net, what: str) -> None:
    if not isinstance(net, DLN):
        raise InputTypeError(f"{what}: net must be a dlnjax.DLN; got {type(net).__name__}.")
    if net.depth < 2:
        raise ShapeError(
            f"{what}: the real network must have depth N >= 2 (the frozen identity layers sit after layer 1 and "
            f"before layer 2); got depth {net.depth} (widths {net.widths})."
        )


def _check_activation(net: DLN, what: str) -> None:
    act = net.activation
    if (
        act.is_linear
        or act.name == "relu"
        or (act.name == "leaky_relu" and float(act.negative_slope) == 0.0)
    ):
        return
    raise UnsupportedError(
        f"{what}: a frozen identity layer changes the network function unless the activation is idempotent "
        f"(phi(phi(h)) = phi(h): identity or relu); got activation {act.name!r}."
    )


def pad(net: DLN, depth: int, width: int) -> tuple[DLN, DLN]:
    """Embed a real network into the padded shape ``(d_0, width, ..., width, d_N)`` of depth ``depth``.

    **Arguments:**

    - `net`: the real network, depth ``N`` with ``2 <= N <= depth`` and hidden widths ``d_1, ..., d_{N-1} <=
      width`` (uniform or not; each layer is zero-padded). Linear or ReLU. Leading batch axes are allowed,
      and ``jax.vmap(lambda n: pad(n, depth, width))(batch)`` works (only static-shape operations).
    - `depth`, `width`: the padded depth ``N_max`` and hidden width ``W`` (static integers).

    **Returns:** ``(padded, live)``. ``padded`` holds, in order, the real ``W_1`` (rows ``>= d_1`` zero), the
    ``N_max - N`` frozen layers ``[[I_{d_1}, 0], [0, 0]]`` and the real ``W_2, ..., W_N`` (zero-padded to
    ``W x W``, the last to ``d_N x W``). ``live`` has the same widths: 1 on the real weights, 0 on the
    frozen layers and on the padding (dtype of ``net``).

    **Guaranteed** (exactly, up to the round-off of summing exact zeros): ``end_to_end(padded) ==
    end_to_end(net)``, hence the loss, the test error and every function of the end-to-end matrix; the
    network function of a ReLU network; ``network_gradient(loss, padded)`` equals the real gradient on
    ``live`` entries and is zero on the padding (not on the frozen block: mask updates with ``live``);
    ``unpad(padded, net.widths) == net``. Layer-wise quantities: `padded_squared_norm`,
    `padded_layer_norms`, `padded_balancedness`, `dlnjax.padded_objective`.

    Raises `dlnjax.ShapeError` for a real depth ``N < 2`` or ``N > depth`` or a hidden width above ``width``,
    `dlnjax.UnsupportedError` for a non-idempotent activation (leaky ReLU, GELU).
    """
    _check_real(net, "pad")
    _check_activation(net, "pad")
    depth, width = int(depth), int(width)
    d, n = net.widths, net.depth
    if n > depth:
        raise ShapeError(f"pad: the real depth N = {n} exceeds the padded depth {depth}.")
    if max(d[1:-1]) > width:
        raise ShapeError(f"pad: the real hidden widths {d[1:-1]} exceed the padded width {width}.")
    batch = net.first.shape[:-2]
    first = _grow(net.first, width, d[0])
    last = _grow(net.last, d[-1], width)
    frozen = jnp.diag((jnp.arange(width) < d[1]).astype(net.dtype))  # [[I_{d_1}, 0], [0, 0]]
    frozen = jnp.broadcast_to(frozen, batch + (depth - n, width, width))
    inner = jnp.concatenate([frozen, _grow(net.inner, width, width)], axis=-3)
    widths = (d[0],) + (width,) * (depth - 1) + (d[-1],)
    padded = _with_widths(net, widths, (first, inner, last))

    live_first, live_inner, live_last = mask_arrays(d, width, net.dtype)
    live_inner = jnp.concatenate(
        [jnp.zeros((depth - n, width, width), net.dtype), live_inner], axis=0
    )
    live = tuple(jnp.broadcast_to(a, batch + a.shape) for a in (live_first, live_inner, live_last))
    return padded, _with_widths(net, widths, live)


def unpad(padded: DLN, widths: Sequence[int]) -> DLN:
    """The real network of ``widths = (d_0, ..., d_N)`` inside ``padded`` (the inverse of `pad`).

    Reads the first layer, the last ``N - 2`` inner layers and the last layer, and keeps only their live
    entries (anything on the padding is dropped; the frozen layers are not read or checked). Leading axes
    (a batch, the time axis of a `dlnjax.simulate` trajectory) are kept. ``widths`` is static.
    """
    _check_real(padded, "unpad")
    widths = tuple(int(w) for w in widths)
    n, big = len(widths) - 1, padded.depth
    if n < 2:
        raise ShapeError(f"unpad: the real depth must be >= 2; got widths {widths}.")
    if n > big:
        raise ShapeError(f"unpad: the real depth N = {n} exceeds the padded depth {big}.")
    if (widths[0], widths[-1]) != (padded.widths[0], padded.widths[-1]):
        raise ShapeError(
            f"unpad: d_0 and d_N must be those of the padded network, ({padded.widths[0]}, {padded.widths[-1]}); "
            f"got ({widths[0]}, {widths[-1]})."
        )
    m = max(widths[1:-1])
    if m > padded.inner_width:
        raise ShapeError(
            f"unpad: the hidden widths {widths[1:-1]} exceed the padded width {padded.inner_width}."
        )
    arrays = (
        padded.first[..., :m, :],
        padded.inner[..., big - n :, :m, :m],
        padded.last[..., :, :m],
    )
    masks = mask_arrays(widths, m, padded.dtype)
    return _with_widths(padded, widths, tuple(a * k for a, k in zip(arrays, masks)))


# --------------------------------------------------------------------------------------------------
# Quantities of the real network, from (padded, live) with a traced live
# --------------------------------------------------------------------------------------------------


def check_padded_pair(net, live, what: str) -> None:
    """Raise unless ``net`` is a padded network (a `DLN` of depth >= 2) and ``live`` a `DLN` of its widths."""
    for name, x in (("net", net), ("live", live)):
        if not isinstance(x, DLN):
            raise InputTypeError(f"{what}: {name} must be a dlnjax.DLN; got {type(x).__name__}.")
    if net.depth < 2:
        raise ShapeError(f"{what}: a padded network has depth >= 2; got depth {net.depth}.")
    if live.widths != net.widths:
        raise ShapeError(
            f"{what}: live must have the widths of net, {net.widths}; got {live.widths}."
        )


def _masked(net: DLN, live: DLN) -> tuple[Array, Array, Array]:
    return tuple(a * m for a, m in zip(net.arrays(), live.arrays()))


def _alive(live: DLN) -> Bool[Array, "*batch N"]:
    """Which padded layers are real: those whose ``live`` block has a nonzero entry."""
    any_ = lambda a: jnp.any(a != 0, axis=(-2, -1))
    return jnp.concatenate(
        [any_(live.first)[..., None], any_(live.inner), any_(live.last)[..., None]], axis=-1
    )


def padded_squared_norm(net: DLN, live: DLN) -> Float[Array, "*batch"]:
    """``||W||^2`` of the real network inside ``net``: ``sum |net * live|^2`` (equals `dlnjax.squared_norm` of
    ``unpad(net, widths)``; the frozen layers do not count). Leading batch axes allowed."""
    check_padded_pair(net, live, "padded_squared_norm")
    first, inner, last = _masked(net, live)
    return (
        jnp.sum(sqabs(first), axis=(-2, -1))
        + jnp.sum(sqabs(inner), axis=(-3, -2, -1))
        + jnp.sum(sqabs(last), axis=(-2, -1))
    )


def padded_layer_norms(net: DLN, live: DLN) -> Float[Array, "*batch N_max"]:
    """The squared norms ``(||W_1||_F^2, ..., ||W_N||_F^2)`` of the real layers, then ``N_max - N`` NaN.

    Equal to ``dlnjax.layer_norms(unpad(net, widths))`` followed by NaN; shape ``(N_max,)`` whatever the
    real depth ``N`` (the real layers are found from ``live`` at run time and gathered in order). Leading
    batch axes allowed.
    """
    check_padded_pair(net, live, "padded_layer_norms")
    norms = layer_norms(net.replace_arrays(*_masked(net, live)))
    alive = _alive(live)
    order = jnp.argsort(jnp.where(alive, 0, 1), axis=-1, stable=True)  # real layers first, in order
    count = jnp.sum(alive, axis=-1, keepdims=True)
    gathered = jnp.take_along_axis(norms, order, axis=-1)
    return jnp.where(jnp.arange(alive.shape[-1]) < count, gathered, jnp.nan)


def padded_balancedness(net: DLN, live: DLN) -> Float[Array, "*batch"]:
    """`dlnjax.balancedness` of the real network inside ``net``: ``||G||_F / ||W||^2`` over the real layers.

    ``G`` holds the gaps ``W_k W_k^* - W_{k+1}^* W_{k+1}`` between *consecutive real* layers: the left partner
    of each real layer is the nearest real layer before it (found from ``live`` at run time: for `pad`'s
    layout, layer 1 is the partner of the first real layer after the frozen block). Equal to
    ``dlnjax.balancedness(unpad(net, widths))``, zero for the zero network. Leading batch axes allowed.
    """
    check_padded_pair(net, live, "padded_balancedness")
    # W_p W_p^*, p = 0..N_max-2, and W_p^* W_p, p = 1..N_max-1, of the masked layers
    left, right = gram_pairs(net.replace_arrays(*_masked(net, live)))
    alive = _alive(live)
    positions = jnp.arange(alive.shape[-1])
    latest = jax.lax.cummax(
        jnp.where(alive, positions, -1), axis=alive.ndim - 1
    )  # last real layer <= p
    partner = latest[..., :-1]  # for p = 1..N_max-1: the last real layer < p
    pairs = alive[..., 1:] & (partner >= 0)
    gathered = jnp.take_along_axis(left, jnp.maximum(partner, 0)[..., None, None], axis=-3)
    gaps = jnp.where(pairs[..., None, None], gathered - right, 0.0)
    g = jnp.sqrt(jnp.sum(sqabs(gaps), axis=(-3, -2, -1)))
    sq = padded_squared_norm(net, live)
    return jnp.where(sq > 0, g / jnp.where(sq > 0, sq, 1.0), 0.0)
