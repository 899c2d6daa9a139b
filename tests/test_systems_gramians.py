"""dlnjax.systems Gramians and model reduction against SciPy and python-control (with slycot: SLICOT's SB03MD,
AB09AD, AB13DD) on random stable systems: Lyapunov solutions, Hankel singular values, balanced truncation (reduced
transfer functions agree to rounding, the H-infinity error within 2 sum of the discarded sigma_i), H2 / H-infinity
norms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sl
from conftest import ct, rand_matrix

import dlnjax
from dlnjax import systems as S

control = pytest.importorskip("control")
slycot = pytest.importorskip("slycot")

ZS = np.array([0.3 + 1.0j, 2.0j, -0.2 + 5.0j, 1.5])


def stable(seed, n, m, p, cplx=False):
    rng = np.random.default_rng(seed)
    A = rand_matrix(rng, (n, n), cplx) / np.sqrt(n)
    A = A - (np.max(np.linalg.eigvals(A).real) + 0.2) * np.eye(n)
    return A, rand_matrix(rng, (n, m), cplx), rand_matrix(rng, (p, n), cplx)


def slycot_hsv(A, B, C):
    n, m, p = A.shape[0], B.shape[1], C.shape[0]
    return slycot.ab09ad("C", "B", "N", n, m, p, A.copy(), B.copy(), C.copy(), nr=n)[-1]


def ss(A, B, C):
    return control.ss(A, B, C, np.zeros((C.shape[0], B.shape[1])))


@pytest.mark.parametrize("cplx", [False, True], ids=["real", "complex"])
def test_lyapunov_against_scipy(cplx):
    A, B, C = stable(0, 6, 2, 3, cplx)
    Q = B @ ct(B)
    X = np.asarray(S.lyapunov(jnp.asarray(A), jnp.asarray(Q)))
    ref = sl.solve_continuous_lyapunov(A, -Q)
    np.testing.assert_allclose(X, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())
    np.testing.assert_allclose(A @ X + X @ ct(A) + Q, 0, atol=1e-11 * np.abs(Q).max())


CASES = [(0, 6, 2, 3), (1, 8, 1, 1), pytest.param(2, 7, 3, 2, marks=pytest.mark.slow)]


@pytest.mark.parametrize("seed,n,m,p", CASES)
def test_hankel_singular_values_and_norms_against_control(seed, n, m, p):
    A, B, C = stable(seed, n, m, p)
    s, cs = S.LinearSystem(A, B, C), ss(A, B, C)
    hsv = np.asarray(S.hankel_singular_values(s))
    # SLICOT's AB09AD (Hammarling's factored Gramians): relative accuracy of every sigma_i
    np.testing.assert_allclose(hsv, slycot_hsv(A, B, C), rtol=1e-8)
    # control.hsvd (Gramians by SB03MD, then eigenvalues of P Q) is accurate only relative to sigma_1: on the
    # 8-state case its two smallest values are 2 % off (a 50-digit mpmath computation agrees with AB09AD and us)
    np.testing.assert_allclose(hsv, control.hsvd(cs), rtol=0, atol=1e-8 * hsv[0])
    np.testing.assert_allclose(S.h2_norm(s), control.norm(cs, p=2), rtol=1e-10)
    np.testing.assert_allclose(S.hinf_norm(s), control.norm(cs, p="inf"), rtol=1e-8)


@pytest.mark.parametrize(
    "seed,n,m,p", [CASES[0], *(pytest.param(*c, marks=pytest.mark.slow) for c in CASES[1:2])]
)
def test_balanced_truncation_against_control(seed, n, m, p):
    A, B, C = stable(seed, n, m, p)
    s, cs = S.LinearSystem(A, B, C), ss(A, B, C)
    hsv = slycot_hsv(A, B, C)
    for r in (2, n // 2 + 1):
        t = S.balanced_truncation(s, r)
        ref = control.balred(cs, r, method="truncate")
        Href = np.stack([ref(z) for z in ZS]).reshape(len(ZS), p, m)
        np.testing.assert_allclose(S.transfer_function(t.system, ZS), Href, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(t.error_bound, 2 * hsv[r:].sum(), rtol=1e-9)
        err = control.norm(
            ss(*(np.asarray(a) for a in S.difference(s, t.system).arrays())), p="inf"
        )
        assert err <= float(t.error_bound) * (1 + 1e-9)
        assert np.max(np.linalg.eigvals(np.asarray(t.system.A)).real) < 0
    # order n: the Gramian-balanced realization, P = Q = diag(sigma)
    full = S.balanced_truncation(s, n).system
    Af, Bf, Cf = (np.asarray(a) for a in full.arrays())
    P = sl.solve_continuous_lyapunov(Af, -Bf @ Bf.T)
    Q = sl.solve_continuous_lyapunov(Af.T, -Cf.T @ Cf)
    np.testing.assert_allclose(P, np.diag(hsv), atol=1e-9 * hsv[0])
    np.testing.assert_allclose(Q, np.diag(hsv), atol=1e-9 * hsv[0])


def test_batched_and_jitted():
    systems = [S.LinearSystem(*stable(10 + i, 5, 2, 2)) for i in range(3)]
    batch = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *systems)
    hsv = jax.jit(jax.vmap(S.hankel_singular_values))(batch)
    red = jax.jit(jax.vmap(lambda x: S.balanced_truncation(x, 2).system))(batch)
    for i, x in enumerate(systems):
        np.testing.assert_allclose(
            hsv[i], slycot_hsv(*(np.asarray(a) for a in x.arrays())), rtol=1e-8
        )
        one = S.balanced_truncation(x, 2).system
        np.testing.assert_allclose(
            S.transfer_function(jax.tree_util.tree_map(lambda a: a[i], red), ZS),
            S.transfer_function(one, ZS),
            rtol=1e-10,
        )
    with pytest.raises(dlnjax.OptionError):
        S.balanced_truncation(systems[0], 6)


def test_norm_balanced_truncation():
    A, B, C = stable(20, 6, 2, 2)
    s = S.LinearSystem(A, B, C)
    t = S.norm_balanced_truncation(s, 3)
    assert bool(t.success) and t.system.n == 3
    assert np.all(np.diff(np.asarray(t.weights)) <= 1e-12)
    # A = 0 (a depth-two network): at the balanced point B B^* = C^* C, the weights are the singular values of B,
    # the square roots of those of C B
    _, B0, C0 = stable(21, 3, 3, 3)  # n = m = p: C B invertible, a closed orbit
    t0 = S.norm_balanced_truncation(S.LinearSystem(np.zeros((3, 3)), B0, C0), 3)
    np.testing.assert_allclose(
        t0.weights, np.sqrt(np.linalg.svd(C0 @ B0, compute_uv=False)), rtol=1e-10
    )
