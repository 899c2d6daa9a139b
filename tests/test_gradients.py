"""Differentiating through the flows (issue 6): gradients of trajectory outcomes, adjoint choices.

Every check compares, in float64, three derivatives of a vector of outcomes ``o(theta)`` of one trajectory
(final loss, test error, balancedness, effective rank, sharpness, ...) with respect to a few scalar
parameters ``theta`` (a coefficient along a random direction in weight space, the init scale of
``dlnjax.gaussian``, ``kappa``, ``beta``, a coefficient along a random direction of the loss data, the horizon):

- reverse mode (``jax.jacrev``, the default ``RecursiveCheckpointAdjoint``),
- forward mode (``jax.jvp`` with ``diffrax.ForwardMode()``),
- central finite differences (the fourth-order stencil, step ``1e-3`` relative to the parameter).

Why constant step sizes: with a constant step the solver computes a smooth function of ``theta`` (a fixed
composition of Runge-Kutta steps), and automatic differentiation differentiates exactly that function, so
AD and FD agree up to the stencil's truncation (~``h^4``) and round-off (~``eps / h``), about 1e-10 here:
the 1e-6 comparison is meaningful and has margin. With an adaptive controller Diffrax differentiates at
frozen step sizes while FD sees the step sizes move, a mismatch of the order of the tolerance; the
horizon derivative is therefore checked against the vector field with a high-order solver at a small step
(the discretization error of ``d/dT`` is ``O(h^5)``). Per check everything is one compiled program
(compilation dominates the runtime); sizes are small.
"""

from __future__ import annotations

import functools as ft
import math

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import lineax as lx
import numpy as np
import optax
import pytest

import dlnjax
from dlnjax import flows

FD_RTOL = 1e-6  # AD against finite differences
MODE_RTOL = (
    1e-8  # forward against reverse mode (both exact derivatives of one discrete map; round-off)
)
SOLVER = dfx.Midpoint()  # two stages: small programs; its discrete map is what AD and FD both see
T, DT = 1.0, 0.05
# LLVM's optimizations cost more compile time than these small programs ever run; results agree to round-off.
FAST_COMPILE = {"xla_backend_optimization_level": 0}

WIDTHS = (4, 3, 3, 4)  # rectangular inner widths: X has rank <= 3 < 4
SQUARE = (3, 3, 3, 3)  # the fiber flows need dX onto (X full rank)
# The fiber flows inside solves use the dense normal system (Lineax Cholesky), differentiated implicitly by
# Lineax; the default preconditioned-CG path is checked on its own in test_fiber_default_cg_solve_differentiates.
FIBER_SOLVER = lx.Cholesky()


def _loss(shape, seed=0):
    return dlnjax.losses.MatrixCompletion.random(
        jr.PRNGKey(seed), shape, 2, shape[0] * shape[1] - 4
    )


