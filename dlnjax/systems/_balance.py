"""Norm-balanced realizations: the minimum of ``||M A M^-1||^2 + ||M B||^2 + ||C M^-1||^2`` over ``M in GL(n)``
(§1.3.1 of Lindsey & Menon, seed 001; Helmke 1993; docs/theory.md §13).

`norm_balancing` runs Newton's method for ``mu(g . x) = 0`` along the regularizing flow (`OrbitL2`): the step
``x <- exp(-h xi) . x`` with ``N(xi) = mu``. Since ``d mu(xi . x) = 2 mu`` (docs/theory.md §13), the full step
``h = 1/2`` removes ``mu`` to first order, and the iteration converges quadratically; far from the balanced
realization the step is damped to ``h = 1/(2 max(1, ||xi||_2))`` (a trust region on the group element).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import lineax as lx
from jaxtyping import Array, Bool, Inexact, Int

from .._errors import OptionError
from .._numerics import dot
from ._moment import DENSE_MAX, moment_map, orbit_solve
from ._system import LinearSystem, act, system_sq_norm

__all__ = ["Balancing", "norm_balancing", "norm_balanced"]


class Balancing(eqx.Module):
    """The result of `norm_balancing`.

    **Attributes:** `system` (the balanced realization ``M . x``), `transform` (``M``), `steps` (Newton steps taken),
    `moment` (``||mu||_F / ||x||^2`` at the end), `success` (``moment <= rtol`` within ``max_steps``, all finite).
    """

    system: LinearSystem
    transform: Inexact[Array, "n n"]
    steps: Int[Array, ""]
    moment: Array
    success: Bool[Array, ""]


def _relative_moment(sys):
    mu = moment_map(sys)
    return jnp.sqrt(jnp.sum(jnp.abs(mu) ** 2)) / system_sq_norm(sys), mu


def norm_balancing(
    sys: LinearSystem,
    *,
    rtol: float | None = None,
    max_steps: int = 100,
    solver: lx.AbstractLinearSolver | None = None,
) -> Balancing:
    """Balance ``sys``: Newton's method on the orbit until ``||mu||_F <= rtol ||x||^2`` (default: 1e3 x machine eps).

    Works under ``jax.jit`` and ``jax.vmap`` (a ``lax.while_loop``; a batch runs until its slowest member is done).
    A realization whose orbit is not closed (e.g. with an uncontrollable mode) has no norm-balanced point: the
    iteration then approaches the closure of the orbit, ``mu -> 0`` only linearly and ``transform`` diverges, so that
    ``success`` may be reported once ``mu`` is below ``rtol`` (check ``steps`` and the condition of ``transform``).
    ``solver``: as for `orbit_solve`; by default the dense Cholesky for ``n <= 20``, above it an inexact Newton step
    (preconditioned CG to relative residual 1e-8; the next step corrects the rest).
    """
    if max_steps < 1:
        raise OptionError(f"norm_balancing: max_steps must be >= 1; got {max_steps}.")
    if rtol is None:
        rtol = 1e3 * jnp.finfo(sys.dtype).eps
    n = sys.n
    eye = jnp.eye(n, dtype=sys.dtype)
    inner = solver
    if (
        solver is None and n > DENSE_MAX
    ):  # inexact Newton: each step solves to 1e-8, the next corrects it
        inner = lx.CG(rtol=1e-8, atol=0.0, max_steps=10 * n * n)

    def cond(state):
        x, M, k, err = state
        return (k < max_steps) & (err > rtol) & jnp.isfinite(err)

    def body(state):
        x, M, k, _ = state
        _, mu = _relative_moment(x)
        xi = orbit_solve(x, mu, inner, throw=False)
        size = jnp.linalg.norm(xi, ord=2)
        h = 0.5 / jnp.maximum(1.0, size)
        G = jsl.expm(-h * xi)
        x = act(G, x)
        err, _ = _relative_moment(x)
        return x, dot(G, M), k + 1, err

    err0, _ = _relative_moment(sys)
    x, M, k, err = jax.lax.while_loop(cond, body, (sys, eye, jnp.array(0), err0))
    return Balancing(system=x, transform=M, steps=k, moment=err, success=err <= rtol)


def norm_balanced(sys: LinearSystem, **kw) -> LinearSystem:
    """The norm-balanced realization of ``sys`` (``mu = 0`` to rounding, same transfer function).

    `norm_balancing` (same keywords) with its ``success`` checked: raises (``eqx.error_if``) if balancing failed.
    """
    out = norm_balancing(sys, **kw)
    return eqx.error_if(out.system, ~out.success, "norm_balanced: balancing did not converge.")
