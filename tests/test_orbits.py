"""The orbit toolkit (docs/theory.md §10; §3 of seed 001): the Kempf-Ness function psi_W(A) = ||A . W||^2, its
first derivative at the identity (Lemma 2, Remark 18), convexity along Hermitian directions (Theorems 13, 19), the
Schatten-p version (Theorem 20), and the Hessian at the centre (Theorem 14 (2)).

References are explicit numpy computations (matrix exponentials by scipy, moments by explicit products) and finite
differences, never dlnjax's own formulas.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest
import scipy.linalg as sla
from conftest import ct, explicit_moments, explicit_tangent_vector, rand_invertible, rand_matrix

import dlnjax

CASES = [  # (widths, complex): square, tall X, wide X; real and complex
    ((3, 3, 3, 3), False),
    ((3, 3, 3, 3), True),
    ((4, 2, 2, 2, 2), False),
    ((2, 2, 2, 4), True),
]
# the first and last in the default suite, the others with -m slow (each case compiles its own programs)
CASES_SPLIT = [
    CASES[0],
    pytest.param(*CASES[1], marks=pytest.mark.slow),
    pytest.param(*CASES[2], marks=pytest.mark.slow),
    CASES[3],
]


def _fiber_point(seed, widths, is_complex):
    """A @ C for a random full-rank X (numpy A), as numpy layers and the centre."""
    rng = np.random.default_rng(seed)
    X = rand_matrix(rng, (widths[-1], widths[0]), is_complex)
    N = len(widths) - 1
    c = dlnjax.fiber_center(jnp.asarray(X), N)
    A = [rand_invertible(rng, d, is_complex) for d in widths[1:-1]]
    W = dlnjax.group_action(A, c) if A else c
    return rng, X, c, W


def _rand_algebra(rng, widths, is_complex, kind="any"):
    out = []
    for d in widths[1:-1]:
        a = rand_matrix(rng, (d, d), is_complex)
        if kind == "hermitian":
            a = 0.5 * (a + ct(a))
        elif kind == "skew":
            a = 0.5 * (a - ct(a))
        out.append(a)
    return out


def _moved(W, a, tau):
    """The layers of exp(tau a) . W, with scipy's expm and explicit inverses."""
    E = [None] + [sla.expm(tau * x) for x in a] + [None]
    out = []
    for k, w in enumerate(W, start=1):
        v = np.asarray(w)
        if E[k] is not None:
            v = E[k] @ v
        if E[k - 1] is not None:
            v = v @ np.linalg.inv(E[k - 1])
        out.append(v)
    return out


def _psi_explicit(W, a, tau):
    """||exp(tau a) . W||^2."""
    return sum(np.sum(np.abs(v) ** 2) for v in _moved(W, a, tau))


def _schatten_explicit(W, a, tau, p):
    """sum_k ||(exp(tau a) . W)_k||_p."""
    return sum(
        np.sum(np.linalg.svd(v, compute_uv=False) ** p) ** (1 / p) for v in _moved(W, a, tau)
    )