def _direction(like, seed):
    """A random pytree shaped like ``like`` (zero on the padding of a DLN)."""
    leaves, treedef = jax.tree_util.tree_flatten(like)
    keys = jr.split(jr.PRNGKey(seed), len(leaves))
    out = jax.tree_util.tree_unflatten(
        treedef, [jr.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
    )
    return (
        jax.tree_util.tree_map(jnp.multiply, out, like.mask())
        if isinstance(like, dlnjax.DLN)
        else out
    )


def _with_values(loss, dv, c):
    return eqx.tree_at(lambda l: l.values, loss, loss.values + c * dv)


def _simulate(flow, y0, adjoint, **kw):
    kw = {"solver": SOLVER, "dt0": DT, **kw}
    return dlnjax.simulate(flow, y0, jnp.array([0.0, T]), adjoint=adjoint, **kw)


def _net_outcomes(loss, net, *, sharpness=False):
    X = dlnjax.end_to_end(net)
    out = [loss(X), loss.test_error(X), dlnjax.balancedness(net), dlnjax.effective_rank(X)]
    if sharpness:
        out.append(dlnjax.sharpness(loss, net, iterations=6))
    return jnp.stack(out)


def _derivatives(f, theta0):
    """Reverse- and forward-mode Jacobians and the FD Jacobian of ``f(theta, adjoint) -> outcomes``, one program."""
    theta0 = jnp.asarray(theta0, float)
    p = theta0.shape[0]
    h = 1e-3 * jnp.maximum(1.0, jnp.abs(theta0))
    offsets = jnp.array([-2.0, -1.0, 1.0, 2.0])
    weights = jnp.array([1.0, -8.0, 8.0, -1.0]) / 12.0

    @ft.partial(jax.jit, compiler_options=FAST_COMPILE)
    def run(theta0):
        rev = jax.jacrev(lambda th: f(th, dfx.RecursiveCheckpointAdjoint()))(theta0)
        eye = jnp.eye(p)
        # one vmapped forward-mode program: p tangent directions at theta0, then the 4p stencil points
        points = jnp.concatenate(
            [
                jnp.tile(theta0, (p, 1)),
                theta0 + (offsets[:, None, None] * h[None, :, None] * eye).reshape(-1, p),
            ]
        )
        tangents = jnp.concatenate([eye, jnp.zeros((4 * p, p))])
        prim, tan = jax.vmap(lambda x, v: jax.jvp(lambda th: f(th, dfx.ForwardMode()), (x,), (v,)))(
            points, tangents
        )
        fwd = tan[:p].T
        stencil = prim[p:].reshape(4, p, -1)
        fd = (jnp.einsum("s,spm->pm", weights, stencil) / h[:, None]).T
        return rev, fwd, fd, prim[0]

    return [np.asarray(a) for a in run(theta0)]


def _rel(a, b):
    """Entrywise relative error ``|a - b| / |b|``; entries of ``b`` below 1e-3 of the largest of their row (the
    largest partial of that outcome) are compared against that 1e-3 instead (true zeros, e.g. the derivative
    of the scale-invariant balancedness along the scale, carry only round-off)."""
    scale = np.maximum(np.abs(b), 1e-3 * np.max(np.abs(b), axis=-1, keepdims=True))
    return np.max(np.abs(a - b) / np.maximum(scale, 1e-300))


def _check(f, theta0):
    rev, fwd, fd, value = _derivatives(f, theta0)
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(rev))
    assert np.max(np.abs(rev)) > 1e-3, "degenerate check: all derivatives vanish"
    assert _rel(fwd, rev) <= MODE_RTOL, (
        f"forward vs reverse mode: {_rel(fwd, rev):.2e}\n{fwd}\n{rev}"
    )
    assert _rel(rev, fd) <= FD_RTOL, (
        f"reverse mode vs finite differences: {_rel(rev, fd):.2e}\n{rev}\n{fd}"
    )
    return rev


# --------------------------------------------------------------------------------------------------
# The deterministic flows of docs/theory.md §4-5, integrated together as one product system (one compiled solve
# per mode: Diffrax's machinery, not the vector fields, dominates the compile time).
# theta = (a, s, kappa, c, p): net0 = gaussian(key, widths, s) + a V; loss values + c dv; Schatten p.
# --------------------------------------------------------------------------------------------------


class _Product(eqx.Module):
    """The flows side by side: ``d/dt (y_1, ..., y_m) = (flow_1(y_1), ..., flow_m(y_m))``."""

    parts: tuple

    def __call__(self, t, ys, args=None):
        return tuple(f(t, y, args) for f, y in zip(self.parts, ys))


def _net0(widths, a, s):
    base = dlnjax.gaussian(jr.PRNGKey(1), widths, s)
    V = _direction(base, 2)
    return jax.tree_util.tree_map(lambda w, v: w + a * v, base, V)


def _deterministic_flows(th):
    a, s, kappa, c, p = th
    loss = _loss((4, 4))
    l = _with_values(loss, _direction(loss.values, 3), c)
    sq = _loss((3, 3))
    X0 = dlnjax.end_to_end(_net0((4, 4, 4), a, s))
    parts = {
        "Gradient": (flows.Gradient(l), _net0(WIDTHS, a, s)),
        "Regularized": (flows.Regularized(l, kappa), _net0(WIDTHS, a, s)),
        "FiberL2": (flows.FiberL2(FIBER_SOLVER), _net0(SQUARE, a, s)),
        "FiberSchatten": (flows.FiberSchatten(p, FIBER_SOLVER), _net0(SQUARE, a, s)),
        "KirwanNess": (flows.KirwanNess(), _net0(SQUARE, a, s)),
        "EndToEnd(3)": (flows.EndToEnd(l, 3, kappa), X0),
        "EndToEnd(inf)": (flows.EndToEnd(l, math.inf, kappa), X0),
        # a complex state (integrated through simulate's real view) with complex data
        "complex Regularized": (flows.Regularized(_complex_loss(), kappa), _complex_net0(a, s)),
    }
    return l, sq, parts


