"""`dlnjax.Stiff`: the Newton–Krylov ESDIRK solver, against exact aligned solutions, Tsit5 and finite differences."""

import math

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import lineax as lx
import numpy as np
import optimistix as optx
import pytest
from conftest import RUN_BOUND
from scipy.integrate import solve_ivp

jax.config.update("jax_enable_x64", True)

import dlnjax  # noqa: E402
from dlnjax.internal import aligned_singular_values  # noqa: E402

INF = math.inf
M_SINGULAR = np.array(
    [1.0, 0.4, 0.1, 0.0, 0.0]
)  # settled, escaping and vanishing modes, some m_i = 0
SCALES = np.array([1e-2, 1e-4, 1e-6, 1e-8, 1e-10])


def _frames(n, seed=0, complex_=False, shape=None):
    rng = np.random.default_rng(seed)
    dN, d0 = shape or (n, n)
    draw = lambda k: rng.normal(size=(k, k)) + (1j * rng.normal(size=(k, k)) if complex_ else 0)
    U, _ = np.linalg.qr(draw(dN))
    V, _ = np.linalg.qr(draw(d0))
    return U, V


def _embed(U, s, V):
    dN, d0 = U.shape[0], V.shape[0]
    D = np.zeros((dN, d0), complex if np.iscomplexobj(U) else float)
    D[np.arange(len(s)), np.arange(len(s))] = s
    return U @ D @ V.conj().T


def _horizon(depth, scale, mmin=0.1):
    """Beyond the last escape (of the mode with m = mmin from ``scale``): t ~ s0^-(1-2/N) / (c m)."""
    if depth == INF:
        return 50.0 / (scale * mmin)
    if depth == 2:
        return 20.0 * math.log(1 / scale) / mmin
    return 50.0 * scale ** -(1 - 2 / depth) / (depth * mmin)


# N = 3 and N = 8 (the quadrature references) are slow: N = 2 (logistic) and N = inf (closed forms) stay default
@pytest.mark.parametrize(
    "depth",
    [2, pytest.param(3, marks=pytest.mark.slow), pytest.param(8, marks=pytest.mark.slow), INF],
)
def test_stiff_follows_the_exact_aligned_solution_through_every_escape(depth):
    """E = ½||X - M||², X0 = U diag(s0) V^T: the solve (not told the start is aligned) matches the decoupled scalar
    solutions at scales 1e-2 ... 1e-10, every singular value, every save time, and passes every escape."""
    n = len(M_SINGULAR)
    U, V = _frames(n)
    M = jnp.asarray(_embed(U, M_SINGULAR, V))
    flow = dlnjax.flows.EndToEnd(lambda X: 0.5 * jnp.sum((X - M) ** 2), depth)
    shape = np.linspace(1.0, 0.6, n)
    T = _horizon(depth, SCALES.min())
    ts = np.concatenate([[0.0], np.geomspace(1e-2, T, 48)])
    X0s = jnp.stack([jnp.asarray(_embed(U, s * shape, V)) for s in SCALES])
    solve = jax.jit(
        jax.vmap(
            lambda X0: dlnjax.simulate(
                flow, X0, ts, solver=dlnjax.Stiff(), rtol=1e-8, atol=1e-30, max_steps=20000
            )
        ),
        compiler_options=RUN_BOUND,
    )
    traj = solve(X0s)
    assert np.all(np.asarray(traj.success))
    for k, s in enumerate(SCALES):
        ref = aligned_singular_values(M_SINGULAR, s * shape, depth, ts)  # (T, n)
        core = np.einsum("ia,tij,jb->tab", U, np.asarray(traj.ys[k]), V)  # U^T X(t) V
        diag = np.diagonal(core, axis1=1, axis2=2)
        # 1e-4 relative in the value or in the time (a steep escape turns a relative time shift dt/t into
        # t |s'| dt/t), above the SVD's rounding floor: no singular value is resolved better than ~ 1e3 eps ||X||,
        # i.e. 1e3 eps / s0 relative at the start, which shifts the escape times of the smallest starts by as much
        c, q = (1.0, 2.0) if depth == INF else (depth, 2 - 2 / depth)
        speed = c * ref**q * np.abs(M_SINGULAR - ref)
        floor = 1e3 * np.finfo(float).eps / (s * shape.min())
        allowed = 1e-4 * ref + (1e-4 + floor) * ts[:, None] * speed + 1e-13
        bad = np.abs(diag - ref) / allowed
        assert np.all(bad <= 1), (
            s,
            bad.max(),
            np.unravel_index(np.argmax(bad), bad.shape),
            ts[np.unravel_index(np.argmax(bad), bad.shape)[0]],
        )
        off = core - np.einsum("ta,ab->tab", diag, np.eye(n))
        assert np.all(np.abs(off).max(axis=(1, 2)) <= 1e-6 * np.abs(diag).max(axis=1) + 1e-13)
        # every escape happened within the horizon: the modes with m_i > 0 end at m_i, those with m_i = 0 below s0
        live = M_SINGULAR > 0
        assert np.allclose(diag[-1, live], M_SINGULAR[live], rtol=1e-6)
        # and the solve went through each escape: every live mode was below 1% of its target at some save time
        assert np.all(np.min(diag[:, live] / M_SINGULAR[live], axis=0) < 1e-2 + (s == SCALES[0]))


