"""dlnjax.systems: realizations, the action (1.10), transfer function, Markov parameters, orbit tangent space, the
moment map and norm balancing, against dense numpy/scipy references (float64, real and complex, m != p)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sl
from conftest import ct, rand_invertible, rand_matrix, rand_unitary

import dlnjax
from dlnjax import systems as S

CASES = [(4, 2, 3, False), (3, 2, 1, True)]
IDS = ["real-4-2x3", "complex-3-2x1"]


def rand_abc(seed, n, m, p, cplx, a_scale=1.0):
    rng = np.random.default_rng(seed)
    A = a_scale * rand_matrix(rng, (n, n), cplx) / np.sqrt(n)
    return A, rand_matrix(rng, (n, m), cplx), rand_matrix(rng, (p, n), cplx)


def np_H(A, B, C, z):
    return C @ np.linalg.solve(z * np.eye(A.shape[0]) - A, B)


def np_mu(A, B, C):
    return A @ ct(A) - ct(A) @ A + B @ ct(B) - ct(C) @ C


def np_act(M, A, B, C):
    Mi = np.linalg.inv(M)
    return M @ A @ Mi, M @ B, C @ Mi


def sysmax(s, abc):
    return max(np.abs(np.asarray(x) - y).max() for x, y in zip(s.arrays(), abc))


ZS = np.array([0.3 + 1.1j, -2.0 + 0.5j, 3.0, 1j * 7.0])


def test_construction_errors_and_batching():
    A, B, C = rand_abc(0, 3, 2, 1, False)
    with pytest.raises(dlnjax.ShapeError):
        S.LinearSystem(A[:, :2], B, C)
    with pytest.raises(dlnjax.ShapeError):
        S.LinearSystem(A, B[:2], C)
    with pytest.raises(dlnjax.ShapeError):
        S.LinearSystem(A, B, C[:, :2])
    with pytest.raises(dlnjax.ShapeError):
        S.LinearSystem(A, B[0], C)
    with pytest.raises(dlnjax.NonFiniteError):
        S.LinearSystem(A, B * np.nan, C)
    with pytest.raises(dlnjax.InputTypeError):
        S.moment_map((A, B, C)) if False else S.transfer_function((A, B, C), 1.0)
    s = S.LinearSystem(A.astype(np.float32), B, C)
    assert s.dtype == jnp.float64 and (s.n, s.m, s.p) == (3, 2, 1)
    batch = jax.vmap(S.LinearSystem)(*(jnp.stack([x, 2 * x]) for x in (A, B, C)))
    assert batch.A.shape == (2, 3, 3)
    mus = jax.vmap(S.moment_map)(batch)
    np.testing.assert_allclose(mus[1], 4 * np_mu(A, B, C), atol=1e-12)


@pytest.mark.parametrize("n,m,p,cplx", CASES, ids=IDS)
def test_action_transfer_markov_impulse(n, m, p, cplx):
    A, B, C = rand_abc(1, n, m, p, cplx)
    s = S.LinearSystem(A, B, C)
    H = np.stack([np_H(A, B, C, z) for z in ZS])
    np.testing.assert_allclose(S.transfer_function(s, ZS), H, atol=1e-12)
    M = rand_invertible(np.random.default_rng(2), n, cplx)
    t = S.act(M, s)
    assert sysmax(t, np_act(M, A, B, C)) < 1e-12
    np.testing.assert_allclose(S.transfer_function(t, ZS), H, atol=1e-11)  # (1.10) keeps H
    K = 6
    ref = np.stack([C @ np.linalg.matrix_power(A, j) @ B for j in range(K)])
    np.testing.assert_allclose(S.markov_parameters(s, K), ref, atol=1e-12)
    np.testing.assert_allclose(S.markov_parameters(t, K), ref, atol=1e-10)
    z = 40.0  # Laurent series at infinity: H(z) = sum_j C A^j B z^(-j-1)
    series = sum(C @ np.linalg.matrix_power(A, j) @ B / z ** (j + 1) for j in range(30))
    np.testing.assert_allclose(np_H(A, B, C, z), series, atol=1e-13)
    ts = np.array([0.0, 0.4, 1.3])
    h = np.stack([C @ sl.expm(A * tt) @ B for tt in ts])
    np.testing.assert_allclose(S.impulse_response(s, ts), h, atol=1e-12)


@pytest.mark.parametrize("n,m,p,cplx", CASES, ids=IDS)
def test_orbit_tangent_and_adjoint(n, m, p, cplx):
    A, B, C = rand_abc(3, n, m, p, cplx)
    s = S.LinearSystem(A, B, C)
    rng = np.random.default_rng(4)
    xi = rand_matrix(rng, (n, n), cplx)
    # derivative of the action at M = I along xi, by central differences of the numpy action
    eps = 1e-6
    plus, minus = np_act(np.eye(n) + eps * xi, A, B, C), np_act(np.eye(n) - eps * xi, A, B, C)
    fd = [(a - b) / (2 * eps) for a, b in zip(plus, minus)]
    assert sysmax(S.orbit_tangent(s, xi), fd) < 1e-7
    Y = S.LinearSystem(*rand_abc(5, n, m, p, cplx))
    lhs = S.system_inner(S.orbit_tangent(s, xi), Y)
    rhs = np.real(np.trace(ct(xi) @ np.asarray(S.orbit_tangent_adjoint(s, Y))))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)


@pytest.mark.parametrize("n,m,p,cplx", CASES, ids=IDS)
def test_moment_map_is_the_derivative_of_the_norm(n, m, p, cplx):
    A, B, C = rand_abc(6, n, m, p, cplx)
    s = S.LinearSystem(A, B, C)
    mu = np.asarray(S.moment_map(s))
    np.testing.assert_allclose(mu, np_mu(A, B, C), atol=1e-12)
    np.testing.assert_allclose(mu, ct(mu), atol=0)
    rng = np.random.default_rng(7)
    X = rand_matrix(rng, (n, n), cplx)
    xi = (X + ct(X)) / 2  # Hermitian: d/dt 1/2 ||e^(t xi) . x||^2 = Re Tr(xi mu) at t = 0
    f = lambda t: sum(np.sum(np.abs(a) ** 2) for a in np_act(sl.expm(t * xi), A, B, C)) / 2
    eps = 1e-5
    np.testing.assert_allclose(
        (f(eps) - f(-eps)) / (2 * eps), np.real(np.trace(xi @ mu)), rtol=1e-8
    )
    U = rand_unitary(rng, n, cplx)  # equivariance and unitary invariance of the norm
    t = S.act(U, s)
    np.testing.assert_allclose(S.moment_map(t), U @ mu @ ct(U), atol=1e-11)
    np.testing.assert_allclose(S.system_sq_norm(t), S.system_sq_norm(s), rtol=1e-12)


@pytest.mark.parametrize("cplx", [False, True])
def test_zero_A_is_the_depth_two_network(cplx):
    _, B, C = rand_abc(8, 4, 3, 2, cplx)
    s = S.LinearSystem(np.zeros((4, 4)), B, C)
    net = dlnjax.DLN([B, C])
    np.testing.assert_allclose(S.moment_map(s), dlnjax.moments(net)[0], atol=1e-13)
    kn_net = dlnjax.flows.KirwanNess()(0.0, net)
    kn_sys = S.OrbitKirwanNess()(0.0, s)
    np.testing.assert_allclose(kn_sys.B, kn_net.layers[0], atol=1e-13)
    np.testing.assert_allclose(kn_sys.C, kn_net.layers[1], atol=1e-13)
    assert np.abs(np.asarray(kn_sys.A)).max() == 0


@pytest.mark.parametrize("n,m,p,cplx", CASES, ids=IDS)
def test_normal_operator_and_projection(n, m, p, cplx):
    A, B, C = rand_abc(9, n, m, p, cplx)
    s = S.LinearSystem(A, B, C)
    # dense reference: the n^2 columns xi . x over the basis E_ij (complex: also i E_ij)
    basis = [np.eye(n * n)[k].reshape(n, n) for k in range(n * n)]
    if cplx:
        basis += [1j * e for e in basis]
    flat = lambda t: np.concatenate([np.asarray(a).ravel() for a in t])
    cols = [flat(np_orbit(A, B, C, e)) for e in basis]
    Lmat = np.stack(cols, axis=1)
    Lreal = np.concatenate([Lmat.real, Lmat.imag]) if cplx else Lmat
    V = S.LinearSystem(*rand_abc(10, n, m, p, cplx))
    v = flat(V.arrays())
    vreal = np.concatenate([v.real, v.imag]) if cplx else v
    coef = np.linalg.lstsq(Lreal, vreal, rcond=None)[0]
    proj = Lmat @ coef
    got = flat(S.orbit_tangent_projection(s, V).arrays())
    np.testing.assert_allclose(got, proj, atol=1e-10)
    xi = rand_matrix(np.random.default_rng(11), (n, n), cplx)
    np.testing.assert_allclose(
        S.orbit_normal_matrix(s) @ xi.ravel(),
        np.asarray(S.orbit_normal_operator(s, xi)).ravel(),
        atol=1e-12,
    )
    if not cplx:  # matrix-free CG gives the same solve
        import lineax as lx

        a = S.orbit_solve(s, S.moment_map(s))
        b = S.orbit_solve(s, S.moment_map(s), lx.CG(rtol=1e-13, atol=1e-13, max_steps=2000))
        np.testing.assert_allclose(a, b, atol=1e-9)


def np_orbit(A, B, C, xi):
    return xi @ A - A @ xi, xi @ B, -C @ xi


@pytest.mark.parametrize("n,m,p,cplx", CASES, ids=IDS)
def test_norm_balanced(n, m, p, cplx):
    A, B, C = rand_abc(12, n, m, p, cplx, a_scale=3.0)
    M0 = rand_invertible(np.random.default_rng(13), n, cplx)
    s = S.act(M0 @ M0, S.LinearSystem(A, B, C))  # far from balanced
    bal = S.norm_balancing(s)
    assert bool(bal.success)
    x = bal.system
    mu = np_mu(*(np.asarray(a) for a in x.arrays()))
    assert np.abs(mu).max() < 1e-12 * float(S.system_sq_norm(x))
    np.testing.assert_allclose(
        S.transfer_function(x, ZS), S.transfer_function(s, ZS), rtol=1e-10, atol=1e-12
    )
    assert sysmax(x, np_act(np.asarray(bal.transform), *(np.asarray(a) for a in s.arrays()))) < 1e-9
    # a minimum on the orbit: nearby realizations (random M = exp(eps H)) have a larger norm
    rng = np.random.default_rng(14)
    f0 = float(S.system_sq_norm(x))
    for _ in range(5):
        X = rand_matrix(rng, (n, n), cplx)
        f = sum(
            np.sum(np.abs(a) ** 2)
            for a in np_act(sl.expm(1e-3 * X), *(np.asarray(a) for a in x.arrays()))
        )
        assert f >= f0 - 1e-12 * f0
    np.testing.assert_allclose(S.norm_balanced(s).A, x.A, atol=1e-13)


@pytest.mark.slow  # ~12 s (compiles a vmapped Newton loop)
def test_norm_balancing_batched_and_not_closed():
    batch = jax.vmap(lambda k: S.random_system(k, 4, 2, 2))(
        jax.random.split(jax.random.PRNGKey(0), 3)
    )
    out = jax.jit(jax.vmap(S.norm_balancing))(batch)
    assert bool(jnp.all(out.success))
    one = S.norm_balancing(jax.tree_util.tree_map(lambda a: a[1], batch))
    np.testing.assert_allclose(out.system.A[1], one.system.A, atol=1e-10)
    assert int(jnp.max(out.steps)) <= 12  # quadratic convergence
    # an uncontrollable mode (A diagonal, B zero in state 0): the orbit is not closed, the infimum of the norm is
    # approached only in the limit, and mu -> 0 linearly (not quadratically) with a diverging transform
    A = np.diag([-1.0, -2.0, -3.0])
    B = np.array([[0.0], [1.0], [1.0]])
    C = np.array([[1.0, 1.0, 1.0]])
    s = S.LinearSystem(A, B, C)
    res = S.norm_balancing(s, max_steps=100)
    assert int(res.steps) >= 25
    assert np.linalg.cond(np.asarray(res.transform)) > 1e5
    assert float(S.system_sq_norm(res.system)) < float(S.system_sq_norm(s))


def test_products_state_highest_precision():
    import optax
    import test_precision as tp

    s = S.random_system(jax.random.PRNGKey(0), 5, 2, 2)
    big = S.random_system(
        jax.random.PRNGKey(0), 21, 2, 2
    )  # n > 20: the preconditioned-CG orbit solve
    loss = S.MarkovLoss.of(s, 6)
    tp.assert_highest(lambda x: S.OrbitL2()(0.0, x), big)
    tp.assert_highest(lambda x: S.norm_balancing(x).system, s)
    tp.assert_highest(lambda x: S.SystemGradient(loss)(0.0, x), s)
    tp.assert_highest(lambda x: S.fit(loss, x, optax.sgd(0.01), 4).system, s)
    tp.assert_highest(lambda x: S.impulse_response(x, jnp.array([0.5])), s)
    for f in (S.hankel_singular_values, S.h2_norm, S.hinf_norm, S.moment_map):
        tp.assert_highest(
            f, s, positive=False
        )  # written with dlnjax's dot: no dot_general at these sizes
