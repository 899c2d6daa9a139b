"""Langevin dynamics (4.4) of seed 001: the moment law of docs/theory.md §4 and the stationary law, by Monte Carlo.

Statistical design. Every Monte Carlo check is a test statistic whose null distribution is known, compared at
the level of "3 standard errors": the two-sided tail ``alpha = P(|Z| > 3) = 0.0027`` of a standard normal.
Scalar summaries are tested at exactly 3 s.e.; vectors of entries by a chi-square statistic at the same level
``alpha`` (which accounts for the number of entries, unlike a per-entry 3 s.e. check). Seeds are fixed (those of
the original tests) for reproducibility, not chosen. Each test also shows its power: the same statistic
rejects the law with the noise term halved, which is what the density (4.3) of seed 001 as printed implies.

(4.3) of seed 001 against the SDE, by direct computation (`test_stationary_density_of_the_sde_vs_4_3`):
for ``dW = -kappa W dt + sqrt(2/beta) dB`` with ``B`` the standard Brownian motion of the Euclidean space
``(M, Re Tr(A^* B))`` (every real coordinate a standard Brownian motion; what `dlnjax.flows.Langevin` does), the
stationary Fokker-Planck equation ``div(kappa W rho) + (1/beta) Lap rho = 0`` is solved by
``rho ∝ exp(-beta kappa ||W||^2 / 2)``: variance ``1/(beta kappa)`` per real entry. The printed (4.3),
``rho ∝ exp(-beta kappa ||W||^2)``, has variance ``1/(2 beta kappa)`` per real entry: its exponent is too large
by a factor 2. It is exact only for complex weights driven by the complex Brownian motion normalized by
``E|dB|^2 = dt`` per entry (real and imaginary parts each of variance ``dt/2``); then ``E|w|^2 = 1/(beta kappa)``.
"""

import math

import jax
import jax.numpy as jnp
import jax.random as jr
import jax.scipy.stats as jss
import numpy as np
import pytest
from conftest import RUN_BOUND

import dlnjax
from dlnjax.flows import Langevin

ALPHA = float(2 * jss.norm.sf(3.0))  # 0.0027: the two-sided 3-sigma level


def _expected_moments(G0, widths, kappa, beta, t, noise=2.0):
    # d/dt E[G_k] = -2 kappa E[G_k] + (noise/beta)(d_{k-1} - d_{k+1}) I  (Ito: dB dB^T = d_{k-1} I dt,
    # dB^T dB = d_{k+1} I dt; the gradient of E(X) is tangent to the level sets of G). noise = 2 is (4.4).
    decay = np.exp(-2 * kappa * t)
    out = np.array(G0) * decay
    for k in range(1, len(widths) - 1):
        dk = widths[k]
        out[k - 1, :dk, :dk] += (
            noise / 2 * (widths[k - 1] - widths[k + 1]) * (1 - decay) / (beta * kappa) * np.eye(dk)
        )
    return out


def _unique_entries(G, widths):
    """The upper-triangle entries of each (symmetric) G_k, padding stripped; G has shape (..., N-1, m, m)."""
    parts = []
    for k in range(1, len(widths) - 1):
        iu = np.triu_indices(widths[k])
        parts.append(G[..., k - 1, iu[0], iu[1]])
    return np.concatenate(parts, axis=-1)


def _hotelling_pvalue(samples, expected):
    """p-value of Hotelling's T^2 = n d^T S^{-1} d (d = sample mean - expected, S the sample covariance),
    asymptotically chi-square with p = dim degrees of freedom (here n = 2000 >> p = 32)."""
    n, p = samples.shape
    d = samples.mean(0) - expected
    S = np.cov(samples, rowvar=False)
    t2 = n * d @ np.linalg.solve(S, d)
    return float(jss.chi2.sf(t2, p)), t2