def test_the_aligned_reference_agrees_with_an_independent_ode_solve():
    """The closed forms and the quadrature of `aligned_singular_values` against SciPy's Radau on the scalar ODEs."""
    m = np.array([1.0, 0.3, 0.0])
    s0 = np.array([1e-3, 2e-3, 1e-3])
    ts = np.array([0.0, 10.0, 1e2, 1e3, 1e4, 3e4])
    for depth in (2, 3, 8, INF):
        c, q = (1.0, 2.0) if depth == INF else (depth, 2 - 2 / depth)
        sol = solve_ivp(
            lambda t, s: -c * np.abs(s) ** q * (s - m),
            (0, ts[-1]),
            s0,
            t_eval=ts,
            method="Radau",
            rtol=1e-12,
            atol=1e-20,
        )
        ref = aligned_singular_values(m, s0, depth, ts)
        assert np.max(np.abs(sol.y.T - ref) / ref) < 1e-9, depth
    with pytest.raises(ValueError, match="same length"):
        aligned_singular_values([1.0], [1e-3, 1e-3], 3, [0.0])
    with pytest.raises(ValueError, match="s0 > 0"):
        aligned_singular_values([1.0], [0.0], 3, [0.0])
    with pytest.raises(ValueError, match="depth"):
        aligned_singular_values([1.0], [1e-3], 0, [0.0])


@pytest.mark.parametrize(
    "complex_, shape", [pytest.param(False, (4, 6), marks=pytest.mark.slow), (True, (5, 5))]
)
def test_stiff_on_rectangular_and_complex_aligned_problems(complex_, shape):
    """Rectangular real and square complex X at N = inf, scale 1e-6, against the exact solution."""
    m = np.array([1.0, 0.3, 0.0, 0.0])
    U, V = _frames(None, seed=3, complex_=complex_, shape=shape)
    M = jnp.asarray(_embed(U, m, V))
    flow = dlnjax.flows.EndToEnd(lambda X: 0.5 * jnp.sum(jnp.abs(X - M) ** 2), INF)
    s0 = 1e-6 * np.array([1.0, 0.9, 0.8, 0.7])
    ts = np.concatenate([[0.0], np.geomspace(1.0, _horizon(INF, 1e-6, 0.3), 30)])
    traj = dlnjax.simulate(
        flow,
        jnp.asarray(_embed(U, s0, V)),
        ts,
        solver=dlnjax.Stiff(),
        rtol=1e-8,
        atol=1e-30,
        max_steps=20000,
    )
    assert bool(traj.success)
    core = np.einsum("ia,tij,jb->tab", U.conj(), np.asarray(traj.ys), V)
    diag = np.diagonal(core, axis1=1, axis2=2)[:, : len(m)]
    ref = aligned_singular_values(m, s0, INF, ts)
    assert np.max(np.abs(diag - ref) / ref) < 1e-4


def _completion(n=8, rank=1, observed=40):
    return dlnjax.losses.MatrixCompletion.random(jr.PRNGKey(1), (n, n), rank, observed)


@pytest.mark.parametrize("depth", [pytest.param(3, marks=pytest.mark.slow), INF])
def test_stiff_equals_tsit5_on_a_completion_at_finite_and_infinite_depth(depth):
    loss = _completion()
    Q = jr.normal(jr.PRNGKey(0), loss.shape)
    X0 = 1e-2 * Q / jnp.linalg.norm(Q)
    ts = jnp.array([0.0, 1e2, 1e3, 1e4, 1e5])
    flow = dlnjax.flows.EndToEnd(loss, depth)
    stiff = dlnjax.simulate(
        flow, X0, ts, solver=dlnjax.Stiff(), rtol=1e-9, atol=1e-14, max_steps=20000
    )
    ref = dlnjax.simulate(flow, X0, ts, rtol=1e-11, atol=1e-16, max_steps=200000)
    assert bool(stiff.success) and bool(ref.success)
    err = jnp.linalg.norm(stiff.ys - ref.ys, axis=(1, 2)) / jnp.linalg.norm(ref.ys, axis=(1, 2))
    assert float(jnp.max(err[1:])) < 1e-6, depth
    assert int(stiff.stats["num_accepted_steps"]) < int(ref.stats["num_accepted_steps"]) / 5