def _complex_loss():
    return dlnjax.losses.Factorization(
        jnp.asarray(np.random.default_rng(0).standard_normal((3, 3)) * (1 + 0.5j))
    )


def _complex_net0(a, s):
    base = dlnjax.gaussian(jr.PRNGKey(1), (3, 3, 3), 1.0, dtype=jnp.complex128)
    return jax.tree_util.tree_map(lambda w, v: s * w + a * v, base, _direction(base, 2))


# Two groups, one compiled program each (reverse mode; forward mode and the FD stencil): the second runs with
# ``-m slow`` only, to keep the default run short.
GROUPS = {
    "core": ["Gradient", "Regularized", "FiberL2", "KirwanNess", "EndToEnd(inf)"],
    "more": ["Gradient+sharpness", "FiberSchatten", "EndToEnd(3)", "complex Regularized"],
}
PARAMS = {  # which parameters each flow depends on (columns of theta = (a, s, kappa, c, p))
    "Gradient": [0, 1, 3],
    "Regularized": [0, 1, 2, 3],
    "FiberL2": [0, 1],
    "KirwanNess": [0, 1],
    "EndToEnd(inf)": [0, 1, 2, 3],
    "Gradient+sharpness": [0, 1, 3],
    "FiberSchatten": [0, 1, 4],
    "EndToEnd(3)": [0, 1, 2, 3],
    "complex Regularized": [0, 1, 2],
}


def _deterministic_outcomes(th, adjoint, names):
    l, sq, parts = _deterministic_flows(th)
    parts["Gradient+sharpness"] = parts["Gradient"]
    flow = _Product(tuple(parts[n][0] for n in names))
    ys = _simulate(flow, tuple(parts[n][1] for n in names), adjoint)[-1]
    rows = []
    for n, y in zip(names, ys):
        if n in ("Gradient", "Regularized", "Gradient+sharpness"):
            rows.append(_net_outcomes(l, y, sharpness=n == "Gradient+sharpness"))
        elif n in (
            "FiberL2",
            "FiberSchatten",
            "KirwanNess",
        ):  # X is constant: the loss of X(0); the moments move
            row = [dlnjax.balancedness(y), dlnjax.squared_norm(y), sq(dlnjax.end_to_end(y))]
            if n == "FiberSchatten":
                row.append(dlnjax.schatten_regularizer(y, 1.5))
            rows.append(jnp.stack(row))
        elif n.startswith("EndToEnd"):
            rows.append(
                jnp.stack([l(y), l.test_error(y), dlnjax.effective_rank(y), jnp.linalg.norm(y)])
            )
        else:
            rows.append(jnp.stack([_complex_loss()(dlnjax.end_to_end(y)), dlnjax.balancedness(y)]))
    return rows


_CACHE = {}


def _group(group):
    if group not in _CACHE:
        names = GROUPS[group]
        f = lambda th, adjoint: jnp.concatenate(_deterministic_outcomes(th, adjoint, names))
        rev, fwd, fd, _ = _derivatives(f, [0.0, 0.6, 0.3, 0.0, 1.5])
        sizes = [
            sd.shape[0]
            for sd in jax.eval_shape(
                lambda th: _deterministic_outcomes(th, None, names), jnp.zeros(5)
            )
        ]
        starts = np.cumsum([0] + sizes)
        _CACHE[group] = {
            n: (rev[i:j], fwd[i:j], fd[i:j]) for n, i, j in zip(names, starts[:-1], starts[1:])
        }
    return _CACHE[group]


