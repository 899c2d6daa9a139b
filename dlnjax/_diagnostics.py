"""Diagnostics of a trained network: sharpness, ranks, layer balance and alignment (docs/theory.md §6-7).

- `sharpness`: the largest Hessian eigenvalue of ``W -> E(W)`` (seed 004, Marion & Chizat), by Lanczos
  (`dlnjax._lanczos`) on Hessian-vector products.
- `sharpness_bounds`, `regression_constants`: seed 004's lower bound on the sharpness of every
  minimizer and upper bound at the gradient-flow minimizer from small initialization (univariate regression).
- `layer_norms`, `layer_norm_differences`, `neuron_balance`: the quantities that gradient flow conserves
  on homogeneous networks (seed 002, Du, Hu & Lee, Theorems 2.1-2.2).
- `alignment`, `rank_one_ratio`, `distance_to_minimizer`: the structure of the minimizer found from
  small initialization (seed 004: nearly rank-one layers with aligned singular vectors).
- `effective_rank`, `numerical_rank`: ranks of an end-to-end matrix (Roy & Vetterli 2007; Arora et al. 2019).

Everything is a pure function of arrays and networks: ``jax.jit`` and ``jax.vmap`` apply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Inexact, PRNGKeyArray

from ._errors import InputTypeError, OptionError, ShapeError, UnsupportedError
from ._geometry import network_loss
from ._lanczos import lanczos_top
from ._network import DLN, end_to_end
from ._numerics import dot, rdot, sqabs

__all__ = [
    "sharpness",
    "RegressionConstants",
    "regression_constants",
    "sharpness_bounds",
    "effective_rank",
    "numerical_rank",
    "layer_norms",
    "layer_norm_differences",
    "neuron_balance",
    "alignment",
    "rank_one_ratio",
    "distance_to_minimizer",
]


# --------------------------------------------------------------------------------------------------
# Sharpness (seed 004)
# --------------------------------------------------------------------------------------------------


def _check_loss_shape(loss, net: DLN, what: str) -> None:
    shape = getattr(loss, "shape", None)
    if (
        isinstance(shape, tuple)
        and len(shape) == 2
        and tuple(shape) != (net.widths[-1], net.widths[0])
    ):
        raise ShapeError(
            f"{what}: the loss expects an end-to-end matrix of shape {tuple(shape)} (d_N, d_0) but the network "
            f"maps {net.widths[0]} -> {net.widths[-1]} (shape ({net.widths[-1]}, {net.widths[0]}))."
        )


def sharpness(
    loss: Callable,
    net: DLN,
    *,
    iterations: int = 40,
    key: PRNGKeyArray | None = None,
    return_error: bool = False,
    mask: DLN | None = None,
) -> Float[Array, ""] | tuple[Float[Array, ""], Float[Array, ""]]:
    """The sharpness: the largest eigenvalue of the Hessian of ``W -> E(W)`` over all layers (docs/theory.md §7; seed 004).

    ``E(W)`` is `dlnjax.network_loss` (``loss(X(W))`` for a linear network, the data loss of the
    network function for a nonlinear one), differentiated in the real coordinates of all weights.
    The eigenvalue is the largest *algebraic* one (at a non-minimizer the Hessian may be indefinite).

    Computed matrix-free by the Lanczos method with full reorthogonalization, on Hessian-vector
    products (``jax.jvp`` of ``jax.grad``), for a fixed number of steps ``min(iterations, p)``
    (``p`` the number of weights), so it is jit- and vmap-friendly: ``jax.vmap(lambda n:
    sharpness(loss, n))(batch)`` works. Zero padding of non-uniform inner widths is excluded (the
    iteration runs in the subspace of live weights). An invariant Krylov subspace (e.g. a low-rank
    Hessian, or ``iterations >= p``) is handled by restarting with a fresh orthogonal vector, never NaN.
    Each step costs one Hessian-vector product and ``O(iterations * p)`` for the reorthogonalization.

    With ``mask`` (a `DLN` of the widths of ``net``, entries 0 or 1, possibly traced) the Hessian is restricted
    to the entries where it is 1: the largest eigenvalue of ``M H M`` on that subspace, the sharpness of the
    loss as a function of those entries alone (the others held fixed). For ``(padded, live) = dlnjax.pad(net,
    ...)``, ``sharpness(loss, padded, mask=live)`` is the sharpness of ``net`` (same ``iterations``; equal to
    round-off once converged). The Krylov dimension stays ``min(iterations, p)`` (``p`` counts the weights,
    not the mask); steps beyond the dimension of the masked space add nothing (never NaN, never a spurious
    eigenvalue).

    **Arguments:**

    - `loss`: a loss ``X -> real scalar`` (see `dlnjax.network_loss`).
    - `net`: a `DLN` with real weights.
    - `iterations`: the number of Lanczos steps (the Krylov dimension).
    - `key`: PRNG key of the start vector; ``None`` gives a fixed deterministic start.
    - `return_error`: also return the Lanczos residual bound ``|beta_k s_k|`` of the top Ritz pair: some
      Hessian eigenvalue lies within it of the returned value (with exact arithmetic); small once converged.
    - `mask`: an optional 0/1 `DLN` shaped like ``net``: restrict the Hessian to the entries where it is 1.

    **Returns:** the sharpness (a real scalar), or ``(sharpness, error)`` with `return_error`.
    """
    iterations = _check_sharpness_args(loss, net, iterations, mask)
    flat, unravel = ravel_pytree(net.arrays())
    dtype = flat.dtype
    live = ravel_pytree(net.mask().arrays())[0]  # excludes the zero padding of non-uniform widths
    if mask is not None:
        live = live * jnp.real(ravel_pytree(mask.arrays())[0]).astype(dtype)
    d = net.widths
    # the number of live weights (static; an upper bound under a mask)
    p = sum(d[k] * d[k + 1] for k in range(net.depth))
    k = min(iterations, p)
    grad = jax.grad(lambda arrays: network_loss(loss, net.replace_arrays(*arrays)))

    def hvp(v):
        # The Hessian restricted to the live weights, M H M (M the 0/1 mask): the padding-padding block
        # of H is not zero in general (a padded row of W_k times a padded column of W_{k+1}).
        _, hv = jax.jvp(grad, (net.arrays(),), (unravel(v * live),))
        return ravel_pytree(hv)[0] * live

    # Row 0: the start vector; row j + 1: the restart vector after a breakdown at step j (a fixed key when
    # none is given).
    fresh = jr.normal(jr.PRNGKey(0) if key is None else key, (k + 1, flat.size), dtype) * live
    top, error = lanczos_top(hvp, fresh)
    return (top, error) if return_error else top


def _check_sharpness_args(loss, net, iterations, mask) -> int:
    if not isinstance(net, DLN):
        raise InputTypeError(f"sharpness: net must be a dlnjax.DLN; got {type(net).__name__}.")
    if jnp.iscomplexobj(net.first):
        raise UnsupportedError(
            "sharpness: the Hessian is defined here for real weights only; got a complex network "
            f"({net.dtype}). Use a real network (or split real and imaginary parts yourself)."
        )
    if net.first.ndim != 2:
        raise ShapeError(
            f"sharpness: takes one network; got a batch (arrays with leading axes {net.first.shape[:-2]}). "
            "Map over the batch with jax.vmap(lambda n: sharpness(loss, n))(batch)."
        )
    iterations = int(iterations)
    if iterations < 1:
        raise OptionError(f"sharpness: iterations must be >= 1; got {iterations}.")
    _check_loss_shape(loss, net, "sharpness")
    if mask is not None:
        if not isinstance(mask, DLN):
            raise InputTypeError(
                f"sharpness: mask must be a dlnjax.DLN of 0/1 entries (or None); got {type(mask).__name__}."
            )
        shapes = lambda n: [a.shape for a in n.arrays()]
        if mask.widths != net.widths or shapes(mask) != shapes(net):
            raise ShapeError(
                f"sharpness: mask must have the widths and array shapes of net ({net.widths}); got widths "
                f"{mask.widths} and shapes {shapes(mask)}."
            )
    return iterations


class RegressionConstants(NamedTuple):
    """The data constants of univariate regression in seed 004 (see `regression_constants`)."""

    a: Float[Array, ""]
    Lambda: Float[Array, ""]
    w_norm: Float[Array, ""]


def regression_constants(loss) -> RegressionConstants:
    """Seed 004's constants of univariate least-squares regression (docs/theory.md §7).

    With ``Sigma = X^T X / n`` (`Regression.covariance`) and ``w*`` the least-squares solution
    (`Regression.least_squares`, shape ``(1, d)``):

    - ``a = w*^T Sigma w* / ||w*||^2``, the Rayleigh quotient of ``Sigma`` along ``w*`` (seed 004 normalizes
      ``||w*|| = 1``; here ``w*`` is normalized before the quotient);
    - ``Lambda = lambda_max(Sigma)``;
    - ``w_norm = ||w*||``, which sets the scale of every sharpness (see `sharpness_bounds`).

    The seed assumes the overdetermined case (``Sigma`` positive definite), where ``w*`` is the unique minimizer.
    """
    if not (hasattr(loss, "covariance") and hasattr(loss, "least_squares")):
        raise InputTypeError(
            f"regression_constants: need a regression loss (dlnjax.losses.Regression); got {type(loss).__name__}."
        )
    if tuple(loss.shape)[0] != 1:
        raise UnsupportedError(
            f"regression_constants: seed 004's bounds are for univariate regression (d_N = 1); the targets have "
            f"d_N = {loss.shape[0]}."
        )
    sigma = loss.covariance()
    w = loss.least_squares()[0]
    w_norm = jnp.linalg.norm(w)
    u = w / jnp.where(w_norm > 0, w_norm, 1.0)
    a = rdot(u, dot(sigma, u))
    Lambda = jnp.linalg.eigvalsh(sigma)[-1]
    return RegressionConstants(a=a, Lambda=Lambda, w_norm=w_norm)


def sharpness_bounds(loss, depth: int) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Seed 004's bounds ``(2 N a, 8 N Lambda)`` on the sharpness of a depth-``N`` linear regression network.

    For ``E = (1/n) sum_i (y_i - W_N ... W_1 x_i)^2`` (`dlnjax.losses.Regression`, no ½) and the constants of
    `regression_constants`:

    - every minimizer has sharpness ``>= 2 N a ||w*||^(2 - 2/N)`` (lower bound; docs/theory.md §7);
    - gradient flow from a small-scale initialization ends at sharpness ``<= 8 N Lambda ||w*||^(2 - 2/N)``
      (upper bound, in the limit of vanishing initialization scale).

    Seed 004 states these with ``||w*|| = 1``. The factor ``||w*||^(2 - 2/N)`` restores the general
    case: scaling the targets by ``c`` scales the minimizers' layers by ``c^(1/N)`` and the Hessian there by
    ``c^(2 - 2/N)`` (a direct computation: at the balanced rank-one minimizer of a one-dimensional input the
    sharpness is exactly ``2 N a ||w*||^(2 - 2/N)``). Without it the printed bounds fail whenever ``||w*|| != 1``.

    **Returns:** ``(lower, upper)``.
    """
    depth = int(depth)
    if depth < 1:
        raise OptionError(f"sharpness_bounds: depth must be >= 1; got {depth}.")
    c = regression_constants(loss)
    scale = c.w_norm ** (2.0 - 2.0 / depth)
    return 2 * depth * c.a * scale, 8 * depth * c.Lambda * scale


