from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx

from .._errors import OptionError
from .._fiber import fiber_l2_gradient, fiber_tangent_projection
from .._fiber_solvers import AbstractFiberSolver
from .._network import DLN
from .._numerics import dot
from ._base import AbstractFlow


class FiberL2(AbstractFlow):
    """The L2 regularizing flow ``dW/dt = -1/2 grad_{F_X} ||W||^2 = -Pi_T(W)`` ((1.17) of seed 001).

    The gradient of ``1/2 ||W||^2`` on the fiber ``(F_X, iota)``: ``X`` is constant, and
    ``G(t) = exp(-2t) G(0)`` (Theorem 2); the limit is balanced with
    ``||W||^2 = N sum_i sigma_i^(2/N)`` (Theorem 1). Each evaluation solves the normal system of
    docs/theory.md §3 with ``solver`` (see `dlnjax.solve_normal`; default: preconditioned CG). Its
    right-hand side ``dX(W) = N X`` is known in closed form (``X`` is homogeneous of degree N).

    ``throw``: a failed solve raises (``True``, the default), or makes the velocity NaN (``False``), so that
    `dlnjax.simulate` reports that run with ``Trajectory.success = False`` instead of raising for a whole
    ``vmap`` batch (see `dlnjax.fiber_tangent_projection`).
    """

    solver: AbstractFiberSolver | lx.AbstractLinearSolver | None = None
    throw: bool = eqx.field(static=True, default=True)

    def __call__(self, t, net: DLN, args=None) -> DLN:
        v = fiber_l2_gradient(net, solver=self.solver, throw=self.throw)
        return jax.tree_util.tree_map(jnp.negative, v)


def schatten_norm(w, p):
    """``||W||_p = (sum_i sigma_i^p)^(1/p)`` over the last two axes."""
    s = jnp.linalg.svd(w, compute_uv=False)
    return jnp.sum(s**p, axis=-1) ** (1.0 / p)


def schatten_regularizer(net: DLN, p: float):
    """``||W||_p = sum_k ||W_k||_p`` ((3.8) of seed 001)."""
    return sum(jnp.sum(schatten_norm(a, p)) for a in net.arrays())


def _schatten_gradient(w, p):
    # grad ||W||_p = U diag(sigma^(p-1)) V^* / ||W||_p^(p-1); zero singular values contribute nothing.
    u, s, vh = jnp.linalg.svd(w, full_matrices=False)
    norm = jnp.sum(s**p, axis=-1, keepdims=True) ** (1.0 / p)
    scale = jnp.where(s > 0, (s / jnp.where(norm > 0, norm, 1.0)) ** (p - 1), 0.0)
    return dot(u * scale[..., None, :].astype(u.dtype), vh)


class FiberSchatten(AbstractFlow):
    """The Schatten-p regularizing flow ``dW/dt = -Pi_T(grad sum_k ||W_k||_p)``, ``1 < p < oo``.

    The gradient flow of the regularizer (3.8) on the fiber; its minimizers are the balanced points of
    the fiber (Theorem 20 of seed 001). ``X`` is constant and the regularizer decreases. ``solver``, ``throw``:
    as for `FiberL2`.
    """

    p: float
    solver: AbstractFiberSolver | lx.AbstractLinearSolver | None = None
    throw: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        if isinstance(self.p, (int, float)) and not (1 < self.p < float("inf")):
            raise OptionError(
                f"FiberSchatten: need 1 < p < inf (Theorem 20 of seed 001); got p = {self.p}."
            )

    def __call__(self, t, net: DLN, args=None) -> DLN:
        grad = net.replace_arrays(*(_schatten_gradient(a, self.p) for a in net.arrays()))
        return jax.tree_util.tree_map(
            jnp.negative, fiber_tangent_projection(net, grad, solver=self.solver, throw=self.throw)
        )