@pytest.mark.parametrize(
    "flow_cls", [pytest.param("Gradient", marks=pytest.mark.slow), "Regularized"]
)
def test_stiff_on_the_weight_flows(flow_cls):
    """The weight flows of a depth-3 network (no preconditioner: plain GMRES, elementwise error) against Tsit5."""
    loss = _completion(n=5, rank=2, observed=15)
    net0 = dlnjax.fiber_center(0.1 * jr.normal(jr.PRNGKey(0), loss.shape) / 5, 3)
    flow = (
        dlnjax.flows.Gradient(loss)
        if flow_cls == "Gradient"
        else dlnjax.flows.Regularized(loss, 1e-3)
    )
    ts = jnp.array([0.0, 10.0, 1e2, 1e3, 1e4])
    stiff = dlnjax.simulate(
        flow, net0, ts, solver=dlnjax.Stiff(), rtol=1e-9, atol=1e-13, max_steps=20000
    )
    ref = dlnjax.simulate(flow, net0, ts, rtol=1e-11, atol=1e-15, max_steps=200000)
    assert bool(stiff.success) and bool(ref.success)
    for a, b in zip(jax.tree_util.tree_leaves(stiff.ys), jax.tree_util.tree_leaves(ref.ys)):
        assert float(jnp.max(jnp.abs(a - b))) < 1e-6 * float(jnp.max(jnp.abs(b)))
    assert int(stiff.stats["num_accepted_steps"]) < int(ref.stats["num_accepted_steps"]) / 3


def test_vmap_reports_each_run_and_a_failed_run_leaves_the_others_intact():
    """Under jit + vmap one start runs out of steps (success False, not a silently wrong state) while the other
    equals its own unbatched solve."""
    n = 4
    U, V = _frames(n, seed=5)
    m = np.array([1.0, 0.5, 0.0, 0.0])
    M = jnp.asarray(_embed(U, m, V))
    flow = dlnjax.flows.EndToEnd(lambda X: 0.5 * jnp.sum((X - M) ** 2), INF)
    ts = jnp.array([0.0, 1e2, 1e4, 1e6, 1e8])
    X0s = jnp.stack([jnp.asarray(_embed(U, s * np.ones(n), V)) for s in (1e-1, 1e-8)])
    run = lambda X0, k: dlnjax.simulate(
        flow, X0, ts, solver=dlnjax.Stiff(), rtol=1e-8, atol=1e-30, max_steps=k
    )
    alone = jax.jit(run, static_argnums=1)(X0s[0], 10000)
    needed = int(alone.stats["num_steps"])
    batch = jax.jit(jax.vmap(run, in_axes=(0, None)), static_argnums=1)(X0s, needed + 5)
    assert np.asarray(batch.success).tolist() == [True, False]
    assert np.allclose(np.asarray(batch.ys[0]), np.asarray(alone.ys), rtol=1e-10, atol=1e-14)
    ref = aligned_singular_values(m, 1e-1 * np.ones(n), INF, ts)
    assert np.allclose(
        np.diagonal(np.einsum("ia,tij,jb->tab", U, np.asarray(batch.ys[0]), V), axis1=1, axis2=2),
        ref,
        rtol=1e-4,
    )


def test_grad_through_a_stiff_solve_matches_finite_differences():
    """Reverse mode (RecursiveCheckpointAdjoint, stage roots differentiated implicitly) against central differences
    of an independent tight Tsit5 solve, for a derivative in the initial scale and one in the target."""
    loss0 = _completion(n=4, rank=1, observed=10)
    Q = jr.normal(jr.PRNGKey(2), loss0.shape)
    Q = Q / jnp.linalg.norm(Q)
    ts = jnp.array([0.0, 3e3])

    def final_loss(solver, p):
        scale, shift = p
        loss = eqx.tree_at(lambda l: l.values, loss0, loss0.values + shift)
        flow = dlnjax.flows.EndToEnd(loss, INF)
        kw = dict(rtol=1e-10, atol=1e-16, max_steps=50000)
        traj = dlnjax.simulate(flow, scale * Q, ts, solver=solver, **kw)
        return loss(traj.ys[-1])

    p = jnp.array([1e-2, 0.0])
    g = jax.jit(jax.grad(lambda p: final_loss(dlnjax.Stiff(), p)))(p)
    f = jax.jit(lambda p: final_loss(None, p))
    for i, h in enumerate((1e-5, 1e-5)):
        e = jnp.zeros(2).at[i].set(h)
        fd = (f(p + e) - f(p - e)) / (2 * h)
        assert abs(float(g[i] - fd)) < 1e-4 * abs(float(fd)), (i, float(g[i]), float(fd))


