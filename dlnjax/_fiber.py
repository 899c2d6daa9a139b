"""Projections onto the tangent and normal spaces of a fiber: the "fiber gradient" (docs/theory.md §3).

``Pi_T(V) = V - dX^*(lam)`` with ``(dX dX^*)(lam) = dX(V)``, and ``Pi_N(V) = dX^*(lam)``. The normal operator
``L(lam) = sum_k A_k lam B_k`` (``A_k = P_k P_k^*``, ``B_k = Q_k^* Q_k``) acts on ``d_N x d_0`` matrices and is
Hermitian positive definite when ``dX`` is onto.

One path for every solver: the partial products are built once (`FiberProducts`, ``dlnjax/_fiber_operator.py``),
the right-hand side ``dX(V)`` and the projection ``dX^*(lam)`` are read from them, and the normal system is solved
by a strategy object (`AbstractFiberSolver`, ``dlnjax/_fiber_solvers.py``) on `NormalOperator`:

- the default `FiberCG` (`default_fiber_solver`): conjugate gradients run matrix-free on ``L``, preconditioned
  by `BalancedPreconditioner` (the Jacobi preconditioner of ``L`` in the eigenbases of ``sum_k A_k`` and
  ``sum_k B_k``; at a balanced point these bases are the singular bases of ``X`` and ``L`` is exactly diagonal in
  them, with the multipliers ``a_ij = sum_m sigma_i^(2(m-1)/N) sigma_j^(2(N-m)/N)`` of docs/theory.md §3, so the
  preconditioner is the exact inverse and CG converges in one step; nearby it needs a few), stopped on the error of
  the projection itself;
- ``solver=lineax.CG(...)`` (`FiberLineax`): the same preconditioner and warm start, with Lineax's own stopping
  rule (on the residual of ``lam``; it needs a step or two more than `FiberCG` for the same accuracy);
- any other Lineax solver (``lineax.Cholesky()``, ``lineax.LU()``, ``lineax.SVD()``, ...; `FiberDense`): the
  dense ``(d_N d_0) x (d_N d_0)`` matrix ``sum_k A_k (x) B_k^T``, built in O(N d^4).

Rank-deficient ``X``: ``dX`` is then not onto and ``L`` is singular, but ``dX(V)`` lies in its range.
The projection onto ``ker dX`` is still well defined: the least-squares projection. ``lineax.SVD()``
returns it always (its cutoff decides what counts as rank-deficient). The default `FiberCG` (and ``lineax.CG``)
returns it when ``X`` is exactly rank-deficient (zero singular values in the layers); when ``X`` is only
numerically rank-deficient (singular values ~1e-14 of the largest) the system is ill-posed and CG fails, naming
``lineax.SVD()`` as the remedy. ``lineax.Cholesky()`` fails at any rank-deficient ``X``.

**Failures: ``throw=``** (as in ``lineax.linear_solve``). A solve that does not converge, is inconsistent or
produces non-finite values (`FiberResults`) raises at run time with ``throw=True`` (the default; also under
``jit``, and under ``vmap`` for the whole batch). With ``throw=False`` it does not raise: the result of that solve
(``lam``, and so the projection) is NaN. Inside `dlnjax.simulate` a fiber flow built with ``throw=False``
(`dlnjax.flows.FiberL2(throw=False)`) thus returns a non-finite velocity, which Diffrax rejects (an adaptive step
is shrunk and retried; CG stops at once on non-finite input, so each retry is cheap): that run ends with
``Trajectory.success = False`` (``max_steps`` reached; with a constant step, non-finite saved states) while the
other runs of a ``vmap`` batch are unaffected (tested in ``tests/test_fiber_cg.py``). A batch's loop runs until its
last run stops, so a failed run costs the batch ``max_steps`` steps: in sweeps, pass ``simulate`` a ``max_steps``
of a few times what a run needs.

The public solves are wrapped in ``equinox.filter_jit`` (as ``lineax.linear_solve`` is): called eagerly they
run as one compiled program rather than op by op (timings: docs/performance.md, "Lab notes"); under an outer
``jit`` they are inlined.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Inexact

from ._fiber_operator import FiberProducts
from ._fiber_solvers import (
    AbstractFiberSolver,
    FiberCG,
    FiberSolution,
    as_fiber_solver,
    default_fiber_solver,
)
from ._network import DLN, require_linear
from ._numerics import sq_norm

__all__ = [
    "normal_operator",
    "balanced_preconditioner",
    "solve_normal",
    "fiber_normal_projection",
    "fiber_tangent_projection",
    "default_fiber_solver",
    "FiberCG",
    "fiber_l2_gradient",
]

Solver = AbstractFiberSolver | lx.AbstractLinearSolver | None


def _identity(net: DLN) -> lx.FunctionLinearOperator:
    struct = jax.ShapeDtypeStruct((net.widths[-1], net.widths[0]), net.dtype)
    return lx.FunctionLinearOperator(lambda x: x, struct, lx.positive_semidefinite_tag)


def normal_operator(net: DLN) -> lx.FunctionLinearOperator:
    """The normal operator ``(dX dX^*)(lam) = sum_k P_k P_k^* lam Q_k^* Q_k`` (docs/theory.md §3), as a Lineax operator.

    (`NormalOperator` ``.as_lineax()``; the identity at depth one.)
    """
    require_linear(net, "the fiber geometry (normal_operator)")
    if net.depth == 1:
        return _identity(net)
    return FiberProducts(net).normal_operator().as_lineax()


def balanced_preconditioner(net: DLN) -> lx.FunctionLinearOperator:
    """The Jacobi preconditioner of the normal operator in the eigenbases of ``sum_k A_k``, ``sum_k B_k`` (exact at balance).

    The preconditioner of `FiberCG` (and of ``lineax.CG`` in the fiber projections), as a Lineax operator
    (`BalancedPreconditioner` ``.as_lineax()``; docs/theory.md §3).
    """
    require_linear(net, "the fiber geometry (balanced_preconditioner)")
    if net.depth == 1:
        return _identity(net)
    return FiberProducts(net).normal_operator().preconditioner().as_lineax()


def _outcome(sol: FiberSolution, throw: bool) -> Array:
    """``lam``; where the solve failed, an error at run time (``throw``) or NaN."""
    failed = ~sol.successful
    if throw:
        return sol.result.error_if(sol.value, failed)
    return jnp.where(failed, jnp.asarray(jnp.nan, sol.value.dtype), sol.value)


def _normal_part(net: DLN, V: DLN | None, solver: Solver, rhs, throw: bool) -> DLN:
    """``Pi_N(V) = dX^*(lam)`` (``V = None``: ``V = W``), for every solver."""
    require_linear(net, "the fiber geometry")
    if net.depth == 1:  # dX = identity: Pi_N(V) = V
        if rhs is None:
            rhs = net.first if V is None else V.first
        return net.replace_arrays(rhs)
    solver = as_fiber_solver(solver, net.dtype)
    products = FiberProducts(net)
    if (
        rhs is None
    ):  # dX(W) = N X, since X is homogeneous of degree N in W; dX(V) = sum_k P_k V_k Q_k
        rhs = products.differential_of_weights() if V is None else products.differential(V)
    v2 = sum(sq_norm(x) for x in (net if V is None else V).arrays())
    sol = solver.solve(products.normal_operator(), rhs, v2=v2)
    return products.adjoint(_outcome(sol, throw))


@eqx.filter_jit
def solve_normal(
    net: DLN, rhs: Inexact[Array, "dN d0"], *, solver: Solver = None, throw: bool = True
) -> Inexact[Array, "dN d0"]:
    """Solve ``(dX dX^*)(lam) = rhs`` for ``lam`` (docs/theory.md §3). See the module docstring for ``solver``.

    A failed solve raises at run time (also under ``jit``) with ``throw=True``; with ``throw=False`` it returns NaN.
    For the result code itself, call the solver: ``dlnjax.FiberCG().solve(operator, rhs)`` (`AbstractFiberSolver`).
    """
    require_linear(net, "the fiber geometry (solve_normal)")
    if net.depth == 1:  # dX dX^* = identity
        return rhs
    solver = as_fiber_solver(solver, net.dtype)
    return _outcome(solver.solve(FiberProducts(net).normal_operator(), rhs), throw)


@eqx.filter_jit
def fiber_normal_projection(
    net: DLN, V: DLN, *, solver: Solver = None, rhs=None, throw: bool = True
) -> DLN:
    """``Pi_N(V) = dX^*(lam)``, the orthogonal projection of ``V`` onto ``range dX^*`` (docs/theory.md §3).

    ``rhs``, if given, must equal ``dX(V)`` (a caller that knows it in closed form saves a pass). ``throw``: see
    the module docstring (``False``: NaN where the solve failed).
    """
    return _normal_part(net, V, solver, rhs, throw)


@eqx.filter_jit
def fiber_tangent_projection(
    net: DLN, V: DLN, *, solver: Solver = None, rhs=None, throw: bool = True
) -> DLN:
    """``Pi_T(V) = V - dX^*(lam)`` with ``(dX dX^*)(lam) = dX(V)``: the orthogonal projection of ``V`` onto
    the tangent space ``ker dX`` of the fiber through ``net`` (docs/theory.md §3; Lemma 5 of seed 001).
    ``throw``: see the module docstring (``False``: NaN where the solve failed).
    """
    normal = _normal_part(net, V, solver, rhs, throw)
    return jax.tree_util.tree_map(lambda v, n: v - n, V, normal)


@eqx.filter_jit
def fiber_l2_gradient(net: DLN, *, solver: Solver = None, throw: bool = True) -> DLN:
    """``Pi_T(W)``, the gradient of ``1/2 ||W||^2`` on the fiber ((1.17), Lemma 5 of seed 001; docs/theory.md §3).

    Uses ``dX(W) = N X`` (``X`` is homogeneous of degree ``N``), which saves a pass. ``throw``: see the module
    docstring (``False``: NaN where the solve failed).
    """
    normal = _normal_part(net, None, solver, None, throw)
    return jax.tree_util.tree_map(jnp.subtract, net, normal)