# the law does not depend on the loss: the quadratic loss tests that; E = 0 (the bare Ornstein-Uhlenbeck case) is slow
@pytest.mark.parametrize("loss", [pytest.param(None, marks=pytest.mark.slow), "quadratic"])
def test_mean_moments_follow_the_linear_law(loss):
    """E[G_k(t)] = e^{-2 kappa t} G_k(0) + (d_{k-1} - d_{k+1})(1 - e^{-2 kappa t})/(beta kappa) I, over 2000 paths.

    (a) The traces Tr G_k(t) (k = 1, 2; t = 0.5, 1) each within 3 s.e.; (b) all 16 distinct entries of G_1, G_2 at
    both times jointly: Hotelling's T^2 (32 degrees of freedom) at level 0.0027; (c) the same statistic rejects the
    law with the noise halved (p < 1e-8) and the noiseless law e^{-2 kappa t} G(0).
    """
    widths, kappa, beta, paths = (2, 3, 4, 2), 1.0, 2.0, 2000
    net0 = dlnjax.gaussian(jr.PRNGKey(0), widths)
    target = jr.normal(jr.PRNGKey(5), (2, 2))
    fn = None if loss is None else (lambda X: 0.5 * jnp.sum((X - target) ** 2))
    ts = jnp.array([0.0, 0.5, 1.0])
    run = jax.jit(
        jax.vmap(lambda k: dlnjax.simulate(Langevin(fn, kappa, beta), net0, ts, key=k, dt0=0.01)),
        compiler_options=RUN_BOUND,
    )
    traj = run(jr.split(jr.PRNGKey(1), paths))
    assert bool(jnp.all(traj.success))
    G = np.asarray(jax.vmap(jax.vmap(dlnjax.moments))(traj.ys))  # (paths, T, N-1, m, m)
    G0 = np.asarray(dlnjax.moments(net0))
    assert np.max(np.abs(G[:, 0] - G0)) == 0.0  # t = 0 is deterministic
    samples, expect, halved = [], [], []
    for i, t in enumerate(np.asarray(ts)[1:], start=1):
        expected = _expected_moments(G0, widths, kappa, beta, t)
        # (a) traces, each at 3 s.e.
        tr = np.trace(G[:, i], axis1=-2, axis2=-1)  # (paths, N-1)
        z = (tr.mean(0) - np.trace(expected, axis1=-2, axis2=-1)) / (
            tr.std(0, ddof=1) / math.sqrt(paths)
        )
        assert np.all(np.abs(z) <= 3.0), (t, z)
        samples.append(_unique_entries(G[:, i], widths))
        expect.append(_unique_entries(expected, widths))
        halved.append(
            _unique_entries(_expected_moments(G0, widths, kappa, beta, t, noise=1.0), widths)
        )
    samples, expect = np.concatenate(samples, 1), np.concatenate(expect)
    # (b) all entries jointly
    p, t2 = _hotelling_pvalue(samples, expect)
    assert p > ALPHA, (p, t2)
    # (c) power: the law with noise 1/beta (the variance of (4.3) as printed), and without noise, are rejected
    assert _hotelling_pvalue(samples, np.concatenate(halved))[0] < 1e-8
    assert (
        _hotelling_pvalue(
            samples,
            _unique_entries(
                np.stack([G0 * np.exp(-2 * kappa * t) for t in (0.5, 1.0)]), widths
            ).ravel(),
        )[0]
        < 1e-8
    )


