"""Flows on realizations: learning flows of a loss of the system and balancing flows on the ``GL(n)`` orbit
(docs/theory.md §13; the system analogues of (1.2), (4.1), (1.17), (1.22), (4.4) of Lindsey & Menon, seed 001).

Each flow is an Equinox module ``flow(t, sys, args) -> velocity`` (a `LinearSystem` of the same shapes), so it is a
Diffrax vector field and `dlnjax.simulate` integrates it (a `LinearSystem` is a pytree).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx

from .._errors import InputTypeError, UnsupportedError
from ..flows import AbstractFlow, Langevin
from ._moment import moment_map, orbit_solve
from ._system import LinearSystem, orbit_tangent

__all__ = [
    "SystemGradient",
    "SystemRegularized",
    "SystemLangevin",
    "OrbitL2",
    "OrbitKirwanNess",
    "HelmkeMoore",
    "system_gradient",
]


def system_gradient(loss: Callable[[LinearSystem], jax.Array], sys: LinearSystem) -> LinearSystem:
    """``grad E(A, B, C)`` for the real inner product ``Re Tr(X^* Y)`` (the conjugate of ``jax.grad`` for complex
    systems, so that ``E(x - eps g)`` decreases). ``loss`` maps a `LinearSystem` to a real scalar."""
    if not isinstance(sys, LinearSystem):
        raise InputTypeError(f"system flows act on a LinearSystem; got {type(sys).__name__}.")
    return jax.tree_util.tree_map(jnp.conj, jax.grad(loss)(sys))


def _minus_grad_minus(loss, kappa, sys):
    if loss is None:
        return jax.tree_util.tree_map(lambda w: -kappa * w, sys)
    g = system_gradient(loss, sys)
    return jax.tree_util.tree_map(lambda gk, w: -gk - kappa * w, g, sys)


class SystemGradient(AbstractFlow):
    """The gradient flow ``x' = -grad E(x)`` of a loss of the realization ``x = (A, B, C)``.

    When ``E`` depends on ``x`` only through the transfer function (e.g. `MarkovLoss`), its gradient is normal to
    the orbit and the moment map `moment_map` is conserved (docs/theory.md §13).
    """

    loss: Callable

    def __call__(self, t, sys: LinearSystem, args=None) -> LinearSystem:
        return jax.tree_util.tree_map(jnp.negative, system_gradient(self.loss, sys))


class SystemRegularized(AbstractFlow):
    """``x' = -grad E(x) - kappa x``: the gradient flow of ``E + kappa/2 ||x||^2`` (the analogue of (4.1) of seed 001).

    For ``E`` a loss of the transfer function, ``mu(t) = exp(-2 kappa t) mu(0)`` exactly (docs/theory.md §13).
    """

    loss: Callable
    kappa: float

    def __call__(self, t, sys: LinearSystem, args=None) -> LinearSystem:
        return _minus_grad_minus(self.loss, self.kappa, sys)


class SystemLangevin(Langevin):
    """``dx = -(grad E + kappa x) dt + sqrt(2/beta) dB`` on realizations (the analogue of (4.4) of seed 001).

    `dlnjax.flows.Langevin` (its fields ``loss``, ``kappa``, ``beta`` and their checks) acting on a `LinearSystem`.
    Real systems only. ``loss=None`` is ``E = 0``. For ``E`` a loss of the transfer function,
    ``d/dt E[mu] = -2 kappa E[mu] + (2/beta)(m - p) I``: the noise adds ``dB_B dB_B^T - dB_C^T dB_C`` whose mean
    is ``(m - p) dt I`` (Ito; docs/theory.md §13).
    """

    def __call__(self, t, sys: LinearSystem, args=None) -> LinearSystem:
        return _minus_grad_minus(self.loss, self.kappa, sys)

    def diffusion(self, t, sys: LinearSystem, args=None) -> lx.AbstractLinearOperator:
        if jnp.iscomplexobj(sys.A):
            raise UnsupportedError("SystemLangevin: only real systems are supported.")
        scale = jnp.sqrt(2.0 / self.beta)
        struct = jax.eval_shape(lambda: sys)
        return lx.FunctionLinearOperator(
            lambda db: jax.tree_util.tree_map(lambda x: scale * x, db), struct
        )


class OrbitL2(AbstractFlow):
    """The regularizing flow on the orbit, ``x' = -1/2 grad_orbit ||x||^2 = -Pi_T(x)`` (the analogue of (1.17)).

    The gradient of ``1/2 ||x||^2`` on the orbit with the induced (Euclidean) metric: ``-xi . x`` with
    ``N(xi) = mu`` (`dlnjax.systems.orbit_solve`, an ``n x n`` matrix equation; ``solver``, ``throw`` as there).
    The transfer function is constant and the moment map obeys ``mu(t) = exp(-2t) mu(0)`` exactly, for every
    realization with a trivial stabilizer (docs/theory.md §13: the analogue of Theorem 2).
    """

    solver: lx.AbstractLinearSolver | None = None
    throw: bool = eqx.field(static=True, default=True)

    def __call__(self, t, sys: LinearSystem, args=None) -> LinearSystem:
        xi = orbit_solve(sys, moment_map(sys), self.solver, throw=self.throw)
        return orbit_tangent(sys, -xi)


class OrbitKirwanNess(AbstractFlow):
    """The Kirwan-Ness flow ``x' = -1/2 grad ||mu||^2 = -2 mu . x = (2 (A mu - mu A), -2 mu B, 2 C mu)``.

    The Euclidean gradient flow of ``1/2 ||mu||^2`` (the analogue of (1.22) of seed 001; with ``A = 0`` it is (1.22) at
    depth two); tangent to the orbit (``xi = -2 mu``), so the transfer function is constant. Explicit and cubic.
    """

    def __call__(self, t, sys: LinearSystem, args=None) -> LinearSystem:
        return orbit_tangent(sys, -2 * moment_map(sys))


class HelmkeMoore(AbstractFlow):
    """The Helmke-Moore balancing flow: the gradient flow of ``1/2 ||x||^2`` on the orbit with the *normal* metric.

    The normal (right-invariant) metric on ``GL(n)``, ``<xi M, eta M> = Re Tr(xi^* eta)``, makes the gradient of
    ``f(M) = 1/2 ||M . x_0||^2`` equal to ``mu(M . x_0) M``; its flow ``M' = -mu M`` moves ``x = M . x_0`` by
    ``x' = -mu . x = (A mu - mu A, -mu B, C mu)`` (Remark 6 of seed 001; Helmke & Moore, *Optimization and dynamical
    systems*). This is half the Kirwan-Ness field (`OrbitKirwanNess`): on realizations, the normal-metric gradient
    of the norm and the Euclidean gradient of ``1/4 ||mu||^2`` coincide (docs/theory.md §13).
    """

    def __call__(self, t, sys: LinearSystem, args=None) -> LinearSystem:
        return orbit_tangent(sys, -moment_map(sys))