def _stage_args(flow, X, gamma):
    """Diffrax's f-space stage arguments for ``f - flow(t, X + gamma f)`` (what an ESDIRK stage hands its root finder)."""
    return (
        0,
        jnp.asarray(gamma),
        flow,
        lambda f, c: f * c,
        jnp.asarray(0.0),
        X,
        None,
        jnp.asarray(1.0),
    )


def _stage_fn(f, a):
    _, diag, vf, prod, t, y, args, control = a
    return f - vf(t, y + diag * prod(f, control), args)


def test_newton_krylov_solves_a_stage_and_fails_loudly_when_krylov_cannot():
    """The root finder converges on an implicit stage (checked against the residual), and with a one-step Krylov
    budget on the same stiff stage it returns a failure code instead of an unconverged root."""
    loss = _completion()
    flow = dlnjax.flows.EndToEnd(loss, INF)
    X = jnp.asarray(loss.truth) * (
        1 + 1e-4 * jr.normal(jr.PRNGKey(3), loss.shape)
    )  # near the fit: the stiff tail
    args = _stage_args(flow, X, 1e3)
    good = dlnjax.internal.NewtonKrylov(rtol=1e-8, atol=1e-12, field=flow)
    sol = optx.root_find(_stage_fn, good, jnp.zeros_like(X), args, throw=False, max_steps=20)
    assert sol.result == optx.RESULTS.successful
    res = _stage_fn(sol.value, args)
    assert float(jnp.linalg.norm(res)) < 1e-7 * float(jnp.linalg.norm(sol.value))
    starved = dlnjax.internal.NewtonKrylov(rtol=1e-8, atol=1e-12, field=flow, krylov_max_steps=1)
    bad = optx.root_find(_stage_fn, starved, jnp.zeros_like(X), args, throw=False, max_steps=20)
    assert bad.result != optx.RESULTS.successful


class _ScalarStiffField(eqx.Module):
    """``field(t, y) = c - 2 y`` with the identity as its "preconditioner": the stage's Newton matrix is
    ``(1 + 2 gamma h) I``, so every Krylov space is one-dimensional."""

    c: jax.Array

    def __call__(self, t, y, args=None):
        return self.c - 2.0 * y

    def stiff_preconditioner(self, t, y, args, gamma):
        return lx.IdentityLinearOperator(jax.eval_shape(lambda: y))


def test_a_bicgstab_breakdown_falls_back_to_its_exact_half_step():
    """Newton matrix 2 I (gamma h = 1/2), preconditioner I, right-hand side of ones: BiCGStab's half step is exact,
    alpha = 1/2 and s = b - alpha 2 b = 0 exactly (powers of two: no rounding, FMA or not), so Lineax's
    omega = <s, t>/<t, t> is 0/0 and its solution NaN (checked below, so that this test keeps exercising the
    breakdown). The correction must then be the residual-minimizing multiple of P b, b/2 (the preconditioner's own
    P b = b leaves the residual b: the stage used to fail), and the root the exact stage derivative."""
    b = jnp.ones((3, 2))
    breakdown = lx.linear_solve(
        lx.MatrixLinearOperator(2.0 * jnp.eye(6)),
        b.reshape(-1),
        lx.BiCGStab(rtol=0.0, atol=1e-3, max_steps=40),
        options={"preconditioner": lx.IdentityLinearOperator(jax.ShapeDtypeStruct((6,), b.dtype))},
        throw=False,
    )
    assert not bool(jnp.all(jnp.isfinite(breakdown.value)))
    field = _ScalarStiffField(c=jnp.full((3, 2), 4.0))
    y = jnp.full((3, 2), 1.0)
    args = _stage_args(field, y, 0.5)  # f - (c - 2 (y + f / 2)) = 0: f = (c - 2 y) / 2 = 1
    finder = dlnjax.internal.NewtonKrylov(rtol=1e-8, atol=1e-12, field=field, krylov="bicgstab")
    sol = optx.root_find(_stage_fn, finder, jnp.zeros_like(y), args, throw=False, max_steps=10)
    assert sol.result == optx.RESULTS.successful
    np.testing.assert_allclose(np.asarray(sol.value), np.ones((3, 2)), rtol=1e-14, atol=0)