@pytest.mark.parametrize("widths,is_complex", CASES_SPLIT)
def test_orbit_norm_and_first_derivative_is_the_moment_map(widths, is_complex):
    rng, X, c, W = _fiber_point(1, widths, is_complex)
    layers = [np.asarray(w) for w in W.layers]
    a = _rand_algebra(rng, widths, is_complex)
    E = [sla.expm(0.3 * x) for x in a]
    assert abs(float(dlnjax.orbit_norm(E, W)) - _psi_explicit(layers, a, 0.3)) <= 1e-12 * (
        _psi_explicit(layers, a, 0.3)
    )
    # Lemma 2 / Remark 18: d/dtau psi = 2 sum_k Re Tr(G_k a_k), against a central difference
    G = explicit_moments(layers)
    ref = 2 * sum(np.real(np.trace(g @ x)) for g, x in zip(G, a))
    h = 1e-5
    fd = (_psi_explicit(layers, a, h) - _psi_explicit(layers, a, -h)) / (2 * h)
    got = float(dlnjax.orbit_derivative(a, W))
    scale = _psi_explicit(layers, a, 0.0)
    assert abs(got - ref) <= 1e-12 * scale
    assert abs(got - fd) <= 1e-7 * scale
    if widths[1:-1]:
        assert abs(ref) > 1e-3 * scale  # W is not balanced: the derivative is not zero
    # zero along the unitary (skew-Hermitian) directions, at every point
    s = _rand_algebra(rng, widths, is_complex, "skew")
    assert abs(float(dlnjax.orbit_derivative(s, W))) <= 1e-12 * scale
    # at the centre (G = 0) it vanishes in every direction: the centre is a critical point
    assert abs(float(dlnjax.orbit_derivative(a, c))) <= 1e-12 * scale


@pytest.mark.parametrize("widths,is_complex", CASES_SPLIT)
def test_second_derivative_and_convexity_along_hermitian_directions(widths, is_complex):
    rng, X, c, W = _fiber_point(2, widths, is_complex)
    layers = [np.asarray(w) for w in W.layers]
    a = _rand_algebra(rng, widths, is_complex)
    h = 1e-4
    fd = (
        _psi_explicit(layers, a, h) - 2 * _psi_explicit(layers, a, 0) + _psi_explicit(layers, a, -h)
    ) / h**2
    got = float(dlnjax.orbit_second_derivative(a, W))
    assert abs(got - fd) <= 1e-5 * max(1.0, abs(fd))
    # Hermitian directions: psi'' = 4 ||w_a||^2 (explicit tangent vector), and psi is convex along the whole line
    hm = _rand_algebra(rng, widths, is_complex, "hermitian")
    w_h = explicit_tangent_vector(layers, hm)
    four = 4 * sum(np.sum(np.abs(v) ** 2) for v in w_h)
    assert abs(float(dlnjax.orbit_second_derivative(hm, W)) - four) <= 1e-11 * max(1.0, four)
    taus = np.linspace(-1.0, 1.0, 21)
    for p in (None, 1.5, 3.0):  # psi, and the Schatten-p version (3.8) (Theorem 20)
        f = (
            [_psi_explicit(layers, hm, t) for t in taus]
            if p is None
            else [_schatten_explicit(layers, hm, t, p) for t in taus]
        )
        second = np.diff(f, 2)
        assert np.all(second >= -1e-10 * np.max(np.abs(f))), (p, second.min())
    # and the library's values along the line agree with the explicit ones
    for t in (-0.7, 0.4):
        net_t = dlnjax.exp_action(hm, W, t)
        assert abs(
            float(dlnjax.schatten_regularizer(net_t, 3.0)) - _schatten_explicit(layers, hm, t, 3.0)
        ) <= 1e-11 * _schatten_explicit(layers, hm, t, 3.0)


def test_convexity_fails_along_a_generic_direction():
    # Negative control: along exp(tau a) with a neither Hermitian nor skew, psi need not be convex: a rotation
    # generator plus a small Hermitian part gives a nearly periodic, non-convex curve.
    rng, X, c, W = _fiber_point(3, (2, 2, 2), False)
    layers = [np.asarray(w) for w in W.layers]
    a = [np.array([[0.05, 3.0], [-3.0, 0.0]])]
    taus = np.linspace(-1.5, 1.5, 61)
    f = [_psi_explicit(layers, a, t) for t in taus]
    assert np.min(np.diff(f, 2)) / (taus[1] - taus[0]) ** 2 < -0.05 * np.max(f)


