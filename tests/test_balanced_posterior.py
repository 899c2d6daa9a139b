"""The posterior on the balanced manifold (docs/theory.md §11): `dlnjax.balanced_posterior_sample` and
`dlnjax.balanced_orbit_sample`.

- The volume element of the balanced manifold in the coordinates ``W_k = U_k Lambda U_{k-1}^T`` (the derivation of
  `balanced_log_density`) against the dense Jacobian of that parametrization.
- N = 1: no constraint, so the law of lambda must be that of the singular values of a real Gaussian matrix
  (a two-sample Kolmogorov-Smirnov test against numpy's Gaussian matrices).
- d = 1, N = 2: the balanced lines w1 = +-w2; along them the density is exp(-beta kappa s^2) (chi^2 test).
- The samples are balanced (G = 0 to rounding); the conditioned sampler keeps X; the law is invariant under the
  orthogonal action (its second moments are multiples of I, and the orbit's angle is uniform).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import dlnjax

jax.config.update("jax_enable_x64", True)

_moments = jax.jit(jax.vmap(dlnjax.moments))
_end_to_end = jax.jit(jax.vmap(dlnjax.end_to_end))
_sq_norm = jax.jit(jax.vmap(dlnjax.squared_norm))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _jacobian(theta, U0, d, depth):
    return jax.jacfwd(_balanced)(theta, U0, d, depth)


def _balanced(theta, U0, d, depth):
    """W_k = U_k Lambda U_{k-1}^T with U_k = U0_k (I + omega_k), omega_k skew: theta = (lambda, omega_{k, i<j}).

    Evaluated at omega = 0, where its Jacobian is that of U0_k expm(omega_k), the exponential coordinates in which the
    Haar measure has density 1 (the Jacobian is all that is used)."""
    lam = theta[:d]
    iu = np.triu_indices(d, 1)
    m = len(iu[0])
    U = []
    for k in range(depth + 1):
        w = jnp.zeros((d, d)).at[iu].set(theta[d + k * m : d + (k + 1) * m])
        U.append(U0[k] @ (jnp.eye(d) + w - w.T))
    return jnp.concatenate([(U[k + 1] * lam @ U[k].T).ravel() for k in range(depth)])


@pytest.mark.parametrize("d, depth", [(2, 1), (3, 3)])
def test_the_volume_element_of_the_balanced_manifold(d, depth):
    # sqrt det(J^T J) of the parametrization (lambda, U_0..U_N) -> W against the closed form of theory §11:
    # N^(d/2) prod_{i<j} 2^((N-1)/2) sqrt((l_i^2 - l_j^2)(l_i^2N - l_j^2N)), at random points
    rng = np.random.default_rng(d + 10 * depth)
    for _ in range(3):
        lam = rng.uniform(0.3, 2.0, d)
        U0 = [np.linalg.qr(rng.normal(size=(d, d)))[0] for _ in range(depth + 1)]
        theta = jnp.concatenate([jnp.asarray(lam), jnp.zeros((depth + 1) * d * (d - 1) // 2)])
        J = np.asarray(_jacobian(theta, U0, d, depth))
        vol = np.sqrt(np.linalg.det(J.T @ J))
        i, j = np.triu_indices(d, 1)
        pair = np.sqrt(
            2.0 ** (depth - 1)
            * (lam[i] ** 2 - lam[j] ** 2)
            * (lam[i] ** (2 * depth) - lam[j] ** (2 * depth))
        )
        assert vol == pytest.approx(depth ** (d / 2) * np.prod(pair), rel=1e-10)
    # and the log-density is that element times the Gaussian weight
    bk = 1.7
    expected = (
        -bk * depth * np.sum(lam**2) / 2
        + np.sum(np.log(pair))
        - (len(i) * (depth - 1) / 2) * np.log(2)
    )
    assert float(dlnjax.balanced_log_density(jnp.asarray(lam), depth, bk)) == pytest.approx(
        expected, rel=1e-12
    )


def test_depth_one_is_the_gaussian_singular_value_law():
    d, bk = 3, 2.0
    net, acc = dlnjax.balanced_posterior_sample(jax.random.PRNGKey(0), d, 1, bk, 2000)
    assert 0.2 < float(jnp.mean(acc)) < 0.9
    s_ours = np.linalg.svd(np.asarray(net.first), compute_uv=False)
    rng = np.random.default_rng(1)
    s_ref = np.linalg.svd(rng.normal(size=(4000, d, d)) / np.sqrt(bk), compute_uv=False)
    for k in range(d):  # largest, middle, smallest singular value
        assert stats.ks_2samp(s_ours[:, k], s_ref[:, k]).pvalue > 1e-3, k
    # a wrong temperature is detected by the same test
    assert stats.ks_2samp(s_ours[:, 0], s_ref[:, 0] * 1.1).pvalue < 1e-3


def test_d1_n2_balanced_lines_chi_square():
    bk = 1.5
    net, _ = dlnjax.balanced_posterior_sample(jax.random.PRNGKey(3), 1, 2, bk, 4000)
    w1, w2 = np.asarray(net.first[:, 0, 0]), np.asarray(net.last[:, 0, 0])
    assert np.max(np.abs(np.abs(w1) - np.abs(w2))) <= 1e-15  # on the lines w2 = +-w1
    # along the lines s = |w1|: density exp(-bk s^2) (||W||^2 = 2 s^2): half-normal of variance 1/(2 bk)
    edges = stats.halfnorm.ppf(np.linspace(0, 1, 11), scale=1 / np.sqrt(2 * bk))
    counts = np.histogram(np.abs(w1), bins=edges)[0]
    assert np.sum((counts - 400) ** 2 / 400) <= stats.chi2.ppf(0.999, 9)
    # the four half-lines are equally likely
    quad = np.histogram(2 * (w1 > 0) + (w2 > 0), bins=4, range=(-0.5, 3.5))[0]
    assert np.sum((quad - 1000) ** 2 / 1000) <= stats.chi2.ppf(0.999, 3)


def test_samples_are_balanced_and_the_law_is_orthogonally_invariant():
    d, depth, bk = 3, 3, 4.0
    net, acc = dlnjax.balanced_posterior_sample(jax.random.PRNGKey(5), d, depth, bk, 1000)
    G = _moments(net)
    sq = _sq_norm(net)
    assert float(jnp.max(jnp.linalg.norm(G.reshape(len(sq), -1), axis=-1) / sq)) <= 1e-13
    # invariance: E[W_k W_k^T] is a multiple of I (every layer)
    for W in net.layers:
        M = np.asarray(jnp.mean(W @ jnp.swapaxes(W, -1, -2), axis=0))
        t = np.trace(M) / d
        assert np.max(np.abs(M - t * np.eye(d))) <= 0.1 * t


def test_orbit_sample_is_the_uniform_law_on_the_balanced_orbit():
    X = jnp.array([[1.5, 0.3], [-0.2, 0.8]])
    net = dlnjax.balanced_orbit_sample(jax.random.PRNGKey(7), X, 2, 4000)
    Xs = _end_to_end(net)
    assert float(jnp.max(jnp.abs(Xs - X))) <= 1e-13
    G = _moments(net)
    assert float(jnp.max(jnp.abs(G))) <= 1e-13
    # W_1 = U_1 Lambda V^T: U_1 = W_1 V Lambda^{-1} is Haar on O(2): det +-1 equally likely, angle uniform
    u, s, vh = np.linalg.svd(np.asarray(X))
    U1 = np.asarray(net.first) @ vh.T / np.sqrt(s)[None, None, :]
    assert np.max(np.abs(U1 @ np.swapaxes(U1, 1, 2) - np.eye(2))) <= 1e-12
    det = np.round(np.linalg.det(U1))
    angle = np.arctan2(U1[:, 1, 0], U1[:, 0, 0])
    cells = np.histogram(angle + 2 * np.pi * (det > 0), bins=16, range=(-np.pi, 3 * np.pi))[0]
    assert np.sum((cells - 250) ** 2 / 250) <= stats.chi2.ppf(0.999, 15)


def test_complex_orbit_sample_and_bad_input():
    X = jnp.array([[1.0 + 0.5j, 0.2], [0.1j, 0.7]])
    net = dlnjax.balanced_orbit_sample(jax.random.PRNGKey(1), X, 3, 8)
    assert jnp.iscomplexobj(net.first)
    assert float(jnp.max(jnp.abs(_end_to_end(net) - X))) <= 1e-13
    assert float(jnp.max(jnp.abs(_moments(net)))) <= 1e-13
    with pytest.raises(dlnjax.OptionError, match="n must be"):
        dlnjax.balanced_orbit_sample(jax.random.PRNGKey(1), X, 3, 0)
    with pytest.raises(dlnjax.UnsupportedError, match="real"):
        dlnjax.balanced_posterior_sample(jax.random.PRNGKey(1), 2, 2, 1.0, 4, dtype=jnp.complex128)