# slow (30 s); test_newton_krylov_solves_a_stage_and_fails_loudly_when_krylov_cannot covers a failing Krylov solve
@pytest.mark.slow
def test_a_starved_krylov_solver_is_caught_not_wrong():
    """With one GMRES step per correction the corrections fail their check on the stiff tail: those steps are
    rejected (more rejections than the default), and the run either ends with success False or is accurate."""
    loss = _completion()
    flow = dlnjax.flows.EndToEnd(loss, INF)
    Q = jr.normal(jr.PRNGKey(0), loss.shape)
    X0 = 1e-3 * Q / jnp.linalg.norm(Q)
    ts = jnp.array([0.0, 1e5, 1e7])
    kw = dict(rtol=1e-8, atol=1e-14, max_steps=3000)
    default = dlnjax.simulate(flow, X0, ts, solver=dlnjax.Stiff(), **kw)
    starved = dlnjax.simulate(flow, X0, ts, solver=dlnjax.Stiff(krylov_max_steps=1), **kw)
    assert bool(default.success)
    assert int(starved.stats["num_rejected_steps"]) > int(default.stats["num_rejected_steps"])
    if bool(starved.success):
        assert float(jnp.linalg.norm(starved.ys[-1] - default.ys[-1])) < 1e-5 * float(
            jnp.linalg.norm(default.ys[-1])
        )
    else:
        assert starved.result != dfx.RESULTS.successful
    tiny = dlnjax.simulate(
        flow, X0, ts, solver=dlnjax.Stiff(krylov_max_steps=1), rtol=1e-8, atol=1e-14, max_steps=20
    )
    assert not bool(tiny.success)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="scheme"):
        dlnjax.Stiff(scheme="rk4")
    with pytest.raises(ValueError, match="krylov_restart"):
        dlnjax.Stiff(krylov_restart=0)
    with pytest.raises(ValueError, match="kappa"):
        dlnjax.Stiff(kappa=2.0)
    loss = _completion()
    flow = dlnjax.flows.EndToEnd(loss, INF)
    X0 = 1e-2 * jnp.ones(loss.shape)
    with pytest.raises(ValueError, match="dt0"):
        dlnjax.simulate(flow, X0, jnp.array([0.0, 1.0]), solver=dlnjax.Stiff(), dt0=0.1)
    net = dlnjax.fiber_center(jnp.eye(2), 2)
    langevin = dlnjax.flows.Langevin(lambda X: jnp.sum(X**2), kappa=0.1, beta=10.0)
    with pytest.raises(ValueError, match="stochastic"):
        dlnjax.simulate(
            langevin, net, jnp.array([0.0, 1.0]), solver=dlnjax.Stiff(), dt0=0.1, key=jr.PRNGKey(0)
        )
    with pytest.raises(TypeError, match="Runge-Kutta stage"):
        optx.root_find(
            lambda y, a: y,
            dlnjax.internal.NewtonKrylov(rtol=1e-6, atol=1e-9),
            jnp.ones(2),
            None,
            throw=False,
        )


def test_an_exact_preconditioner_does_not_trip_the_krylov_solver():
    """Full observation from X0 = c I: every Newton correction lives in span{I} (a one-dimensional Krylov space), so
    Lineax's BiCGStab converges in its half step and, as round-off decides, divides 0/0 (NaN) after it; the
    correction is then that half step (test_a_bicgstab_breakdown_falls_back_to_its_exact_half_step). Before that
    fallback, the run depended on round-off: under LLVM -O0 every correction broke down and the run stalled."""
    flow = dlnjax.flows.EndToEnd(lambda X: 0.5 * jnp.sum((X - jnp.eye(5)) ** 2), INF)
    for scale in (1e-2, 1e-8):
        traj = dlnjax.simulate(
            flow,
            scale * jnp.eye(5),
            jnp.array([0.0, 1e10]),
            solver=dlnjax.Stiff(),
            rtol=1e-8,
            atol=1e-30,
            max_steps=2000,
        )
        assert bool(traj.success)
        assert float(jnp.max(jnp.abs(traj.ys[-1] - jnp.eye(5)))) < 1e-12
