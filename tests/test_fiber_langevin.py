"""Langevin dynamics on a fiber, `dlnjax.flows.FiberLangevin` (the posterior (4.5) of seed 001; docs/theory.md §11).

- d = 1, N = 2: the fiber is the hyperbola w2 w1 = x; along the branch w1 = s > 0 the posterior density is
  exp(-beta kappa (s^2 + x^2/s^2) / 2) sqrt(1 + x^2/s^4) ds (surface measure): a chi^2 test of the samples.
- X is kept to 1e-12 relative over the runs (the projected solver); the flow is equivariant under the
  orthogonal action.
- (slow) concentration on the balanced orbit: E ||W||^2 - N sum sigma^(2/N) ~ m / (beta kappa), m the codimension.
"""

from __future__ import annotations

import functools as ft

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import RUN_BOUND, explicit_product, rand_layers, rand_unitary
from scipy import integrate, stats

import dlnjax
from dlnjax import flows

X1 = 2.0
DT = 0.02
TS = jnp.arange(0, 41) * 0.5  # on the dt grid


@eqx.filter_jit
def _hyperbola_chains(keys, beta):
    net = dlnjax.DLN([jnp.array([[1.0]]), jnp.array([[X1]])])
    flow = flows.FiberLangevin(kappa=1.0, beta=beta)
    return jax.vmap(lambda k: dlnjax.simulate(flow, net, TS, key=k, dt0=DT, max_steps=2000))(keys)


@pytest.fixture(scope="module")
def hyperbola():
    tr = _hyperbola_chains(jax.random.split(jax.random.PRNGKey(0), 128), 1.0)
    return tr


def test_fiber_langevin_keeps_X(hyperbola):
    assert bool(jnp.all(hyperbola.success))
    w1 = np.asarray(hyperbola.ys.first[..., 0, 0])
    w2 = np.asarray(hyperbola.ys.last[..., 0, 0])
    assert np.max(np.abs(w1 * w2 - X1)) <= 1e-8 * X1
    assert np.min(w1) > 0  # the chains stay on their branch of the hyperbola


def _density(s, bk=1.0):
    return np.exp(-bk * (s**2 + X1**2 / s**2) / 2) * np.sqrt(1 + X1**2 / s**4)


def test_hyperbola_posterior_chi_square(hyperbola):
    s = np.asarray(
        hyperbola.ys.first[:, 4:, 0, 0]
    ).ravel()  # after a burn-in of t = 2, saves 0.5 apart
    Z = integrate.quad(_density, 0, np.inf)[0]
    # 12 bins of equal probability under the closed-form density
    cdf = lambda b: integrate.quad(_density, 0, b)[0] / Z
    edges = [0.0]
    for q in np.arange(1, 12) / 12:
        lo, hi = 1e-3, 20.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if cdf(mid) < q else (lo, mid)
        edges.append(0.5 * (lo + hi))
    edges.append(np.inf)
    counts = np.histogram(s, bins=edges)[0]
    expected = len(s) / 12
    chi2 = np.sum((counts - expected) ** 2 / expected)
    # saves 0.5 apart are correlated (relaxation rate ~ 2 on this branch): halve the effective count, and
    # accept at p = 1e-3 for 11 degrees of freedom
    assert chi2 / 2 <= stats.chi2.ppf(0.999, 11), (chi2, counts)
    # and a biased law fails it: the samples against the density at beta kappa = 1.5
    Zb = integrate.quad(lambda x: _density(x, 1.5), 0, np.inf)[0]
    pb = np.array(
        [integrate.quad(lambda x: _density(x, 1.5), a, b)[0] / Zb for a, b in zip(edges, edges[1:])]
    )
    chi2_b = np.sum((counts - len(s) * pb) ** 2 / (len(s) * pb))
    assert chi2_b / 2 > stats.chi2.ppf(0.999, 11)


def _act(Q, layers):
    """Explicit orthogonal action: W_k -> Q_k W_k Q_{k-1}^T."""
    Q = [None] + list(Q) + [None]
    out = []
    for k, w in enumerate(layers, start=1):
        v = w if Q[k] is None else Q[k] @ w
        out.append(v if Q[k - 1] is None else v @ Q[k - 1].T)
    return out


