"""Solvers of the normal system ``(dX dX^*)(lam) = b`` of a fiber, as strategy objects (docs/theory.md §3).

In the style of ``lineax.AbstractLinearSolver``: every solver is an `AbstractFiberSolver` (an Equinox module)
with one method, ``solve(operator, rhs, *, v2=None) -> FiberSolution``, which never raises: the `FiberSolution`
carries the value ``lam``, a result code (`FiberResults`) and statistics. Whether a failure raises is decided by
the caller (the ``throw=`` of `dlnjax.solve_normal` and the fiber projections, as in ``lineax.linear_solve``).

- `FiberCG` (the default, `default_fiber_solver`): preconditioned conjugate gradients on `NormalOperator`, stopped
  on the error of the projection ``dX^*(lam)``; implicit derivatives.
- `FiberLineax`: a matrix-free Lineax solver (``lineax.CG``, also ``lineax.GMRES``, ``lineax.BiCGStab``) on the
  same operator, with the same preconditioner and warm start and Lineax's own stopping rule.
- `FiberDense`: any Lineax solver (``lineax.Cholesky()``, ``lineax.LU()``, ``lineax.SVD()``, ...) on the dense
  ``(d_N d_0) x (d_N d_0)`` matrix of the operator (`NormalOperator.as_matrix`, O(N d^4)).

`as_fiber_solver` turns what a user passes as ``solver=`` into one of these: ``None`` -> `default_fiber_solver`,
an `AbstractFiberSolver` as it is, ``lineax.CG`` -> `FiberLineax`, any other Lineax solver -> `FiberDense`.

Rank-deficient ``X``: ``dX`` is then not onto and ``L`` is singular, but ``dX(V)`` lies in its range, and the
least-squares projection onto ``ker dX`` is still well defined. ``lineax.SVD()`` returns it always (its cutoff
decides what counts as rank-deficient). `FiberCG` (and ``lineax.CG``) return it when ``X`` is exactly
rank-deficient (zero singular values in the layers); when ``X`` is only numerically rank-deficient (singular values
~1e-14 of the largest) the system is ill-posed and CG fails (`FiberResults.inconsistent` or
``not_converged``). ``lineax.Cholesky()`` fails at any rank-deficient ``X``.
"""

from __future__ import annotations

import abc
import functools as ft
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jaxtyping import Array, Bool, Inexact

from ._errors import InputTypeError, OptionError
from ._fiber_operator import BalancedPreconditioner, NormalOperator
from ._numerics import rdot

__all__ = [
    "FiberResults",
    "FiberSolution",
    "AbstractFiberSolver",
    "FiberCG",
    "FiberLineax",
    "FiberDense",
    "default_fiber_solver",
    "as_fiber_solver",
]

_REMEDY = (
    "Is X (numerically) rank-deficient or very ill-conditioned? Pass solver=lineax.SVD() for the least-squares "
    "projection, or raise max_steps."
)


class FiberResults(eqx.Enumeration):
    """Result codes of the fiber solvers (`FiberSolution.result`); ``FiberResults[code]`` is the message."""

    successful = ""
    not_converged = (
        "fiber gradient: the normal-system solve (dX dX^*) lam = dX(V) failed: preconditioned CG did not converge "
        "within max_steps. " + _REMEDY
    )
    inconsistent = (
        "fiber gradient: the normal-system solve (dX dX^*) lam = dX(V) failed: the system is inconsistent (a "
        "residual is left in the directions the preconditioner treats as null: X is numerically but not exactly "
        "rank-deficient, an ill-posed system). " + _REMEDY
    )
    nonfinite = (
        "fiber gradient: the normal-system solve (dX dX^*) lam = dX(V) produced non-finite values (non-finite "
        "weights, or a rank-deficient X: lineax.Cholesky cannot handle that; use lineax.CG or lineax.SVD). "
        + _REMEDY
    )
    lineax_failed = (
        "fiber gradient: the normal-system solve (dX dX^*) lam = dX(V) failed: it did not converge within "
        "max_steps, or the operator is singular for this solver. " + _REMEDY
    )


