"""Model reduction: square-root balanced truncation, truncation of a norm-balanced realization, and the H2 / H-infinity
errors that compare them (docs/theory.md §13).

Balanced truncation keeps the ``r`` states of largest Hankel singular value ``sigma_i``; the reduced system is
stable and ``||H - H_r||_oo <= 2 sum_{i > r} sigma_i`` (Glover 1984; Enns 1984). The square-root form: with
``P = L_P L_P^*``, ``Q = L_Q L_Q^*`` and the SVD ``L_Q^* L_P = U Sigma V^*``, the projections are
``T_l = Sigma_r^-1/2 U_r^* L_Q^*`` and ``T_r = L_P V_r Sigma_r^-1/2`` and ``(A_r, B_r, C_r) = (T_l A T_r, T_l B, C T_r)``.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from .._errors import OptionError
from .._numerics import ct, dot
from ._balance import norm_balancing
from ._gramians import gramian_factors
from ._system import LinearSystem, transfer_function

__all__ = [
    "Truncation",
    "balanced_truncation",
    "norm_balanced_truncation",
    "truncate",
    "difference",
    "hinf_norm",
]


class Truncation(eqx.Module):
    """A reduced system and what it was selected by.

    **Attributes:** `system` (order ``r``), `weights` (the state weights it was ordered by, decreasing: the Hankel
    singular values for `balanced_truncation`), `error_bound` (``2 sum_{i > r} sigma_i`` for `balanced_truncation`;
    ``nan`` where no bound is known), `success` (the steps before succeeded).
    """

    system: LinearSystem
    weights: Array
    error_bound: Array
    success: Array


def _check_order(sys: LinearSystem, order) -> None:
    if not isinstance(order, int) or not 1 <= order <= sys.n:
        raise OptionError(f"the order must be an int in 1..{sys.n}; got {order!r}.")


def truncate(sys: LinearSystem, order: int) -> LinearSystem:
    """Keep the first ``order`` states: ``(A[:r, :r], B[:r], C[:, :r])``."""
    _check_order(sys, order)
    return LinearSystem(sys.A[:order, :order], sys.B[:order], sys.C[:, :order])


def balanced_truncation(sys: LinearSystem, order: int) -> Truncation:
    """Square-root balanced truncation of a stable ``sys`` to ``order`` states, with its H-infinity error bound.

    ``order = n`` gives the Gramian-balanced realization (``P = Q = diag(sigma)``). Gramians by `lyapunov`.
    """
    _check_order(sys, order)
    Lp, Lq = gramian_factors(sys)
    U, s, Vh = jnp.linalg.svd(dot(ct(Lq), Lp))
    r = order
    scale = (1.0 / jnp.sqrt(s[:r])).astype(U.dtype)
    left = scale[:, None] * dot(ct(U[:, :r]), ct(Lq))
    right = dot(Lp, ct(Vh[:r])) * scale[None, :]
    red = LinearSystem(dot(dot(left, sys.A), right), dot(left, sys.B), dot(sys.C, right))
    bound = 2 * jnp.sum(s[r:])
    ok = jnp.all(jnp.isfinite(red.A)) & (s[r - 1] > 0)
    return Truncation(system=red, weights=s, error_bound=bound, success=ok)


def norm_balanced_truncation(sys: LinearSystem, order: int, **kw) -> Truncation:
    """Truncation of the norm-balanced realization (`norm_balancing`, keywords passed on).

    The norm-balanced realization is unique up to a unitary ``U``; we choose ``U`` to diagonalize
    ``S = (B B^* + C^* C) / 2`` (decreasing) and keep the ``order`` states of largest weight ``sqrt(lambda_i(S))``.
    For ``A = 0`` (a depth-two network; discrete time) ``S = B B^* = C^* C`` at the balanced point and these weights are
    the singular values of ``B``, the square roots of those of ``C B``. No error bound is known (``nan``), and the
    reduced system need not be stable.
    """
    _check_order(sys, order)
    bal = norm_balancing(sys, **kw)
    x = bal.system
    S = (dot(x.B, ct(x.B)) + dot(ct(x.C), x.C)) / 2
    w, U = jnp.linalg.eigh(S)
    w, U = w[::-1], U[:, ::-1]
    rot = LinearSystem(dot(dot(ct(U), x.A), U), dot(ct(U), x.B), dot(x.C, U))
    return Truncation(
        system=truncate(rot, order),
        weights=jnp.sqrt(jnp.maximum(w, 0.0)),
        error_bound=jnp.array(jnp.nan, dtype=w.dtype),
        success=bal.success,
    )


def difference(sys1: LinearSystem, sys2: LinearSystem) -> LinearSystem:
    """A realization of ``H_1 - H_2``: ``(diag(A_1, A_2), [B_1; B_2], [C_1, -C_2])``."""
    A = jax.scipy.linalg.block_diag(sys1.A, sys2.A)
    B = jnp.concatenate([sys1.B, sys2.B], axis=-2)
    C = jnp.concatenate([sys1.C, -sys2.C], axis=-1)
    return LinearSystem(A, B, C)


def hinf_norm(sys: LinearSystem, *, n_grid: int = 400, refine: int = 4) -> Array:
    """``||H||_oo = sup_w sigma_max(H(i w))`` of a stable ``sys``, on a frequency grid refined around its maximum.

    The grid: ``w = 0`` and ``n_grid`` log-spaced frequencies over seven decades around ``||A||_F``; then ``refine``
    rounds of 64 points between the neighbours of the current best. A lower estimate, exact up to the resolution
    of the refined grid (relative error below 1e-8 on the random systems of ``tests/test_systems_gramians.py``,
    against SLICOT's AB13DD through python-control); jit- and vmap-able.
    """
    s = jnp.sqrt(jnp.sum(jnp.abs(sys.A) ** 2)) + 1.0
    grid = jnp.concatenate([jnp.zeros(1), s * jnp.logspace(-5.0, 2.0, n_grid)])
    gain = lambda w: jnp.linalg.svd(transfer_function(sys, 1j * w), compute_uv=False)[..., 0]
    values = gain(grid)
    best = jnp.max(values)
    for _ in range(refine):
        i = jnp.argmax(values)
        lo = grid[jnp.maximum(i - 1, 0)]
        hi = grid[jnp.minimum(i + 1, grid.shape[0] - 1)]
        grid = jnp.linspace(lo, hi, 64)
        values = gain(grid)
        best = jnp.maximum(best, jnp.max(values))
    return best