@pytest.mark.parametrize(
    "group, name",
    [(g, n) for n in GROUPS["core"] for g in ["core"]]
    + [pytest.param("more", n, marks=pytest.mark.slow) for n in GROUPS["more"]],
)
def test_flow_derivatives_reverse_forward_and_finite_differences(group, name):
    # d/d(initial weights along V), d/d(init scale), d/dkappa, d/d(data), d/dp: reverse (checkpointed) and
    # forward mode agree to round-off, and both match finite differences to 1e-6.
    rev_all, fwd, fd = _group(group)[name]
    cols = PARAMS[name]
    rev, fwd, fd = rev_all[:, cols], fwd[:, cols], fd[:, cols]
    assert np.all(np.isfinite(rev_all))
    assert np.all(np.max(np.abs(rev), axis=0) > 1e-4), f"{name}: a parameter has no effect: {rev}"
    assert _rel(fwd, rev) <= MODE_RTOL, f"{name}: forward vs reverse mode {_rel(fwd, rev):.2e}"
    assert _rel(rev, fd) <= FD_RTOL, (
        f"{name}: reverse mode vs finite differences {_rel(rev, fd):.2e}\n{rev}\n{fd}"
    )
    # parameters a flow does not see have derivative zero
    others = [j for j in range(5) if j not in cols]
    assert np.all(rev_all[:, others] == 0), rev_all


# FiberSchatten runs the same CG solve (20 s): slow
@pytest.mark.parametrize(
    "flow",
    [flows.FiberL2(), pytest.param(flows.FiberSchatten(1.5), marks=pytest.mark.slow)],
    ids=["FiberL2", "FiberSchatten"],
)
def test_fiber_default_cg_solve_differentiates(flow):
    # One vector-field evaluation (no solve around it: cheap), with the default preconditioned CG: its
    # preconditioner and warm start are held out of autodiff, the solve is differentiated implicitly by Lineax.
    net, V = _net0(SQUARE, 0.0, 0.8), _direction(_net0(SQUARE, 0.0, 0.8), 5)

    def g(t):
        v = flow(0.0, jax.tree_util.tree_map(lambda w, d: w + t * d, net, V))
        return jnp.stack([jnp.sum(x * y) for x, y in zip(v.arrays(), V.arrays())])

    rev = jax.jacrev(g)(0.0)
    _, fwd = jax.jvp(g, (0.0,), (1.0,))
    h = 1e-3
    fd = (g(-2 * h) - 8 * g(-h) + 8 * g(h) - g(2 * h)) / (12 * h)
    np.testing.assert_allclose(fwd, rev, rtol=MODE_RTOL)
    np.testing.assert_allclose(rev, fd, rtol=FD_RTOL)


@pytest.mark.slow
def test_langevin_pathwise_d_beta_and_kappa():
    # Pathwise derivative: the Brownian path (a VirtualBrownianTree of a fixed key) is held fixed.
    loss = _loss((4, 4))
    dv = _direction(loss.values, 3)
    key = jr.PRNGKey(7)

    def f(th, adjoint):
        a, s, kappa, beta, c = th
        l = _with_values(loss, dv, c)
        tr = dlnjax.simulate(
            flows.Langevin(l, kappa, beta),
            _net0(WIDTHS, a, s),
            jnp.array([0.0, T]),
            dt0=DT,
            key=key,
            adjoint=adjoint,
        )
        return _net_outcomes(l, tr[-1])

    theta0 = jnp.array([0.0, 0.6, 0.3, 20.0, 0.0])
    J = _check(f, theta0)
    assert np.all(J[:, 3] != 0) and np.all(J[:, 2] != 0)
    # BacksolveAdjoint works for this SDE (Heun is a Stratonovich solver; the noise is additive): it solves the
    # continuous adjoint SDE backwards on the same Brownian path, so it agrees to O(dt) only.
    bs = np.asarray(
        jax.jit(
            jax.jacrev(lambda th: f(th, dfx.BacksolveAdjoint())), compiler_options=FAST_COMPILE
        )(theta0)
    )
    assert _rel(bs, J) <= 2e-2, f"BacksolveAdjoint vs RecursiveCheckpointAdjoint {_rel(bs, J):.2e}"


# --------------------------------------------------------------------------------------------------
# train: d/d learning rate, init scale, data (a lax.scan: both modes work without an adjoint)
# --------------------------------------------------------------------------------------------------