class FiberSolution(eqx.Module):
    """The result of `AbstractFiberSolver.solve`.

    **Attributes:**

    - `value`: ``lam``, the (approximate) solution of ``L(lam) = rhs``; unspecified where `result` is not
      ``FiberResults.successful``.
    - `result`: a `FiberResults` code.
    - `stats`: solver statistics (``num_steps`` for the iterative solvers).
    - `successful`: ``result == FiberResults.successful`` as a boolean array (``FiberSolution(value, result, stats)``
      computes it; a solver that has the flag at hand passes it: the callers' check then reads the flag, not the
      code, which measured ~30 us faster per solve at d = 8 on XLA:CPU).
    """

    value: Inexact[Array, "dN d0"]
    result: FiberResults
    stats: dict[str, Any]
    successful: Bool[Array, ""]

    def __init__(self, value, result: FiberResults, stats, successful=None):
        self.value, self.result, self.stats = value, result, stats
        self.successful = result == FiberResults.successful if successful is None else successful


def _finite_result(value: Array, ok: Array, failure: FiberResults) -> FiberResults:
    """``failure`` where not ``ok``, else ``nonfinite`` where ``value`` is not finite, else ``successful``."""
    finite = FiberResults.where(
        jnp.all(jnp.isfinite(value)), FiberResults.successful, FiberResults.nonfinite
    )
    return FiberResults.where(ok, finite, failure)


class AbstractFiberSolver(eqx.Module):
    """A solver of the normal system ``L(lam) = (dX dX^*)(lam) = rhs`` of a fiber (docs/theory.md §3).

    Subclasses implement `solve`. Solvers are settings only (no arrays): the operator comes with each solve.
    """

    @abc.abstractmethod
    def solve(
        self, operator: NormalOperator, rhs: Inexact[Array, "dN d0"], *, v2: Array | None = None
    ) -> FiberSolution:
        """Solve ``operator.mv(lam) = rhs``. Never raises on a failed solve: see `FiberSolution.result`.

        ``v2``, if given, is ``||V||^2`` for ``rhs = dX(V)``: the caller wants the projection ``dX^*(lam)`` of
        ``V``, and a solver may stop on the error of that projection (`FiberCG` does). The solution is
        differentiable with respect to ``operator`` and ``rhs``.
        """
        raise NotImplementedError


# --------------------------------------------------------------------------------------------------
# FiberCG: preconditioned CG stopped on the error of the projection
# --------------------------------------------------------------------------------------------------