# --------------------------------------------------------------------------------------------------
# Ranks of a matrix
# --------------------------------------------------------------------------------------------------


def effective_rank(X: Inexact[Array, "*batch m n"]) -> Float[Array, "*batch"]:
    """The entropy effective rank ``exp(H(p))``, ``p_i = s_i / sum_j s_j`` (Roy & Vetterli 2007; Arora et al. 2019).

    ``s`` are the singular values of ``X`` and ``H(p) = -sum_i p_i log p_i`` (with ``0 log 0 = 0``).
    Lies in ``[1, rank X]``; equals ``r`` for a rank-``r`` matrix with equal nonzero singular values.
    Defined as ``0`` at ``X = 0`` (no NaN). Leading batch axes allowed.
    """
    X = jnp.asarray(X)
    if X.ndim < 2:
        raise ShapeError(
            f"effective_rank: X must be a matrix (or a batch of them); got shape {X.shape}."
        )
    s = jnp.linalg.svd(X, compute_uv=False)
    total = jnp.sum(s, axis=-1, keepdims=True)
    nonzero = total > 0
    p = s / jnp.where(nonzero, total, 1.0)
    plogp = jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)
    return jnp.where(nonzero[..., 0], jnp.exp(-jnp.sum(plogp, axis=-1)), 0.0)


