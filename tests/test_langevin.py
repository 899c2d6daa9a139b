"""Langevin dynamics (4.4) of seed 001: the moment law of MATH.md §4, by Monte Carlo."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import dlnjax
from dlnjax.flows import Langevin


def _expected_moments(G0, widths, kappa, beta, t):
    # d/dt E[G_k] = -2 kappa E[G_k] + (2/beta)(d_{k-1} - d_{k+1}) I  (Ito correction of the noise).
    decay = np.exp(-2 * kappa * t)
    out = np.array(G0) * decay
    for k in range(1, len(widths) - 1):
        dk = widths[k]
        out[k - 1, :dk, :dk] += (widths[k - 1] - widths[k + 1]) * (1 - decay) / (beta * kappa) * np.eye(dk)
    return out


@pytest.mark.parametrize("loss", [None, "quadratic"])
def test_mean_moments_follow_the_linear_law(loss):
    widths, kappa, beta, paths = (2, 3, 4, 2), 1.0, 2.0, 2000
    net0 = dlnjax.gaussian(jr.PRNGKey(0), widths)
    target = jr.normal(jr.PRNGKey(5), (2, 2))
    fn = None if loss is None else (lambda X: 0.5 * jnp.sum((X - target) ** 2))
    ts = jnp.array([0.0, 0.5, 1.0])
    run = jax.jit(jax.vmap(lambda k: dlnjax.simulate(Langevin(fn, kappa, beta), net0, ts, key=k, dt0=0.01)))
    traj = run(jr.split(jr.PRNGKey(1), paths))
    assert bool(jnp.all(traj.success))
    G = np.asarray(jax.vmap(jax.vmap(dlnjax.moments))(traj.ys))  # (paths, T, N-1, m, m)
    G0 = np.asarray(dlnjax.moments(net0))
    for i, t in enumerate(np.asarray(ts)):
        mean, se = G[:, i].mean(0), G[:, i].std(0) / np.sqrt(paths)
        expected = _expected_moments(G0, widths, kappa, beta, t)
        assert np.all(np.abs(mean - expected) <= 5 * se + 1e-12), (t, np.max(np.abs(mean - expected) / (se + 1e-300)))
    # The drift alone would give e^{-2 kappa t} G(0): the noise term is really there.
    assert np.max(np.abs(G[:, -1].mean(0) - G0 * np.exp(-2 * kappa))) > 0.5


def test_stationary_law_is_the_gaussian_prior():
    kappa, beta, paths = 2.0, 4.0, 2000
    net0 = dlnjax.gaussian(jr.PRNGKey(0), (3, 3, 3), 2.0)
    ts = jnp.array([0.0, 4.0])
    run = jax.jit(jax.vmap(lambda k: dlnjax.simulate(Langevin(None, kappa, beta), net0, ts, key=k, dt0=0.01)))
    w = np.concatenate([np.asarray(a[:, -1]).reshape(paths, -1) for a in run(jr.split(jr.PRNGKey(2), paths)).ys.arrays()], 1)
    var = w.var(0)
    # variance 1/(beta kappa) per entry; the sample variance of n normals has relative s.e. sqrt(2/n)
    assert np.all(np.abs(var * beta * kappa - 1) < 5 * np.sqrt(2 / paths) + 0.02)
    assert np.all(np.abs(w.mean(0)) < 5 / np.sqrt(beta * kappa * paths))


def test_langevin_bad_input():
    net = dlnjax.gaussian(jr.PRNGKey(0), (2, 2, 2))
    with pytest.raises(ValueError, match="kappa must be positive"):
        Langevin(None, 0.0, 1.0)
    with pytest.raises(ValueError, match="beta must be positive"):
        Langevin(None, 1.0, -1.0)
    with pytest.raises(ValueError, match="needs key="):
        dlnjax.simulate(Langevin(None, 1.0, 1.0), net, jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="only for stochastic flows"):
        dlnjax.simulate(dlnjax.flows.KirwanNess(), net, jnp.array([0.0, 1.0]), key=jr.PRNGKey(0))
    cnet = dlnjax.gaussian(jr.PRNGKey(0), (2, 2, 2), dtype=jnp.complex128)
    with pytest.raises(ValueError, match="only real weights"):
        dlnjax.simulate(Langevin(None, 1.0, 1.0), cnet, jnp.array([0.0, 1.0]), key=jr.PRNGKey(0), dt0=0.1)