def test_fiber_langevin_is_equivariant_under_the_orthogonal_action():
    rng = np.random.default_rng(3)
    widths = (3, 3, 3, 2)
    W = rand_layers(4, widths)
    dB = rand_layers(5, widths)
    Q = [rand_unitary(rng, 3, False) for _ in range(2)]
    flow = flows.FiberLangevin(kappa=0.7, beta=2.0)
    drift = lambda L: [np.asarray(x) for x in flow(0.0, dlnjax.DLN(L)).layers]
    noise = lambda L, B: [
        np.asarray(x) for x in flow.diffusion(0.0, dlnjax.DLN(L)).mv(dlnjax.DLN(B)).layers
    ]
    for a, b in zip(drift(_act(Q, W)), _act(Q, drift(W))):
        assert np.max(np.abs(a - b)) <= 1e-12
    for a, b in zip(noise(_act(Q, W), _act(Q, dB)), _act(Q, noise(W, dB))):
        assert np.max(np.abs(a - b)) <= 1e-12
    # the noise is tangent: dX(noise) = 0 (explicit partial products)
    n = noise(W, dB)
    P = [explicit_product(W[k + 1 :]) if k + 1 < len(W) else np.eye(2) for k in range(len(W))]
    R = [explicit_product(W[:k]) if k > 0 else np.eye(3) for k in range(len(W))]
    dX = sum(P[k] @ n[k] @ R[k] for k in range(len(W)))
    assert np.max(np.abs(dX)) <= 1e-12


def test_fiber_langevin_rejects_bad_parameters():
    with pytest.raises(dlnjax.OptionError, match="beta must be positive"):
        flows.FiberLangevin(kappa=1.0, beta=0.0)


# one program for every beta (a traced argument), compiled at XLA's default level: it runs long (64 chains x 4000 steps)
@ft.partial(jax.jit, compiler_options=RUN_BOUND)
def _concentration_chains(keys, beta, net, ts):
    flow = flows.FiberLangevin(kappa=1.0, beta=beta)
    return jax.vmap(lambda k: dlnjax.simulate(flow, net, ts, key=k, dt0=0.01, max_steps=20000))(
        keys
    )


@pytest.mark.slow
def test_posterior_concentrates_on_the_balanced_orbit():
    # d = 2, N = 3, real: the fiber has dimension 8, the orbit O(2)^2 dimension 2; codimension m = 6.
    # E ||W||^2 = 3 sum sigma^(2/3) + 6 / (beta kappa) + O((beta kappa)^-2). Also E[W_1 W_1^T] is a multiple of I
    # (the law is invariant under the orthogonal action), although the chains start at one non-symmetric point.
    X = np.array([[1.5, 0.3], [-0.2, 0.8]])
    s = np.linalg.svd(X, compute_uv=False)
    floor = 3 * np.sum(s ** (2 / 3))
    start = dlnjax.random_fiber_point(jax.random.PRNGKey(2), jnp.asarray(X), 3, spread=0.6)
    ts = jnp.arange(0, 201) * 0.2
    out = {}
    for bk in (8.0, 32.0, 128.0):
        tr = _concentration_chains(
            jax.random.split(jax.random.PRNGKey(int(bk)), 64), jnp.asarray(bk), start, ts
        )
        assert bool(jnp.all(tr.success))
        Xs = jnp.einsum(
            "...ij,...jk,...kl->...il", tr.ys.last, tr.ys.inner[..., 0, :, :], tr.ys.first
        )
        assert float(jnp.max(jnp.abs(Xs - X))) <= 1e-8 * np.max(np.abs(X))
        sq = np.asarray(
            sum(jnp.sum(a[:, 50:] ** 2, axis=(-2, -1)) for a in (tr.ys.first, tr.ys.last))
            + jnp.sum(tr.ys.inner[:, 50:] ** 2, axis=(-3, -2, -1))
        )
        out[bk] = ((np.mean(sq) - floor) * bk, np.std(np.mean(sq, axis=1)) / np.sqrt(64) * bk)
        if bk == 8.0:
            M = np.asarray(
                jnp.mean(
                    jnp.einsum("...ij,...kj->...ik", tr.ys.first[:, 50:], tr.ys.first[:, 50:]),
                    axis=(0, 1),
                )
            )
            assert abs(M[0, 1]) <= 0.05 * M[0, 0] and abs(M[0, 0] - M[1, 1]) <= 0.05 * M[0, 0]
    for bk, (scaled, err) in out.items():
        assert abs(scaled - 6.0) <= 4 * err + 6.0 * 20 / bk, (bk, scaled, err)
    assert abs(out[128.0][0] - 6.0) <= 1.0


@pytest.mark.slow  # its own compile: ~15-35 s
def test_a_projection_that_does_not_converge_fails_the_run():
    # One chord sweep cannot reach a relative accuracy of 1e-300: the step reports a failure, and the run says so
    # (success False) instead of returning states off the fiber as results.
    net = dlnjax.DLN([jnp.array([[1.0]]), jnp.array([[X1]])])
    flow = flows.FiberLangevin(kappa=1.0, beta=1.0)
    solver = dlnjax.FiberProjected(diffrax.Heun(), tol=1e-300, max_iterations=1)
    tr = dlnjax.simulate(flow, net, TS[:3], key=jax.random.PRNGKey(0), dt0=DT, solver=solver)
    assert not bool(tr.success)
    with pytest.raises(dlnjax.OptionError, match="Diffrax solver"):
        dlnjax.FiberProjected("heun")