class FiberCG(AbstractFiberSolver):
    """Preconditioned conjugate gradients for the normal system, stopped on the error of the projection.

    The default solver of `fiber_tangent_projection`, `fiber_normal_projection`, `fiber_l2_gradient`,
    `solve_normal` and the fiber flows (see `default_fiber_solver`). It runs CG matrix-free on
    ``L(lam) = sum_k A_k lam B_k`` (`NormalOperator`), preconditioned by the Jacobi preconditioner of ``L`` in
    the eigenbases of ``sum_k A_k`` and ``sum_k B_k`` (`BalancedPreconditioner`: the exact inverse at a balanced
    point, docs/theory.md §3), from the warm start ``M^{-1} b``.

    **Stopping rule.** CG's preconditioned residual ``gamma_k = <r_k, M^{-1} r_k>`` estimates the squared
    energy-norm error ``<e_k, L e_k> = ||dX^*(e_k)||^2`` of the iterate, which *is* the error of the
    projection ``Pi_N(V) = dX^*(lam)`` (and of ``Pi_T(V) = V - Pi_N(V)``). The estimate is exact up to
    the factor ``1 / lambda_min(M^{-1} L)``: 1 at a balanced point, ``1 + O(||G||)`` near one (where the
    preconditioner is nearly exact), and small in the cases of ``benchmarks/fiber_gradient.py``. CG stops
    at the first iterate with

    ``sqrt(gamma_k) <= max(min(rtol * min(||Pi_T(V)||, ||Pi_N(V)||), atol * ||V||), floor * ||V||)``,

    i.e. both parts of ``V`` to relative accuracy ``rtol``, or the whole to ``atol`` relative to ``||V||``,
    whichever is met first; or when the residual ``||b - L(lam_k)||`` is below ``atol ||b||`` or its own rounding
    level ``4 eps ||L|| ||lam_k||`` (where ``X`` is ill-conditioned, cond ~1e3 and up at depth 64, the energy
    estimate stalls at its rounding floor above the threshold; the projection is then as accurate as float64
    CG makes it). The norms of the parts are estimated along the way, from
    ``||Pi_N(V)||^2 = <lam_k, dX(V)>`` and ``||Pi_T||^2 = ||V||^2 - ||Pi_N||^2``; all down to ``floor``
    (``50 eps``) relative to ``V``, the rounding level of ``V - Pi_N(V)``: at a balanced point
    ``Pi_T(W) = 0``. A solve for a bare right-hand side (``v2=None``: `solve_normal`, and the tangent solves of
    implicit differentiation) stops at ``sqrt(gamma_k) <= atol ||dX^*(lam_k)||``.

    Why not ``lineax.CG``: its stopping test is on the residual of ``lam`` elementwise, which is not the
    quantity the fiber flows need; near balance the rule above saves a step or two (docs/theory.md §3, seed 001
    eq. (1.17); the measured steps and costs are on the docs' performance page, docs/performance.md).

    Every ``stabilise_every`` steps the residual is recomputed from its definition (as in ``lineax.CG``),
    so that the recursively updated one cannot drift. Result codes (`FiberResults`): ``not_converged`` after
    ``max_steps`` steps; ``nonfinite`` on non-finite values (CG stops at the first non-finite residual, so a
    solve on non-finite input costs one step); ``inconsistent`` when a residual is left in the directions the
    preconditioner treats as null (``X`` numerically but not exactly rank-deficient: an ill-posed system; use
    ``lineax.SVD()``).

    Differentiable: the solution is differentiated implicitly (``jax.custom_jvp``; the tangent solve
    ``L(dlam) = db - dL(lam)`` runs through ``jax.lax.custom_linear_solve``, so reverse mode works too).
    The preconditioner, the warm start and the stopping rule do not enter the derivative.
    """

    rtol: float = eqx.field(static=True, default=1e-10)
    atol: float = eqx.field(static=True, default=1e-12)
    max_steps: int = eqx.field(static=True, default=500)
    stabilise_every: int = eqx.field(static=True, default=10)

    def __check_init__(self):
        if not (self.rtol > 0 and self.atol > 0):
            raise OptionError(
                f"FiberCG: rtol and atol must be positive; got {self.rtol}, {self.atol}."
            )
        if self.max_steps < 1 or self.stabilise_every < 1:
            raise OptionError("FiberCG: max_steps and stabilise_every must be at least 1.")

    def solve(self, operator: NormalOperator, rhs, *, v2=None) -> FiberSolution:
        pre = jax.lax.stop_gradient(operator).preconditioner()
        projection = v2 is not None
        v2 = jnp.zeros((), jnp.real(rhs).dtype) if v2 is None else v2
        lam, steps, converged, consistent = _fiber_cg_solve(
            self, projection, operator, rhs, pre, v2
        )
        # the first failure of: finite values, convergence, consistency
        result = FiberResults.where(consistent, FiberResults.successful, FiberResults.inconsistent)
        result = FiberResults.where(converged, result, FiberResults.not_converged)
        finite = jnp.all(jnp.isfinite(lam))
        result = FiberResults.where(finite, result, FiberResults.nonfinite)
        ok = converged & consistent & finite
        return FiberSolution(lam, result, {"num_steps": steps}, ok)

    def _iterate(
        self, op: NormalOperator, b: Array, pre: BalancedPreconditioner, v2, projection: bool
    ):
        """CG on ``op.mv(lam) = b`` from ``M^{-1} b``: ``(lam, steps, converged, consistent)``; see the class
        docstring for the rule (``projection``: the rule of the projection with ``v2 = ||V||^2``, else relative
        to ``||dX^*(lam)||``)."""
        rtol, atol, max_steps, every = self.rtol, self.atol, self.max_steps, self.stabilise_every
        floor = float(50 * jnp.finfo(b.dtype).eps)

        def threshold(y):  # squared: the bound on gamma = <r, M^{-1} r> ~ ||dX^*(error)||^2
            n2 = rdot(y, b)  # ~ ||Pi_N(V)||^2
            if not projection:
                return atol**2 * n2
            return jnp.maximum(
                jnp.minimum(rtol**2 * jnp.minimum(v2 - n2, n2), atol**2 * v2), floor**2 * v2
            )

        bb = rdot(b, b)
        # the rounding level of a computed residual b - L(y): ~ eps ||L|| ||y||
        eps = jnp.finfo(b.dtype).eps
        l_norm = pre.operator_norm()

        def done(s):
            # The energy-norm rule, or the residual at atol ||b|| or at its rounding level 4 eps ||L|| ||y||: where X
            # is ill-conditioned the energy estimate stalls at its rounding floor above the threshold, and the
            # residual rule ends the solve at the accuracy float64 allows. gamma = inf (no residual yet) passes neither.
            y, r, _, g, _ = s
            res_floor = jnp.maximum(atol**2 * bb, (4 * eps * l_norm) ** 2 * rdot(y, y))
            return (g <= threshold(y)) | (jnp.isfinite(g) & (rdot(r, r) <= res_floor))

        def go_on(s):  # neither converged nor broken down (gamma nan: non-finite input or iterates)
            return ~done(s) & ~jnp.isnan(s[3]) & (s[-1] < max_steps)

        def step(s):
            y, r, p, g, k = s
            lp = op.mv(p)
            alpha = g / rdot(p, lp)
            y = y + alpha * p
            r = r - alpha * lp
            z = pre.mv(r)
            g_new = rdot(r, z)
            return y, r, z + (g_new / g) * p, g_new, k + 1

        def restart(s):
            # The residual from its definition (residual replacement: the direction p is kept; at the start, p = z).
            y, _, p, g, k = s
            r = b - op.mv(y)
            z = pre.mv(r)
            return y, r, jnp.where(jnp.isinf(g), z, p), rdot(r, z), k

        def inner(s):
            k0 = s[-1]
            s = restart(s)
            return jax.lax.while_loop(lambda s: go_on(s) & (s[-1] < k0 + every), step, s)

        y0 = pre.mv(b)  # the solution at a balanced point
        inf = jnp.asarray(jnp.inf, dtype=jnp.real(b).dtype)
        zero = jnp.zeros_like(b)
        # state: (y, r, p, gamma, steps); gamma = inf until the first residual
        s = (y0, zero, zero, inf, jnp.asarray(0))
        s = jax.lax.while_loop(go_on, inner, s)
        y, r, _, _, k = s
        # A residual in the directions the preconditioner leaves alone (inv = 0: null directions of L when X is
        # exactly rank-deficient) means an inconsistent, ill-posed system: X only numerically rank-deficient.
        null2 = jnp.sum(jnp.where(pre.inv == 0, jnp.abs(pre.coordinates(r)) ** 2, 0))
        consistent = null2 <= (1e3 * floor) ** 2 * rdot(b, b)
        return y, k, done(s), consistent


