"""dlnjax.systems flows: the moment laws (conservation under learning flows, exp(-2 kappa t) under the regularized flow,
exp(-2t) under the orbit regularizing flow), the Kirwan-Ness and Helmke-Moore fields, gradient descent's exact
eta^2 drift, Langevin's mean moment law; transfer functions constant along the balancing flows."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import rand_matrix

import dlnjax
from dlnjax import systems as S

ZS = np.array([0.5 + 1.0j, -1.5 + 2.0j, 4.0])


def system(seed, n, m, p, cplx, a_scale=0.8):
    rng = np.random.default_rng(seed)
    A = a_scale * rand_matrix(rng, (n, n), cplx) / np.sqrt(n)
    return S.LinearSystem(A, rand_matrix(rng, (n, m), cplx), rand_matrix(rng, (p, n), cplx))


def moments_along(traj):
    return np.asarray(jax.vmap(S.moment_map)(traj.ys))


TS = jnp.linspace(0.0, 2.0, 5)
TOL = dict(rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("cplx", [False, True], ids=["real", "complex"])
def test_orbit_l2_moment_law_and_invariance(cplx):
    s = system(0, 4, 2, 3, cplx)
    traj = dlnjax.simulate(S.OrbitL2(), s, TS, **TOL)
    assert bool(traj.success)
    mus = moments_along(traj)
    decay = np.exp(-2 * np.asarray(TS))[:, None, None]
    np.testing.assert_allclose(mus, decay * mus[0], atol=1e-9 * np.abs(mus[0]).max())
    H0 = S.transfer_function(s, ZS)
    for i in range(len(TS)):
        np.testing.assert_allclose(S.transfer_function(traj[i], ZS), H0, atol=1e-8)
    norms = jax.vmap(S.system_sq_norm)(traj.ys)
    assert np.all(np.diff(norms) < 0)
    # the field is -Pi_T(x): the residual x - Pi_T(x) is orthogonal to every tangent vector xi . x
    v = S.OrbitL2()(0.0, s)
    resid = jax.tree_util.tree_map(jnp.add, s, v)
    xi = rand_matrix(np.random.default_rng(1), (4, 4), cplx)
    assert abs(float(S.system_inner(S.orbit_tangent(s, xi), resid))) < 1e-10


def test_kirwan_ness_and_helmke_moore():
    s = system(2, 4, 2, 2, False)
    kn, hm = S.OrbitKirwanNess()(0.0, s), S.HelmkeMoore()(0.0, s)
    for a, b in zip(kn.arrays(), hm.arrays()):
        np.testing.assert_allclose(a, 2 * np.asarray(b), atol=1e-13)

    # Kirwan-Ness is -1/2 grad ||mu||^2 (Euclidean), mu written out here
    def half_sq(A, B, C):
        mu = A @ A.T - A.T @ A + B @ B.T - C.T @ C
        return jnp.sum(mu**2) / 2

    g = jax.grad(half_sq, argnums=(0, 1, 2))(s.A, s.B, s.C)
    for a, b in zip(kn.arrays(), g):
        np.testing.assert_allclose(a, -np.asarray(b), atol=1e-12)
    # Helmke-Moore: the normal-metric gradient of f(M) = 1/2 ||M . x||^2 at M = I is mu: df(eta) = Re Tr(eta^* mu)
    eta = rand_matrix(np.random.default_rng(3), (4, 4), False)
    f = lambda t: S.system_sq_norm(S.act(jnp.eye(4) + t * eta, s)) / 2
    df = jax.jvp(f, (0.0,), (1.0,))[1]
    np.testing.assert_allclose(df, np.sum(eta * np.asarray(S.moment_map(s))), rtol=1e-12)
    H0 = S.transfer_function(s, ZS)
    for flow in (S.OrbitKirwanNess(), S.HelmkeMoore()):
        traj = dlnjax.simulate(flow, s, TS, **TOL)
        sq = np.sum(moments_along(traj) ** 2, axis=(1, 2))
        assert bool(traj.success) and np.all(np.diff(sq) < 0)
        np.testing.assert_allclose(S.transfer_function(traj[-1], ZS), H0, atol=1e-8)


@pytest.mark.parametrize(
    "cplx", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["real", "complex"]
)
def test_learning_flows_conserve_or_scale_mu(cplx):
    s = system(4, 3, 2, 2, cplx, a_scale=0.5)
    loss = S.MarkovLoss.of(system(5, 3, 2, 2, cplx, a_scale=0.5), 6)
    traj = dlnjax.simulate(S.SystemGradient(loss), s, TS, **TOL)
    mus = moments_along(traj)
    losses = jax.vmap(loss)(traj.ys)
    assert bool(traj.success) and losses[-1] < 0.5 * losses[0]  # the flow moves
    np.testing.assert_allclose(mus, np.broadcast_to(mus[0], mus.shape), atol=1e-9)
    kappa = 0.7
    traj = dlnjax.simulate(S.SystemRegularized(loss, kappa), s, TS, **TOL)
    decay = np.exp(-2 * kappa * np.asarray(TS))[:, None, None]
    np.testing.assert_allclose(moments_along(traj), decay * mus[0], atol=1e-9)


def test_markov_loss_and_gradient_descent_drift():
    s = system(6, 3, 2, 3, False, a_scale=0.5)
    target = system(7, 3, 2, 3, False, a_scale=0.5)
    loss = S.MarkovLoss.of(target, 5)
    ref = sum(
        np.sum((np.asarray(s.C @ np.linalg.matrix_power(s.A, j) @ s.B) - np.asarray(h)) ** 2)
        for j, h in enumerate(S.markov_parameters(target, 5))
    )
    np.testing.assert_allclose(loss(s), ref / 2, rtol=1e-12)
    M = np.eye(3) + 0.3 * rand_matrix(np.random.default_rng(8), (3, 3), False)
    np.testing.assert_allclose(loss(S.act(M, s)), loss(s), rtol=1e-10)  # a loss of H only
    # one step x -> x - eta g moves mu by exactly eta^2 mu(g): g is normal to the orbit, so d mu(g) = 0
    eta = 0.01
    g = S.system_gradient(loss, s)
    out = S.fit(loss, s, optax.sgd(eta), 1)
    mu_g = np.asarray(S.moment_map(g))
    np.testing.assert_allclose(
        out.history["moment"][1] - out.history["moment"][0],
        eta**2 * mu_g,
        atol=1e-12 * np.abs(mu_g).max() + 1e-14,
    )
    res = S.fit(loss, s, optax.sgd(eta), 40, every=10)
    assert res.history["loss"][-1] < res.history["loss"][0]
    assert res.steps.tolist() == [0, 10, 20, 30, 40]
    with pytest.raises(dlnjax.OptionError):
        S.fit(loss, s, optax.sgd(eta), 10, every=3)


@pytest.mark.slow  # 400 SDE paths: ~30 s
def test_langevin_mean_moment_law():
    # E = 0: d/dt E[mu] = -2 kappa E[mu] + (2/beta)(m - p) I (Ito)
    n, m, p, kappa, beta, T = 3, 3, 1, 1.0, 4.0, 1.0
    s = system(9, n, m, p, False)
    flow = S.SystemLangevin(None, kappa, beta)
    ts = jnp.array([0.0, T])
    run = lambda k: S.moment_map(dlnjax.simulate(flow, s, ts, key=k, dt0=0.01)[-1])
    keys = jax.random.split(jax.random.PRNGKey(0), 400)
    mus = np.asarray(jax.jit(jax.vmap(run))(keys))
    mean, se = mus.mean(0), mus.std(0) / np.sqrt(len(keys))
    mu0 = np.asarray(S.moment_map(s))
    expect = np.exp(-2 * kappa * T) * mu0 + (m - p) / (beta * kappa) * (
        1 - np.exp(-2 * kappa * T)
    ) * np.eye(n)
    assert np.all(np.abs(mean - expect) < 4.5 * se + 0.01)
    with pytest.raises(dlnjax.OptionError):
        S.SystemLangevin(None, -1.0, 1.0)