def numerical_rank(X: Inexact[Array, "*batch m n"], rtol: float | None = None) -> Array:
    """The number of singular values ``s_i > rtol * s_max`` (``0`` at ``X = 0``).

    ``rtol`` defaults to ``max(m, n) * eps`` of the dtype (the convention of ``numpy.linalg.matrix_rank``).
    Leading batch axes allowed.
    """
    X = jnp.asarray(X)
    if X.ndim < 2:
        raise ShapeError(
            f"numerical_rank: X must be a matrix (or a batch of them); got shape {X.shape}."
        )
    s = jnp.linalg.svd(X, compute_uv=False)
    if rtol is None:
        rtol = max(X.shape[-2:]) * jnp.finfo(s.dtype).eps
    smax = jnp.max(s, axis=-1, keepdims=True)
    return jnp.sum((s > rtol * smax) & (s > 0), axis=-1)


# --------------------------------------------------------------------------------------------------
# Layer balance (seed 002)
# --------------------------------------------------------------------------------------------------


def layer_norms(net: DLN) -> Float[Array, "*batch N"]:
    """The squared Frobenius norms ``||W_k||_F^2``, ``k = 1..N`` (seed 002). Batched networks allowed."""
    norms = [jnp.sum(sqabs(net.first), axis=(-2, -1))[..., None]]
    if net.depth > 1:
        norms += [
            jnp.sum(sqabs(net.inner), axis=(-2, -1)),
            jnp.sum(sqabs(net.last), axis=(-2, -1))[..., None],
        ]
    return jnp.concatenate(norms, axis=-1)