def _skew_dim(widths, is_complex):
    return sum(d * d if is_complex else d * (d - 1) // 2 for d in widths[1:-1])


@pytest.mark.parametrize("widths,is_complex", CASES)
def test_hessian_at_the_centre_is_psd_with_the_unitary_directions_as_kernel(widths, is_complex):
    rng, X, c, W = _fiber_point(4, widths, is_complex)
    H, to_algebra = dlnjax.orbit_hessian(c)
    H = np.asarray(H)
    ev, vecs = np.linalg.eigh(H)
    scale = np.max(np.abs(ev))
    assert ev[0] >= -1e-10 * scale  # positive semidefinite
    null = ev <= 1e-9 * scale
    assert int(np.sum(null)) == _skew_dim(widths, is_complex)  # exactly the unitary directions
    assert np.min(ev[~null]) >= 1e-3 * scale  # and a clear gap
    for v in vecs[:, null].T:  # every kernel vector is skew-Hermitian
        for x in to_algebra(jnp.asarray(v)):
            x = np.asarray(x)
            assert np.max(np.abs(x + ct(x))) <= 1e-8
    # the quadratic form is 4 ||w_h||^2 with h the Hermitian part (explicit tangent vector)
    theta = rng.standard_normal(H.shape[0])
    a = [np.asarray(x) for x in to_algebra(jnp.asarray(theta))]
    hm = [0.5 * (x + ct(x)) for x in a]
    layers = [np.asarray(w) for w in c.layers]
    ref = 4 * sum(np.sum(np.abs(v) ** 2) for v in explicit_tangent_vector(layers, hm))
    assert abs(theta @ H @ theta - ref) <= 1e-10 * ref


def test_hessian_kernel_gains_the_stabilizer_for_wider_inner_layers():
    # widths (3, 4, 3): X is 3 x 3 of full rank, inner width 4 > rank X. The padded centre is fixed by
    # A_1 = diag(1, 1, 1, c): the kernel is the skew directions (6) plus that Hermitian direction (E_44).
    X = np.random.default_rng(5).standard_normal((3, 3))
    c = dlnjax.fiber_center(jnp.asarray(X), 2, widths=(3, 4, 3))
    H, to_algebra = dlnjax.orbit_hessian(c)
    ev, vecs = np.linalg.eigh(np.asarray(H))
    null = ev <= 1e-9 * np.max(ev)
    assert int(np.sum(null)) == 6 + 1
    e44 = np.zeros(16)
    e44[15] = 1.0
    assert np.linalg.norm(np.asarray(H) @ e44) <= 1e-12


@pytest.mark.slow  # BFGS compiles for ~10 s; the default suite checks Theorem 20 through FiberSchatten
@pytest.mark.parametrize("is_complex", [False, True])
def test_theorem_20_schatten_minimizer_over_the_orbit_is_balanced(is_complex):
    # Minimize sum_k ||exp(h) . W||_p over Hermitian h (polar decomposition: the unitary part changes nothing);
    # the minimizer is balanced and the minimum is N ||Sigma^(1/N)||_p (Theorem 20).
    widths, p = (3, 3, 3, 3), 3.0
    rng, X, c, W = _fiber_point(6, widths, is_complex)
    to_h = lambda th: [
        0.5 * (m + ct(m))
        for m in (
            (th[:18].reshape(2, 3, 3) + 1j * th[18:].reshape(2, 3, 3))
            if is_complex
            else th.reshape(2, 3, 3)
        )
    ]
    f = lambda th, _: dlnjax.schatten_regularizer(dlnjax.exp_action(to_h(th), W), p)
    th0 = jnp.zeros(36 if is_complex else 18)
    sol = optx.minimise(f, optx.BFGS(rtol=1e-12, atol=1e-12), th0, max_steps=2000)
    best = dlnjax.exp_action(to_h(sol.value), W)
    s = np.linalg.svd(X, compute_uv=False)
    assert abs(float(f(sol.value, None)) - 3 * np.sum(s ** (p / 3)) ** (1 / p)) <= 1e-9
    G = explicit_moments([np.asarray(w) for w in best.layers])
    assert max(np.max(np.abs(g)) for g in G) <= 1e-5
    assert float(f(th0, None)) > float(f(sol.value, None)) + 1e-2  # W itself was not a minimizer


def test_orbit_functions_reject_bad_shapes():
    c = dlnjax.fiber_center(jnp.eye(3), 3)
    with pytest.raises(dlnjax.ShapeError, match="N - 1 = 2"):
        dlnjax.orbit_derivative([jnp.eye(3)], c)
    with pytest.raises(dlnjax.ShapeError, match=r"a_2 must have shape \(3, 3\)"):
        dlnjax.exp_action([jnp.eye(3), jnp.eye(2)], c)
    assert dlnjax.lie_algebra_shapes(c) == ((3, 3), (3, 3))
    jax.block_until_ready(dlnjax.orbit_tangent([jnp.eye(3)] * 2, c).first)


def _kn_jacobian_eigs(c):
    """Eigenvalues of the dense Jacobian of the Kirwan-Ness field (explicit cubic form (1.22)) at the centre."""
    shapes = [np.asarray(w).shape for w in c.layers]
    sizes = [a * b for a, b in shapes]

    def field(theta):
        L, i = [], 0
        for (a, b), n in zip(shapes, sizes):
            L.append(theta[i : i + n].reshape(a, b))
            i += n
        G = [L[k] @ L[k].T - L[k + 1].T @ L[k + 1] for k in range(len(L) - 1)]
        G = [None] + G + [None]
        out = []
        for k, w in enumerate(L, start=1):
            v = jnp.zeros_like(w)
            if G[k - 1] is not None:
                v = v + 2 * w @ G[k - 1]
            if G[k] is not None:
                v = v - 2 * G[k] @ w
            out.append(v.reshape(-1))
        return jnp.concatenate(out)

    theta = jnp.concatenate([jnp.asarray(w).reshape(-1) for w in c.layers])
    return np.linalg.eigvals(np.asarray(jax.jacfwd(field)(theta)))


def test_kirwan_ness_linearized_rates_match_the_jacobian_and_a_measured_decay():
    # d = 2, N = 4, sigma = (1, 0.25): the nonzero eigenvalues of the Jacobian at the centre are minus the rates
    # r_ijm over i <= j (real symmetric G), and ||G|| decays from a nearby start at the slowest one.
    X = np.diag([1.0, 0.25])
    c = dlnjax.fiber_center(jnp.asarray(X), 4)
    rates = np.asarray(dlnjax.kirwan_ness_rates(jnp.array([1.0, 0.25]), 4))
    ref = np.sort(np.concatenate([rates[i, j] for i in range(2) for j in range(i, 2)]))
    eig = -np.real(_kn_jacobian_eigs(c))
    nonzero = np.sort(eig[np.abs(eig) > 1e-10])
    assert np.allclose(nonzero, ref, rtol=1e-10, atol=1e-12)
    slowest = 8 * 0.25 ** (2 / 4) * (1 - np.cos(np.pi / 4))
    assert abs(ref[0] - slowest) <= 1e-14
    # measured: a start exp(eps h) . C, the decay slope of log ||G|| late in the run
    rng = np.random.default_rng(11)
    h = [1e-2 * (lambda m: m + m.T)(rng.standard_normal((2, 2))) for _ in range(3)]
    start = dlnjax.exp_action(h, c)
    ts = jnp.linspace(0.0, 10.0, 11)
    tr = dlnjax.simulate(dlnjax.flows.KirwanNess(), start, ts, rtol=1e-12, atol=1e-14)
    gn = [
        np.linalg.norm(np.asarray(dlnjax.moments(jax.tree_util.tree_map(lambda y: y[j], tr.ys))))
        for j in range(11)
    ]
    slope = -(np.log(gn[-1]) - np.log(gn[-5])) / (float(ts[-1]) - float(ts[-5]))
    assert abs(slope - slowest) <= 0.02 * slowest, (slope, slowest)
