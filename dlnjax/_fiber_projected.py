"""A Diffrax solver that keeps the state on the fiber ``X(W) = X(W_0)`` (docs/theory.md §11).

`FiberProjected` wraps any Diffrax solver: after each step of the wrapped solver, the new state ``W~`` is moved
back onto the fiber of the initial end-to-end matrix ``X_0`` along the normal space at the step's start ``W_n``:

``W_{n+1} = W~ + dX_{W_n}^*(mu)``, with ``mu`` such that ``X(W_{n+1}) = X_0``,

found by the chord (simplified Newton) iteration ``mu_{i+1} = mu_i + L^{-1}(X_0 - X(W_i))``, ``L = dX dX^*`` at
``W_n`` (the normal system of docs/theory.md §3, solved by the default fiber solver), until
``||X(W_i) - X_0|| <= tol ||X_0||``. The step's normal offset is ``O(dt)`` (the tangent increments of a stochastic
flow are ``O(sqrt dt)``, the fiber's curvature turns them into ``O(dt)`` normal offsets), and the chord iteration
contracts by ``O(||W~ - W_n||)`` per sweep: a few sweeps per step. This is the projection of the constrained
schemes of Ciccotti, Lelievre & Vanden-Eijnden (2008) and Lelievre, Rousset & Stoltz (2012), consistent (weak
order one) with the projected Stratonovich SDE of `dlnjax.flows.FiberLangevin`.

A step whose projection does not converge within ``max_iterations`` ends the solve with a failure
(``Trajectory.success = False``), never a state off the fiber passed off as a result.
"""

from __future__ import annotations

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._errors import OptionError
from ._fiber_operator import FiberProducts
from ._fiber_solvers import as_fiber_solver
from ._network import DLN, end_to_end
from ._numerics import sq_norm
from ._wrapped_solver import AbstractForwardingSolver

__all__ = ["FiberProjected", "project_to_fiber"]


def project_to_fiber(
    net: DLN, X0: Array, base: DLN, *, tol: float, max_iterations: int
) -> tuple[DLN, Array]:
    """``net + dX_base^*(mu)`` with ``X = X0`` (chord iteration; see the module docstring): ``(net, converged)``."""
    products = FiberProducts(base)
    operator = products.normal_operator()
    solver = as_fiber_solver(None, net.dtype)
    bound = tol**2 * jnp.maximum(sq_norm(X0), jnp.finfo(net.dtype).tiny)

    def residual(w):
        return X0 - end_to_end(w)

    def go_on(s):
        w, r, i = s
        return (sq_norm(r) > bound) & (i < max_iterations) & jnp.all(jnp.isfinite(r))

    def sweep(s):
        w, r, i = s
        lam = solver.solve(operator, r).value
        w = jax.tree_util.tree_map(jnp.add, w, products.adjoint(lam))
        return w, residual(w), i + 1

    w, r, _ = jax.lax.while_loop(go_on, sweep, (net, residual(net), jnp.asarray(0)))
    return w, sq_norm(r) <= bound


class FiberProjected(AbstractForwardingSolver):
    """``solver``'s steps, each followed by the projection back onto the fiber of the initial state.

    The default solver of `dlnjax.flows.FiberLangevin` in `dlnjax.simulate` (``FiberProjected(diffrax.Heun())``:
    Heun integrates the Stratonovich SDE); usable with any Diffrax solver and any flow on `dlnjax.DLN` states
    whose steps should keep ``X``. ``tol``: relative accuracy of ``X(W) = X_0`` after each step (default
    ``1e-12`` in double precision, ``1e-5`` in single); ``max_iterations``: chord sweeps per step. Save times
    should lie on the step grid (with a constant ``dt0``): states interpolated between two steps are off the fiber
    by ``O(dt)``.
    """

    solver: dfx.AbstractSolver
    tol: float | None = eqx.field(static=True, default=None)
    max_iterations: int = eqx.field(static=True, default=50)

    def __check_init__(self):
        if not isinstance(self.solver, dfx.AbstractSolver):
            raise OptionError(
                f"FiberProjected: solver must be a Diffrax solver; got {type(self.solver).__name__}."
            )
        if self.max_iterations < 1:
            raise OptionError("FiberProjected: max_iterations must be at least 1.")

    def init(self, terms, t0, t1, y0, args):
        return self.solver.init(terms, t0, t1, y0, args), end_to_end(y0)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        inner_state, X0 = solver_state
        y1, y_error, dense_info, inner_state, result = self.solver.step(
            terms, t0, t1, y0, args, inner_state, made_jump
        )
        tol = self.tol
        if tol is None:
            tol = 1e-12 if jnp.finfo(y0.dtype).bits == 64 else 1e-5
        y1, ok = project_to_fiber(y1, X0, y0, tol=tol, max_iterations=self.max_iterations)
        if "y1" in dense_info:
            dense_info = dict(dense_info, y1=y1)
        result = dfx.RESULTS.where(ok, result, dfx.RESULTS.internal_error)
        return y1, y_error, dense_info, (inner_state, X0), result