def layer_norm_differences(net: DLN) -> Float[Array, "*batch N-1"]:
    """``||W_{k+1}||_F^2 - ||W_k||_F^2``, ``k = 1..N-1``: conserved by gradient flow (Theorem 2.1 of seed 002).

    Holds for every loss of the network function ``W_N phi(... phi(W_1 x))`` with ``phi`` positively
    homogeneous (ReLU, leaky ReLU, identity; docs/theory.md §6). Equals ``-Tr G_k`` (docs/theory.md §2).
    Gradient descent with step ``eta`` changes it by ``O(eta^2)`` per step.
    """
    n = layer_norms(net)
    return n[..., 1:] - n[..., :-1]


def neuron_balance(net: DLN) -> Float[Array, "*batch N-1 m"]:
    """``||row i of W_k||^2 - ||column i of W_{k+1}||^2`` for each hidden layer ``k = 1..N-1`` and neuron ``i``.

    The neuron-wise conserved quantities of gradient flow on homogeneous networks (Theorem 2.2 of seed 002;
    docs/theory.md §6): the diagonal of the moment ``G_k``, so ``neuron_balance(net)[k].sum() = Tr G_k =
    -layer_norm_differences(net)[k]`` (note the opposite sign conventions, both those of seed 002).
    Stacked with shape ``(N-1, m)``, ``m`` the padded inner width; zero on the padding. Depth one: ``(0, d_1)``.
    """
    if net.depth == 1:
        return jnp.zeros(net.first.shape[:-2] + (0, net.widths[1]), jnp.real(net.first).dtype)
    rows = jnp.concatenate(
        [jnp.sum(sqabs(net.first), axis=-1)[..., None, :], jnp.sum(sqabs(net.inner), axis=-1)],
        axis=-2,
    )
    cols = jnp.concatenate(
        [jnp.sum(sqabs(net.inner), axis=-2), jnp.sum(sqabs(net.last), axis=-2)[..., None, :]],
        axis=-2,
    )
    return rows - cols