def test_train_d_learning_rate_init_scale_and_data():
    loss = dlnjax.losses.Regression.random(jr.PRNGKey(0), 12, 4, 1, noise=0.3)
    dy = _direction(loss.targets, 3)
    widths = (4, 3, 3, 1)

    def f(th, adjoint):
        del adjoint
        lr, s, a, c = th
        l = eqx.tree_at(lambda l: l.targets, loss, loss.targets + c * dy)
        res = dlnjax.train(
            l,
            _net0(widths, a, s),
            optax.sgd(lr),
            30,
            metrics=("loss", "test_error", "balancedness"),
        )
        return jnp.stack(
            [
                res.history["loss"][-1],
                res.history["test_error"][-1],
                res.history["balancedness"][-1],
            ]
        )

    J = _check(f, [0.05, 0.6, 0.0, 0.0])
    assert np.all(J[:, 0] != 0)


# --------------------------------------------------------------------------------------------------
# The horizon: d/dT o(y(T)) = <grad o(y(T)), flow(T, y(T))>
# --------------------------------------------------------------------------------------------------


def test_horizon_derivative_equals_vector_field_dotted_with_outcome_gradient():
    loss = _loss((4, 4))
    flow = flows.Regularized(loss, 0.2)
    net0 = _net0(WIDTHS, 0.0, 0.6)
    n = 40  # constant steps h = T / n: d/dT of the discrete solution is the flow up to O(h^5)

    def final(T, adjoint):
        return dlnjax.simulate(
            flow, net0, jnp.linspace(0.0, T, 3), solver=dfx.Tsit5(), dt0=T / n, adjoint=adjoint
        )[-1]

    def outcome(net):
        X = dlnjax.end_to_end(net)
        return jnp.stack([loss(X), loss.test_error(X), dlnjax.balancedness(net)])

    h = 1e-3
    offsets = jnp.array([0.0, -2.0, -1.0, 1.0, 2.0])

    @ft.partial(jax.jit, compiler_options=FAST_COMPILE)
    def run(T):
        rev = jax.jacrev(lambda T: outcome(final(T, None)))(T)
        # forward mode at T and the stencil points, one vmapped program; it returns y(T) too
        g = lambda T: (lambda y: (outcome(y), y))(final(T, dfx.ForwardMode()))
        (o, y), (do, _) = jax.vmap(lambda x, v: jax.jvp(g, (x,), (v,)))(
            T + h * offsets, (offsets == 0).astype(float)
        )
        yT = jax.tree_util.tree_map(lambda a: a[0], y)
        _, chain = jax.jvp(outcome, (yT,), (flow(T, yT),))
        fd = (o[1] - 8 * o[2] + 8 * o[3] - o[4]) / (12 * h)
        return rev, do[0], chain, fd

    rev, fwd, chain, fd = (np.asarray(x) for x in run(1.0))
    assert np.max(np.abs(rev)) > 1e-2
    np.testing.assert_allclose(fwd, rev, rtol=MODE_RTOL)
    np.testing.assert_allclose(rev, fd, rtol=FD_RTOL)
    np.testing.assert_allclose(rev, chain, rtol=FD_RTOL)


# --------------------------------------------------------------------------------------------------
# BacksolveAdjoint: the continuous adjoint agrees with the checkpointed one to the solver's tolerance
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_backsolve_adjoint_agrees_with_checkpointed():
    # A real weight flow (d/dkappa, d/d data), a fiber flow (Lineax solves inside the adjoint equations) and a
    # complex state (the real view) side by side, adaptive and tight: agreement to the tolerance.
    loss = _loss((4, 4))
    dv = _direction(loss.values, 3)
    sq_target = jnp.asarray(np.random.default_rng(0).standard_normal((3, 3)))
    closs = dlnjax.losses.Factorization(sq_target)  # real data, complex weights
    cbase = dlnjax.gaussian(jr.PRNGKey(1), (3, 3, 3), 0.6, dtype=jnp.complex128)

    def f(th, adjoint):
        a, s, kappa, c = th
        l = _with_values(loss, dv, c)
        flow = _Product(
            (
                flows.Regularized(l, kappa),
                flows.FiberL2(FIBER_SOLVER),
                flows.Regularized(closs, kappa),
            )
        )
        y0 = (
            _net0(WIDTHS, a, s),
            _net0(SQUARE, a, s),
            jax.tree_util.tree_map(lambda w: s * w, cbase),
        )
        y = _simulate(flow, y0, adjoint, solver=dfx.Tsit5(), rtol=1e-10, atol=1e-12, dt0=None)[-1]
        return jnp.concatenate(
            [
                _net_outcomes(l, y[0]),
                jnp.stack([dlnjax.balancedness(y[1]), dlnjax.squared_norm(y[1])]),
                jnp.stack([closs(dlnjax.end_to_end(y[2])), dlnjax.balancedness(y[2])]),
            ]
        )

    @ft.partial(jax.jit, compiler_options=FAST_COMPILE)
    def run(th):
        return jax.jacrev(lambda x: f(x, None))(th), jax.jacrev(
            lambda x: f(x, dfx.BacksolveAdjoint())
        )(th)

    rc, bs = (np.asarray(x) for x in run(jnp.array([0.0, 0.6, 0.3, 0.0])))
    assert np.all(np.isfinite(rc)) and np.max(np.abs(rc)) > 1e-3
    assert _rel(bs, rc) <= 1e-5, (
        f"BacksolveAdjoint vs RecursiveCheckpointAdjoint {_rel(bs, rc):.2e}"
    )


