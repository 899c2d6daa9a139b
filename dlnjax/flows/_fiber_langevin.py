from __future__ import annotations

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx

from .._errors import OptionError, UnsupportedError
from .._fiber import fiber_l2_gradient, fiber_tangent_projection
from .._fiber_projected import FiberProjected
from .._fiber_solvers import AbstractFiberSolver
from .._network import DLN, require_linear
from ._base import AbstractStochasticFlow


class FiberLangevin(AbstractStochasticFlow):
    """Langevin dynamics on a fiber: samples the posterior (4.5) of Lindsey & Menon (seed 001).

    The prior of variance ``1/(beta kappa)`` per entry (the stationary law of (4.4) with ``E = 0``), conditioned on
    ``X(W) = X``: the density ``∝ exp(-beta kappa ||W||^2 / 2)`` with respect to the surface (Hausdorff) measure of
    the fiber ``F_X``. It is the stationary law of the projected Stratonovich SDE (docs/theory.md §11)

    ``dW = -kappa Pi_T(W) dt + sqrt(2 / beta) Pi_T(W) ∘ dB``,

    ``Pi_T`` the orthogonal projection onto the tangent space of the fiber (`dlnjax.fiber_tangent_projection`):
    Brownian motion on the fiber (the Stratonovich projection of an ambient one) plus the Riemannian gradient of
    ``kappa ||W||^2 / 2``, so the generator is symmetric in ``L^2(exp(-beta kappa ||W||^2 / 2) dH)``. In Ito form
    the SDE has the mean-curvature drift ``(1/beta) H(W)``; integrating the Stratonovich form with Heun needs no
    curvature term.

    `dlnjax.simulate` (``key=``, ``dt0=`` required) integrates it with `dlnjax.FiberProjected` ``(diffrax.Heun())``
    (the flow's `default_solver`): each Heun step is followed by a projection back onto ``X(W) = X(W_0)``, so
    ``X`` drifts by no more than the projection's tolerance (``1e-12`` relative) however long the run. Save times
    should lie on the ``dt0`` grid. Batches of chains: ``jax.vmap`` over keys (and starts).

    Real weights only. ``solver``, ``throw``: the fiber solves, as for `FiberL2`. As ``beta kappa`` grows the law
    concentrates on the balanced orbit ``O_X`` (Theorem 1): ``E ||W||^2 = N sum_i sigma_i^(2/N) + m / (beta kappa)
    + O((beta kappa)^-2)``, ``m`` the codimension of ``O_X`` in ``F_X`` (docs/theory.md §11); the limit law, the
    uniform law on ``O_X`` (the posterior restricted to balanced networks), is drawn exactly by
    `dlnjax.balanced_orbit_sample`.
    """

    kappa: float
    beta: float
    solver: AbstractFiberSolver | lx.AbstractLinearSolver | None = None
    throw: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        for name in ("kappa", "beta"):
            v = getattr(self, name)
            if isinstance(v, (int, float)) and not v > 0:
                raise OptionError(f"FiberLangevin: {name} must be positive; got {v}.")

    def __call__(self, t, net: DLN, args=None) -> DLN:
        require_linear(net, "FiberLangevin (a flow on the fibers of X)")
        g = fiber_l2_gradient(net, solver=self.solver, throw=self.throw)
        return jax.tree_util.tree_map(lambda x: -self.kappa * x, g)

    def diffusion(self, t, net: DLN, args=None) -> lx.AbstractLinearOperator:
        if jnp.iscomplexobj(net.first):
            raise UnsupportedError("FiberLangevin: only real weights are supported.")
        mask = net.mask()  # no noise on the zero padding of non-uniform widths
        scale = jnp.sqrt(2.0 / self.beta)

        def mv(db):
            db = jax.tree_util.tree_map(jnp.multiply, mask, db)
            v = fiber_tangent_projection(net, db, solver=self.solver, throw=self.throw)
            return jax.tree_util.tree_map(lambda x: scale * x, v)

        return lx.FunctionLinearOperator(mv, jax.eval_shape(lambda: net))

    def default_solver(self) -> dfx.AbstractSolver:
        """``FiberProjected(diffrax.Heun())``: Heun's Stratonovich steps, projected back onto the fiber."""
        return FiberProjected(dfx.Heun())