# --------------------------------------------------------------------------------------------------
# Structure of the minimizer from small initialization (seed 004)
# --------------------------------------------------------------------------------------------------


def alignment(net: DLN) -> Float[Array, "*batch N-1"]:
    """``|<u_1(W_k), v_1(W_{k+1})>|``, ``k = 1..N-1``: alignment of consecutive layers (seed 004).

    ``u_1(W_k)`` is the top left singular vector of ``W_k`` and ``v_1(W_{k+1})`` the top right singular
    vector of ``W_{k+1}`` (both in ``F^{d_k}``). Invariant under the sign (phase) of singular vectors; 1 iff
    they are parallel. Gradient flow from small initialization yields values near 1 (seed 004). Only
    meaningful where the top singular values are simple and nonzero. Depth one: shape ``(0,)``.
    """
    if net.depth == 1:
        return jnp.zeros(net.first.shape[:-2] + (0,), jnp.real(net.first).dtype)
    u_first = jnp.linalg.svd(net.first, full_matrices=False)[0][..., :, 0]
    u_inner, _, vh_inner = jnp.linalg.svd(net.inner, full_matrices=False)
    vh_last = jnp.linalg.svd(net.last, full_matrices=False)[2][..., 0, :]
    u = jnp.concatenate(
        [u_first[..., None, :], u_inner[..., :, :, 0]], axis=-2
    )  # u_1(W_k), k = 1..N-1
    v = jnp.concatenate(
        [jnp.conj(vh_inner[..., 0, :]), jnp.conj(vh_last)[..., None, :]], axis=-2
    )  # v_1(W_{k+1})
    return jnp.abs(jnp.sum(jnp.conj(u) * v, axis=-1))


def rank_one_ratio(net: DLN) -> Float[Array, "*batch N"]:
    """``sigma_1(W_k)^2 / ||W_k||_F^2``, ``k = 1..N``: 1 iff ``W_k`` has rank one (seed 004).

    At least ``1 / rank W_k`` for a nonzero layer; defined as 0 for a zero layer.
    """

    def ratio(a):
        s = jnp.linalg.svd(a, compute_uv=False)
        total = jnp.sum(s**2, axis=-1)
        return jnp.where(total > 0, s[..., 0] ** 2 / jnp.where(total > 0, total, 1.0), 0.0)

    out = [ratio(net.first)[..., None]]
    if net.depth > 1:
        out += [ratio(net.inner), ratio(net.last)[..., None]]
    return jnp.concatenate(out, axis=-1)


def distance_to_minimizer(net: DLN, X_star: Inexact[Array, "dN d0"]) -> Float[Array, ""]:
    """``||X(W) - X_star||_F``: the distance of the end-to-end matrix to a target, e.g. seed 004's ``w*``
    (`dlnjax.losses.Regression.least_squares`). Linear networks only."""
    X_star = jnp.asarray(X_star)
    shape = (net.widths[-1], net.widths[0])
    if X_star.shape != shape:
        raise ShapeError(
            f"distance_to_minimizer: X_star must have shape {shape} (d_N, d_0); got {X_star.shape}."
        )
    diff = end_to_end(net) - X_star
    return jnp.sqrt(jnp.sum(sqabs(diff)))