@pytest.mark.slow  # 28 s; Diffrax's checkpointing; the default adjoint is checked against finite differences above
def test_checkpoint_count_changes_cost_not_gradient():
    # simulate's docstring: RecursiveCheckpointAdjoint(checkpoints=c) trades memory for recomputation only. One
    # checkpoint (the most recomputation), the default (~sqrt(2 n)) and every step (none) give one gradient.
    loss = _loss((4, 4))
    n = 20

    def grad(adjoint):
        f = lambda net: loss(
            dlnjax.end_to_end(_simulate(flows.Gradient(loss), net, adjoint, max_steps=n)[-1])
        )
        return jax.grad(f)(_net0(WIDTHS, 0.0, 0.6))

    @ft.partial(jax.jit, compiler_options=FAST_COMPILE)
    def run():
        return [grad(dfx.RecursiveCheckpointAdjoint(checkpoints=c)) for c in (None, 1, n)]

    default, one, every = ([np.asarray(x) for x in jax.tree_util.tree_leaves(g)] for g in run())
    assert max(np.max(np.abs(x)) for x in default) > 1e-2
    for other in (one, every):
        for a, b in zip(other, default):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------------------------------
# Unsupported combinations raise clear errors
# --------------------------------------------------------------------------------------------------


def test_unsupported_adjoint_combinations_raise():
    loss = _loss((4, 4))
    net0 = _net0(WIDTHS, 0.0, 0.6)

    def final_loss(T, adjoint, flow=flows.Gradient(loss), y0=net0):
        return loss(dlnjax.end_to_end(_simulate(flow, y0, adjoint, dt0=0.5)[-1]))

    with pytest.raises(TypeError, match="adjoint must be a diffrax adjoint"):
        dlnjax.simulate(flows.Gradient(loss), net0, jnp.array([0.0, 1.0]), adjoint="backsolve")
    # the horizon with BacksolveAdjoint
    with pytest.raises(ValueError, match="BacksolveAdjoint.*save times"):
        jax.grad(
            lambda T: loss(
                dlnjax.end_to_end(
                    dlnjax.simulate(
                        flows.Gradient(loss),
                        net0,
                        jnp.stack([0.0, T]),
                        dt0=0.5,
                        adjoint=dfx.BacksolveAdjoint(),
                    )[-1]
                )
            )
        )(1.0)
    # complex arrays inside the flow with BacksolveAdjoint
    closs = dlnjax.losses.Factorization(jnp.eye(3, dtype=jnp.complex128))
    cnet = dlnjax.gaussian(jr.PRNGKey(1), (3, 3, 3), 0.6, dtype=jnp.complex128)
    with pytest.raises(ValueError, match="BacksolveAdjoint.*complex"):
        dlnjax.simulate(
            flows.Gradient(closs), cnet, jnp.array([0.0, 1.0]), adjoint=dfx.BacksolveAdjoint()
        )
    # forward mode needs ForwardMode; reverse mode cannot use it (Diffrax's own errors, documented in simulate)
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(
            lambda s: final_loss(1.0, None, y0=jax.tree_util.tree_map(lambda w: s * w, net0)),
            (1.0,),
            (1.0,),
        )
    with pytest.raises(ValueError, match="Reverse-mode differentiation does not work"):
        jax.grad(
            lambda s: final_loss(
                1.0, dfx.ForwardMode(), y0=jax.tree_util.tree_map(lambda w: s * w, net0)
            )
        )(1.0)