def _float0(x):
    return np.zeros(jnp.shape(x), dtype=jax.dtypes.float0)


@ft.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _fiber_cg_solve(solver: FiberCG, projection: bool, op, b, pre, v2):
    return solver._iterate(op, b, pre, v2, projection)


@_fiber_cg_solve.defjvp
def _fiber_cg_solve_jvp(solver, projection, primals, tangents):
    # Implicit differentiation: L(dlam) = db - dL(lam), solved by the same CG (relative rule) inside
    # custom_linear_solve, whose transpose rule gives reverse mode. L^T = conj L conj (A_k, B_k Hermitian).
    op, b, pre, v2 = primals
    dop, db, _, _ = tangents
    out = _fiber_cg_solve(solver, projection, *primals)
    lam = out[0]
    rhs = db - jax.jvp(lambda o: o.mv(lam), (op,), (dop,))[1]

    def solve(_, c):
        return solver._iterate(op, c, pre, None, False)[0]

    if jnp.iscomplexobj(b):
        dlam = jax.lax.custom_linear_solve(
            op.mv, rhs, solve, lambda _, c: jnp.conj(solve(None, jnp.conj(c)))
        )
    else:
        dlam = jax.lax.custom_linear_solve(op.mv, rhs, solve, symmetric=True)
    return out, (dlam, *(_float0(x) for x in out[1:]))


# --------------------------------------------------------------------------------------------------
# Lineax adapters
# --------------------------------------------------------------------------------------------------


