"""Constructors of deep linear networks: random initializations and points of a fiber.

The fiber center and the group action are docs/theory.md §2 and (1.6) of Lindsey & Menon (seed 001).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Inexact, PRNGKeyArray

from ._errors import OptionError, ShapeError
from ._network import DLN
from ._numerics import check_finite, dot

__all__ = [
    "gaussian",
    "orthogonal",
    "residual",
    "identity",
    "fiber_center",
    "group_action",
    "random_fiber_point",
]


def _check_widths(widths: Sequence[int]) -> tuple[int, ...]:
    widths = tuple(int(d) for d in widths)
    if len(widths) < 2:
        raise ShapeError(f"widths must list d_0, ..., d_N with N >= 1; got {widths}.")
    if any(d <= 0 for d in widths):
        raise ShapeError(f"every width must be positive; got {widths}.")
    return widths


def _default_dtype(dtype):
    return jnp.result_type(float) if dtype is None else jnp.dtype(dtype)


def _normal(key, shape, dtype) -> Array:
    """Standard normal entries with ``E|w|^2 = 1`` (for complex dtypes JAX splits the variance between re and im)."""
    return jr.normal(key, shape, dtype)


def gaussian(key: PRNGKeyArray, widths: Sequence[int], scale: float = 1.0, *, dtype=None) -> DLN:
    """A network with i.i.d. Gaussian entries of standard deviation ``scale`` (``E|w|^2 = scale^2``).

    For the usual fan-in scaling pass ``scale = s / sqrt(d)``.
    """
    widths = _check_widths(widths)
    dtype = _default_dtype(dtype)
    keys = jr.split(key, len(widths) - 1)
    return DLN([scale * _normal(k, (widths[i + 1], widths[i]), dtype) for i, k in enumerate(keys)])


def orthogonal(key: PRNGKeyArray, widths: Sequence[int], scale: float = 1.0, *, dtype=None) -> DLN:
    """A network whose layers are ``scale`` times Haar-random (semi-)orthogonal or unitary matrices.

    A layer of shape ``(d_k, d_{k-1})`` has orthonormal rows if ``d_k <= d_{k-1}`` and orthonormal
    columns otherwise; all its singular values equal ``scale``.
    """
    widths = _check_widths(widths)
    dtype = _default_dtype(dtype)
    keys = jr.split(key, len(widths) - 1)
    layers = []
    for i, k in enumerate(keys):
        rows, cols = widths[i + 1], widths[i]
        n = max(rows, cols)
        q, r = jnp.linalg.qr(_normal(k, (n, n), dtype))
        d = jnp.diagonal(r)
        q = q * (d / jnp.abs(d))[None, :]  # makes the distribution Haar
        layers.append(scale * q[:rows, :cols])
    return DLN(layers)


def residual(key: PRNGKeyArray, depth: int, width: int, scale: float, *, dtype=None) -> DLN:
    """The residual initialization ``W_k = I + s / sqrt(N d) * Gaussian`` (seed 004, docs/theory.md §7), square ``d x d``."""
    if depth < 1 or width < 1:
        raise OptionError(
            f"residual: need depth >= 1 and width >= 1; got depth={depth}, width={width}."
        )
    template = identity(depth, width, dtype=dtype)
    keys = jr.split(key, len(template.arrays()))
    std = scale / jnp.sqrt(depth * width)
    # one draw per stored array (not per layer), so that deep networks are built quickly
    arrays = tuple(a + std * _normal(k, a.shape, a.dtype) for k, a in zip(keys, template.arrays()))
    return template.replace_arrays(*arrays)


def identity(depth: int, width: int, *, dtype=None) -> DLN:
    """The network with every layer the ``width x width`` identity (end-to-end matrix ``I``, balanced)."""
    dtype = _default_dtype(dtype)
    return DLN([jnp.eye(width, dtype=dtype)] * depth)


def fiber_center(
    X: Inexact[Array, "dN d0"], depth: int, widths: Sequence[int] | None = None
) -> DLN:
    """The balanced center ``C`` of the fiber of ``X`` (docs/theory.md §2; §1 of seed 001).

    With ``X = U Sigma V^*`` and ``Lambda = Sigma^(1/N)``: ``W_1 = Lambda V^*``, ``W_k = Lambda`` and
    ``W_N = U Lambda``, so that ``W_N ... W_1 = X``, every ``G_k = 0`` and
    ``||W||^2 = N sum_i sigma_i^(2/N)`` (Theorem 1). For rectangular ``X`` (``d_N x d_0``) the inner
    widths default to ``r = min(d_N, d_0)``; wider inner layers (``widths``, a full tuple
    ``(d_0, ..., d_N)``) are padded with zeros. Inner widths below ``rank X`` are rejected. Singular values of
    ``X`` below ``max(d_N, d_0) eps sigma_1`` (rounding) count as zero: for a rank-deficient ``X`` the centre's
    layers then have exactly rank ``rank X`` (Remark 4 of seed 001; docs/theory.md §12).
    """
    X = jnp.asarray(X)
    if X.ndim != 2:
        raise ShapeError(f"fiber_center: X must be a 2-D matrix; got shape {X.shape}.")
    X = check_finite(X, "fiber_center: X")
    if not jnp.issubdtype(X.dtype, jnp.inexact):
        X = X.astype(float)
    dN, d0 = X.shape
    r = min(dN, d0)
    if depth < 1:
        raise OptionError(f"fiber_center: depth must be >= 1; got {depth}.")
    if widths is None:
        widths = (d0,) + (r,) * (depth - 1) + (dN,)
    widths = _check_widths(widths)
    if len(widths) != depth + 1 or widths[0] != d0 or widths[-1] != dN:
        raise ShapeError(
            f"fiber_center: widths {widths} do not match depth {depth} and X of shape {X.shape}."
        )
    narrowest = min(widths[1:-1], default=r)
    if narrowest < r:
        rank = int(jnp.linalg.matrix_rank(X))
        if narrowest < rank:
            raise ShapeError(
                f"fiber_center: inner width {narrowest} is below rank X = {rank}; the fiber is empty."
            )
    u, s, vh = jnp.linalg.svd(X, full_matrices=False)  # u: (dN, r), vh: (r, d0)
    # Singular values at the rounding level of X (below max(d_N, d_0) eps sigma_1, numpy's matrix_rank cutoff) are
    # zero: otherwise sigma^(1/N) lifts them to ~eps^(1/N) in every layer, a point where dX is onto only
    # numerically and the fiber projections are ill-posed (docs/theory.md §12). Full-rank X is unchanged.
    s = jnp.where(s > max(dN, d0) * jnp.finfo(s.dtype).eps * s[0], s, 0.0)
    lam = s ** (1.0 / depth)
    if depth == 1:
        return DLN([X])

    def block(mat, rows, cols):
        out = jnp.zeros((rows, cols), X.dtype)
        rr, cc = min(rows, mat.shape[0]), min(cols, mat.shape[1])
        return out.at[:rr, :cc].set(mat[:rr, :cc])

    lam_m = jnp.diag(lam).astype(X.dtype)
    layers = [block(lam[:, None] * vh, widths[1], d0)]
    layers += [block(lam_m, widths[k + 1], widths[k]) for k in range(1, depth - 1)]
    layers.append(block(u * lam[None, :], dN, widths[-2]))
    return DLN(layers)


def group_action(A: Sequence[Array] | Array, net: DLN) -> DLN:
    """The action (1.6) of ``GL(d_1) x ... x GL(d_{N-1})`` on W (seed 001), which preserves ``X``:

    ``W_1 -> A_1 W_1``, ``W_k -> A_k W_k A_{k-1}^{-1}``, ``W_N -> W_N A_{N-1}^{-1}``.

    ``A`` is a sequence of the ``N - 1`` invertible matrices ``A_k`` (``d_k x d_k``), or, for
    uniform inner widths, an array of shape ``(N - 1, d, d)``.
    """
    n = net.depth
    if n == 1:
        return net
    m = net.inner_width
    if isinstance(A, (list, tuple)):
        if len(A) != n - 1:
            raise ShapeError(f"group_action: need N - 1 = {n - 1} matrices A_k; got {len(A)}.")
        mats = []
        for k, a in enumerate(A, start=1):
            a = jnp.asarray(a)
            if a.shape != (net.widths[k], net.widths[k]):
                raise ShapeError(
                    f"group_action: A_{k} must have shape {(net.widths[k],) * 2}; got {a.shape}."
                )
            eye = jnp.eye(m, dtype=jnp.result_type(a, net.dtype))
            mats.append(eye.at[: a.shape[0], : a.shape[1]].set(a))  # identity on the padding
        A = jnp.stack(mats)
    A = jnp.asarray(A)
    if A.shape != (n - 1, m, m):
        raise ShapeError(f"group_action: A must have shape {(n - 1, m, m)}; got {A.shape}.")
    A = A.astype(jnp.result_type(A, net.dtype))
    Ainv = jnp.linalg.inv(A)
    first = dot(A[0], net.first)
    inner = dot(dot(A[1:], net.inner), Ainv[:-1])
    last = dot(net.last, Ainv[-1])
    return net.replace_arrays(first, inner, last)


def random_fiber_point(
    key: PRNGKeyArray,
    X: Inexact[Array, "dN d0"],
    depth: int,
    spread: float = 0.5,
    widths: Sequence[int] | None = None,
) -> DLN:
    """A random point ``A . C`` of the fiber of ``X`` (docs/theory.md §2).

    ``C = fiber_center(X, depth, widths)`` and ``A_k = I + spread * Gaussian / sqrt(d_k)``
    (``spread = 0`` gives ``C``; larger spreads go further from balance).
    """
    c = fiber_center(X, depth, widths)
    if depth == 1:
        return c
    keys = jr.split(key, depth - 1)
    A = [
        jnp.eye(d, dtype=c.dtype) + spread * _normal(k, (d, d), c.dtype) / jnp.sqrt(d)
        for k, d in zip(keys, c.widths[1:-1])
    ]
    return group_action(A, c)