def test_stationary_law_is_the_gaussian_with_variance_one_over_beta_kappa():
    """For E = 0 each entry is an Ornstein-Uhlenbeck process: exactly normal with mean e^{-kappa t} w_0 and variance
    (1 - e^{-2 kappa t})/(beta kappa) -> 1/(beta kappa) (here e^{-2 kappa t} = e^{-16}). Entries are independent,
    so with n = 1000 paths and p = 18 entries:

    - the pooled variance: sum_(entries, paths) (w - mu)^2 / v ~ chi^2(n p) exactly; its estimate of v is tested at
      3 s.e. (relative s.e. sqrt(2/(n p)) = 0.0105), and the variance 1/(2 beta kappa) of (4.3) as printed is
      rejected (it is ~47 s.e. away);
    - the per-entry variances: sum_i z_i^2 with z_i = (S_i - n)/sqrt(2 n), S_i ~ chi^2(n), against chi^2(p) at 0.0027;
    - the per-entry means: sum_i n (mean_i - mu_i)^2 / v ~ chi^2(p) exactly, at 0.0027.
    """
    kappa, beta, paths, T = 2.0, 4.0, 1000, 4.0
    net0 = dlnjax.gaussian(jr.PRNGKey(0), (3, 3, 3), 2.0)
    ts = jnp.array([0.0, T])
    run = jax.jit(
        jax.vmap(lambda k: dlnjax.simulate(Langevin(None, kappa, beta), net0, ts, key=k, dt0=0.01)),
        compiler_options=RUN_BOUND,
    )
    w = np.concatenate(
        [
            np.asarray(a[:, -1]).reshape(paths, -1)
            for a in run(jr.split(jr.PRNGKey(2), paths)).ys.arrays()
        ],
        1,
    )
    w0 = np.concatenate([np.asarray(a).ravel() for a in net0.arrays()])
    n, p = w.shape
    mu = np.exp(-kappa * T) * w0
    v = (1 - np.exp(-2 * kappa * T)) / (beta * kappa)
    S = np.sum((w - mu) ** 2, axis=0) / v  # each ~ chi^2(n)
    pooled_z = (S.sum() - n * p) / math.sqrt(2 * n * p)
    assert abs(pooled_z) <= 3.0, pooled_z
    v_printed = 1 / (
        2 * beta * kappa
    )  # variance per real entry of exp(-beta kappa ||W||^2), (4.3) as printed
    z_printed = (np.sum((w - mu) ** 2) / v_printed - n * p) / math.sqrt(2 * n * p)
    assert z_printed > 20, z_printed
    z = (S - n) / math.sqrt(2 * n)
    assert float(jss.chi2.sf(np.sum(z**2), p)) > ALPHA, z
    means = n * np.sum((w.mean(0) - mu) ** 2) / v
    assert float(jss.chi2.sf(means, p)) > ALPHA, means


@pytest.mark.parametrize(
    "diffusion,exponent,stationary",
    [
        (
            "real",
            0.5,
            True,
        ),  # exp(-beta kappa ||W||^2 / 2): the law of (4.4) / dlnjax.flows.Langevin
        ("real", 1.0, False),  # (4.3) as printed
        ("complex", 1.0, True),  # (4.3) holds for complex B with E|dB|^2 = dt per entry
        ("complex", 0.5, False),
    ],
)
def test_stationary_density_of_the_sde_vs_4_3(diffusion, exponent, stationary):
    """Direct computation: the Fokker-Planck residual div(kappa W rho) + D Lap rho of rho = exp(-a beta kappa ||W||^2).

    ``dW = -kappa W dt + sqrt(2/beta) dB`` has, per real coordinate, D = 1/beta when every real coordinate of B is a
    standard Brownian motion and D = 1/(2 beta) for complex B normalized by E|dB|^2 = dt. Analytically the residual
    is rho (kappa p (1 - 2 a beta D) + 2 a beta kappa^2 ||W||^2 (2 a beta D - 1)), zero iff a = 1/(2 beta D).
    """
    kappa, beta, p = 1.3, 0.7, 8  # p real coordinates
    D = 1 / beta if diffusion == "real" else 1 / (2 * beta)
    rho = lambda x: jnp.exp(-exponent * beta * kappa * jnp.sum(x**2))
    flux = lambda x: kappa * x * rho(x)  # drift -kappa W: the probability flux is -(-kappa W) rho
    for seed in range(3):
        x = jr.normal(jr.PRNGKey(seed), (p,)) * 0.8
        div = jnp.trace(jax.jacfwd(flux)(x))
        lap = jnp.trace(jax.hessian(rho)(x))
        residual = float((div + D * lap) / rho(x))
        analytic = kappa * p * (
            1 - 2 * exponent * beta * D
        ) + 2 * exponent * beta * kappa**2 * float(jnp.sum(x**2)) * (2 * exponent * beta * D - 1)
        assert abs(residual - analytic) <= 1e-10 * (1 + abs(analytic))
        if stationary:
            assert abs(residual) <= 1e-10
        else:
            assert abs(residual) > 0.1


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
        dlnjax.simulate(
            Langevin(None, 1.0, 1.0), cnet, jnp.array([0.0, 1.0]), key=jr.PRNGKey(0), dt0=0.1
        )