def _lineax_solution(value: Array, sol: lx.Solution) -> FiberSolution:
    ok = sol.result == lx.RESULTS.successful
    result = _finite_result(value, ok, FiberResults.lineax_failed)
    return FiberSolution(value, result, sol.stats, ok & jnp.all(jnp.isfinite(value)))


class _LineaxBacked(AbstractFiberSolver):
    """A fiber solver that delegates to a Lineax solver ``solver`` (checked to be one)."""

    solver: lx.AbstractLinearSolver

    def __check_init__(self):
        if not isinstance(self.solver, lx.AbstractLinearSolver):
            raise InputTypeError(
                f"{type(self).__name__}: solver must be a Lineax solver; got {type(self.solver).__name__}."
            )


class FiberLineax(_LineaxBacked):
    """A matrix-free Lineax solver on the normal operator, with the preconditioner and warm start of `FiberCG`.

    ``solver``: ``lineax.CG`` (what a ``solver=lineax.CG(...)`` becomes), or another Lineax solver that takes
    ``options={"preconditioner", "y0"}`` (``lineax.GMRES``, ``lineax.BiCGStab``). The right-hand side is scaled
    to max-norm one (so that the solver's tolerances are relative), the preconditioner is `BalancedPreconditioner`
    and the warm start ``y0 = M^{-1} b`` (the exact solution at a balanced point: it saves one CG step; see
    docs/performance.md). Lineax's own stopping rule (on
    the residual of ``lam``) needs a step or two more than `FiberCG` for the same accuracy of the projection.
    Differentiated implicitly by Lineax; the preconditioner and warm start do not enter the derivative.
    """

    solver: lx.AbstractLinearSolver

    def solve(self, operator: NormalOperator, rhs, *, v2=None) -> FiberSolution:
        scale = jnp.max(jnp.abs(rhs))
        scale = jnp.where(scale > 0, scale, 1.0)
        b = rhs / scale
        pre = jax.lax.stop_gradient(operator).preconditioner()
        y0 = jax.lax.stop_gradient(pre.mv(b))
        sol = lx.linear_solve(
            operator.as_lineax(),
            b,
            self.solver,
            options={"preconditioner": pre.as_lineax(), "y0": y0},
            throw=False,
        )
        return _lineax_solution(sol.value * scale, sol)


class FiberDense(_LineaxBacked):
    """Any Lineax solver on the dense ``(d_N d_0) x (d_N d_0)`` matrix ``sum_k A_k (x) B_k^T`` of the normal
    operator (`NormalOperator.as_matrix`, built in O(N d^4); tagged positive semidefinite).

    ``solver``: e.g. ``lineax.Cholesky()`` (fails at rank-deficient ``X``), ``lineax.LU()``, ``lineax.SVD()`` (the
    least-squares solution, so the least-squares projection at rank-deficient ``X``). Differentiated by Lineax.
    """

    solver: lx.AbstractLinearSolver

    def solve(self, operator: NormalOperator, rhs, *, v2=None) -> FiberSolution:
        matrix = lx.MatrixLinearOperator(operator.as_matrix(), lx.positive_semidefinite_tag)
        sol = lx.linear_solve(matrix, rhs.reshape(-1), self.solver, throw=False)
        return _lineax_solution(sol.value.reshape(rhs.shape), sol)


def default_fiber_solver(dtype) -> FiberCG:
    """`FiberCG` with tolerances suited to ``dtype``: ``rtol = 1e-10``, ``atol = 1e-12`` in double precision,
    ``1e-4`` and ``1e-5`` in single precision."""
    if jnp.finfo(dtype).bits == 64:
        return FiberCG(rtol=1e-10, atol=1e-12)
    return FiberCG(rtol=1e-4, atol=1e-5)


def as_fiber_solver(
    solver: AbstractFiberSolver | lx.AbstractLinearSolver | None, dtype
) -> AbstractFiberSolver:
    """The `AbstractFiberSolver` for a ``solver=`` argument: ``None`` -> `default_fiber_solver` (``dtype``), a fiber
    solver as it is, ``lineax.CG`` -> `FiberLineax`, any other Lineax solver -> `FiberDense`."""
    if solver is None:
        return default_fiber_solver(dtype)
    if isinstance(solver, AbstractFiberSolver):
        return solver
    return (FiberLineax if isinstance(solver, lx.CG) else FiberDense)(solver)
