"""The fast-slow split of training dynamics: regularizing (fiber-tangent) and learning (normal) parts.

§4.1 of Lindsey & Menon (seed 001): at every ``W`` a velocity ``V`` splits orthogonally, for the real
inner product ``<A, B> = Re Tr(A^* B)`` (docs/theory.md §1), into

- a **tangent** part ``Pi_T(V)`` in ``ker dX``, the tangent space of the fiber ``F_X``: it moves ``W``
  along the fiber and leaves ``X`` unchanged (regularizing);
- a **normal** part ``Pi_N(V) = dX^*(lam)`` in ``range dX^*``: the only part that changes ``X`` (learning).

For the gradient flow (4.1) of the regularized loss, ``V = -grad_W E - kappa W``. Since
``grad_W E = dX^*(grad E(X))`` is normal, the split is explicit:
``Pi_T(V) = -kappa Pi_T(W)`` (the L2 regularizing flow (1.17), slowed down by ``kappa``) and
``Pi_N(V) = -(grad_W E + kappa Pi_N(W))``. Along (4.1), ``G(t) = e^{-2 kappa t} G(0)`` exactly
(docs/theory.md §4; Theorem 2 of seed 001 with rate ``2 kappa``), so the trajectory reaches the balanced
variety on the time scale ``1/(2 kappa)``.

The idealization of §4 (Figures 1.2-1.3 of seed 001) is `two_stage_prediction`: a fast regularization
to the balanced center of the initial fiber, then learning on the balanced variety.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Float, Inexact, Real

from ._errors import InputTypeError, OptionError, ShapeError
from ._fiber import fiber_normal_projection
from ._geometry import network_gradient
from ._init import fiber_center
from ._network import DLN, end_to_end, moments, squared_norm
from ._simulate import Trajectory, simulate
from .flows._gradient import Gradient, Regularized

__all__ = [
    "velocity_split",
    "regularized_velocity_split",
    "FastSlowDiagnostic",
    "fast_slow_diagnostic",
    "two_stage_prediction",
    "learning_first_prediction",
]


def _check_kappa(kappa, who: str):
    if isinstance(kappa, (int, float)) and not kappa > 0:
        raise OptionError(
            f"{who}: kappa must be positive (the strength of the L2 term in (4.1) of seed 001); got {kappa}."
        )


def _check_net(net, who: str, what: str = "net"):
    if not isinstance(net, DLN):
        raise InputTypeError(f"{who}: {what} must be a dlnjax.DLN; got {type(net).__name__}.")


def _norm(net: DLN) -> Array:
    return jnp.sqrt(squared_norm(net))


def velocity_split(
    net: DLN, velocity: DLN, *, solver: lx.AbstractLinearSolver | None = None
) -> tuple[DLN, DLN]:
    """Split a velocity ``V`` at ``W = net`` into ``(Pi_T(V), Pi_N(V))``, regularizing and learning parts.

    ``Pi_N(V) = dX^*(lam)`` with ``(dX dX^*)(lam) = dX(V)`` (`dlnjax.fiber_normal_projection`, docs/theory.md §3)
    and ``Pi_T(V) = V - Pi_N(V)``: the two parts sum to ``V`` exactly, are orthogonal for
    ``Re Tr(A^* B)``, ``dX(Pi_T(V)) = 0`` (tangent to the fiber ``F_X``) and ``Pi_N(V)`` lies in
    ``range dX^*`` (§4.1 of seed 001). ``solver`` is passed to the normal-system solve (default:
    preconditioned CG; `lineax.SVD()` for rank-deficient ``X``). Real and complex, any widths.
    """
    _check_net(net, "velocity_split")
    _check_net(velocity, "velocity_split", "velocity")
    if velocity.widths != net.widths:
        raise ShapeError(
            f"velocity_split: the velocity has widths {velocity.widths} but the network {net.widths}."
        )
    normal = fiber_normal_projection(net, velocity, solver=solver)
    tangent = jax.tree_util.tree_map(jnp.subtract, velocity, normal)
    return tangent, normal


def regularized_velocity_split(
    loss: Callable[[Array], Array],
    kappa: float,
    net: DLN,
    *,
    solver: lx.AbstractLinearSolver | None = None,
) -> tuple[DLN, DLN]:
    """The split of the velocity ``V = -grad_W E - kappa W`` of (4.1) (seed 001) at ``net``.

    Returns ``(Pi_T(V), Pi_N(V))``, which equal ``-kappa Pi_T(W)`` and ``-(grad_W E + kappa Pi_N(W))``
    (``grad_W E`` is normal). ``kappa > 0``.
    """
    _check_kappa(kappa, "regularized_velocity_split")
    _check_net(net, "regularized_velocity_split")
    g = network_gradient(loss, net)
    v = jax.tree_util.tree_map(lambda gk, w: -gk - kappa * w, g, net)
    return velocity_split(net, v, solver=solver)


class FastSlowDiagnostic(eqx.Module):
    """Per saved time, the fast-slow decomposition of the flow (4.1) of seed 001 (see `fast_slow_diagnostic`).

    Every field has a leading time axis ``T``:

    - `ts`: the times;
    - `tangent_norm`: ``||Pi_T(V)||``, the regularizing speed (``= kappa ||Pi_T(W)||``);
    - `normal_norm`: ``||Pi_N(V)||``, the learning speed;
    - `g_norm`: ``||G||_F`` over all moments (``= e^{-2 kappa t} ||G(0)||`` along (4.1));
    - `balancedness`: ``||G||_F / ||W||^2`` (`dlnjax.balancedness`);
    - `loss`: ``E(X)``;
    - `squared_norm`: ``||W||^2``;
    - `x`: the end-to-end matrices ``X(t)``.
    """

    ts: Real[Array, " T"]
    tangent_norm: Float[Array, " T"]
    normal_norm: Float[Array, " T"]
    g_norm: Float[Array, " T"]
    balancedness: Float[Array, " T"]
    loss: Float[Array, " T"]
    squared_norm: Float[Array, " T"]
    x: Inexact[Array, "T dN d0"]


def _point_diagnostic(loss, kappa, net: DLN, solver):
    tangent, normal = regularized_velocity_split(loss, kappa, net, solver=solver)
    g = jnp.sqrt(jnp.sum(jnp.abs(moments(net)) ** 2))
    sq = squared_norm(net)
    x = end_to_end(net)
    return (
        _norm(tangent),
        _norm(normal),
        g,
        jnp.where(sq > 0, g / jnp.where(sq > 0, sq, 1.0), 0.0),
        loss(x),
        sq,
        x,
    )


def fast_slow_diagnostic(
    loss: Callable[[Array], Array],
    kappa: float,
    traj: Trajectory | DLN,
    ts: Real[Array, " T"] | None = None,
    *,
    solver: lx.AbstractLinearSolver | None = None,
) -> FastSlowDiagnostic:
    """The fast-slow diagnostic of (4.1) (seed 001) along a trajectory, one row per saved time.

    ``traj`` is a `dlnjax.Trajectory` (e.g. ``simulate(Regularized(loss, kappa), W0, ts)``) or a `DLN`
    whose arrays carry a leading time axis (then ``ts`` gives the times; default ``0, 1, 2, ...``).
    At each saved ``W`` the velocity ``V = -grad_W E - kappa W`` is split by `velocity_split`; the
    result holds the norms of both parts, the distance to the balanced variety (``||G||`` and
    `dlnjax.balancedness`), the loss, ``||W||^2`` and ``X``. Computed with ``jax.vmap`` over the time
    axis (one normal-system solve per time); ``jit``-able, and ``vmap``-able over batches of trajectories.
    """
    _check_kappa(kappa, "fast_slow_diagnostic")
    if isinstance(traj, Trajectory):
        ys, ts = traj.ys, traj.ts if ts is None else ts
    else:
        ys = traj
    _check_net(ys, "fast_slow_diagnostic", "traj.ys")
    if ys.first.ndim != 3:
        raise ShapeError(
            "fast_slow_diagnostic: expected weights with one leading time axis (a trajectory saved by "
            f"dlnjax.simulate); got first-layer array of shape {ys.first.shape}. vmap over further batch axes."
        )
    n_t = ys.first.shape[0]
    ts = jnp.arange(n_t, dtype=jnp.real(ys.first).dtype) if ts is None else jnp.asarray(ts)
    if ts.shape != (n_t,):
        raise ShapeError(
            f"fast_slow_diagnostic: ts has shape {ts.shape}; the trajectory has {n_t} saved times."
        )
    cols = jax.vmap(lambda w: _point_diagnostic(loss, kappa, w, solver))(ys)
    return FastSlowDiagnostic(ts, *cols)


def two_stage_prediction(
    loss: Callable[[Array], Array],
    kappa: float,
    net0: DLN,
    ts: Real[Array, " T"],
    **simulate_kwargs: Any,
) -> Trajectory:
    """The idealized two-stage picture of §4 of seed 001 (Figures 1.2-1.3): regularize, then learn.

    Stage 1 (regularization) is the tangent part of (4.1), ``dW/dt = -kappa Pi_T(W)``: the L2 regularizing
    flow (1.17) (`dlnjax.flows.FiberL2`) run at time ``kappa t``. It keeps ``X`` fixed and gives
    ``G(t) = e^{-2 kappa t} G(0)``, the same law as (4.1) itself, and its limit is a balanced point of
    the fiber of ``X_0 = X(W_0)`` (Theorem 1); all of them lie on one ``U(d)^{N-1}``-orbit, along which the
    learning dynamics of ``X`` are the same. In the idealization stage 1 is *fast* (instantaneous
    against learning), so at ``t = 0+`` the state is the balanced center ``C = fiber_center(X_0, N, widths)``.

    Stage 2 (learning) is (4.1) itself from ``C``: ``G(t) = e^{-2 kappa t} G(C) = 0``, so it stays on the
    balanced variety, where ``X`` follows ``dX/dt = -A_N(X)[grad E(X)] - kappa N X`` (docs/theory.md §5).

    Returns ``simulate(Regularized(loss, kappa), C, ts, **simulate_kwargs)``: compare its ``end_to_end``
    with that of the real trajectory from ``net0``. The inner widths of ``net0`` must be at least
    ``rank X_0`` (`dlnjax.fiber_center`).

    How well it predicts (measured in ``dlnjax/experiments/fast_slow.py``): once ``t >~ 1/(2 kappa)`` the
    real ``X(t)`` follows it, with an error that shrinks like ``kappa``; but for a loss whose learning time
    is ``O(1)`` the error *during* learning does not vanish as ``kappa -> 0``: it tends to the gap between
    the gradient flows from ``W_0`` and from ``C``, because for small ``kappa`` learning is the fast stage
    and balancing the slow one (the other order, `learning_first_prediction`).
    """
    _check_kappa(kappa, "two_stage_prediction")
    _check_net(net0, "two_stage_prediction", "net0")
    center = fiber_center(end_to_end(net0), net0.depth, net0.widths)
    return simulate(Regularized(loss, kappa), center, ts, **simulate_kwargs)


def learning_first_prediction(
    loss: Callable[[Array], Array],
    kappa: float,
    net0: DLN,
    ts: Real[Array, " T"],
    **simulate_kwargs: Any,
) -> Trajectory:
    """The small-``kappa`` limit of (4.1) (seed 001), the two stages in the other order: learn, then regularize.

    For ``kappa -> 0`` with a loss of fixed scale, the normal (learning) part of (4.1) is fast (time
    ``O(1)``) and the tangent (regularizing) part ``-kappa Pi_T(W)`` slow (time ``1/(2 kappa)``). Stage 1
    is the gradient flow (1.2) of ``E`` from ``W_0``, which conserves ``G``; stage 2 is the regularizing
    flow (1.17) at time ``kappa t``, which slides along a fiber (``X`` fixed) and scales ``G`` by
    ``e^{-2 kappa t}``. The predicted ``X(t)`` is therefore that of the gradient flow, and the predicted
    ``G(t) = e^{-2 kappa t} G(0)`` is exact. Returns ``simulate(Gradient(loss), net0, ts, **simulate_kwargs)``
    (compare its ``end_to_end`` with the real one: the error is ``O(kappa)``, measured ~``1.25 kappa``
    relative to ``||X_final||`` in ``dlnjax/experiments/fast_slow.py``).
    """
    _check_kappa(kappa, "learning_first_prediction")
    _check_net(net0, "learning_first_prediction", "net0")
    return simulate(Gradient(loss), net0, ts, **simulate_kwargs)
