"""The end-to-end flow ``dX/dt = -A_N(X)[grad E(X)]`` and the metric / volume of ``A_N`` (docs/theory.md §5; seed 003).

References are computed here directly: ``X`` is built as ``U0 S V0^*`` from chosen unitaries and singular values,
so fractional powers of ``X X^*`` and ``X^* X`` are ``U0 diag(s^(2p)) U0^*`` exactly (``0^0 = 1``), or from
``np.linalg.eigh``; ``A_N`` is the explicit sum over ``m``; ``A_inf`` a Gauss–Legendre quadrature of
``int_0^1 (X X^*)^s Z (X^* X)^(1-s) ds``; dense matrices by applying these to basis matrices. Compile time
dominates on CPU, so the ODE tests integrate several systems side by side in one `simulate` call (a tuple state).
"""

from __future__ import annotations

import functools
import math

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import HYP, assert_close, ct, rand_matrix, rand_unitary, seeds
from hypothesis import given
from hypothesis import strategies as st

import dlnjax
from dlnjax._metric import (
    end_to_end_metric,
    end_to_end_multiplier,
    end_to_end_operator,
    end_to_end_operator_inverse,
    log_volume_density,
)
from dlnjax.flows._end_to_end import EndToEnd

INF = math.inf

# --------------------------------------------------------------------------------------------------
# Direct references
# --------------------------------------------------------------------------------------------------


def factored(rng, dN, d0, s, is_complex=False):
    """``X = U0 S V0^*`` (``S`` the ``dN x d0`` diagonal of ``s``) and its spectral data ``(U0, lam, V0, mu)``."""
    r = min(dN, d0)
    s = np.asarray(s, float)
    assert s.shape == (r,)
    U0, V0 = rand_unitary(rng, dN, is_complex), rand_unitary(rng, d0, is_complex)
    S = np.zeros((dN, d0))
    S[np.arange(r), np.arange(r)] = s
    lam, mu = np.zeros(dN), np.zeros(d0)
    lam[:r], mu[:r] = s**2, s**2
    return U0 @ S @ ct(V0), (U0, lam, V0, mu)


def eigh_spec(X):
    """Spectral data from ``np.linalg.eigh`` of the Gram matrices (for generic, well-conditioned X)."""
    lam, U = np.linalg.eigh(X @ ct(X))
    mu, V = np.linalg.eigh(ct(X) @ X)
    return U, np.maximum(lam, 0), V, np.maximum(mu, 0)


def power(U, lam, p):
    """``U diag(lam^p) U^*`` with ``0^0 = 1``."""
    return (U * np.power(lam, p)) @ ct(U)


GL_NODES, GL_WEIGHTS = np.polynomial.legendre.leggauss(60)


def ref_A(spec, Z, depth):
    """``sum_m (XX^*)^((m-1)/N) Z (X^*X)^((N-m)/N)``, or for ``depth = inf`` ``int_0^1 (XX^*)^s Z (X^*X)^(1-s) ds``."""
    U, lam, V, mu = spec
    if depth == INF:
        out = 0
        for x, w in zip(GL_NODES, GL_WEIGHTS):
            s = 0.5 * (x + 1)
            out = out + 0.5 * w * power(U, lam, s) @ Z @ power(V, mu, 1 - s)
        return out
    return sum(
        power(U, lam, (m - 1) / depth) @ Z @ power(V, mu, (depth - m) / depth)
        for m in range(1, depth + 1)
    )


def dense_real(op, shape, is_complex):
    """The real matrix of the real-linear map ``op`` on ``F^shape`` in the coordinates (Re vec, Im vec)."""
    n = int(np.prod(shape))
    basis = []
    for k in range(n):
        e = np.zeros(n)
        e[k] = 1
        basis.append(e.reshape(shape))
    if is_complex:
        basis = basis + [1j * b for b in basis]
    cols = []
    for b in basis:
        y = np.asarray(op(b))
        cols.append(
            np.concatenate([y.real.ravel(), y.imag.ravel()]) if is_complex else y.real.ravel()
        )
    return np.stack(cols, axis=1)


def to_vec(Z, is_complex):
    Z = np.asarray(Z)
    return np.concatenate([Z.real.ravel(), Z.imag.ravel()]) if is_complex else Z.real.ravel()


def linear_loss(C):
    """``E(X) = Re Tr(C^* X)``, whose gradient for ``Re Tr(A^* B)`` is ``C``."""
    C = jnp.asarray(C)
    return lambda X: jnp.sum(jnp.real(jnp.conj(C) * X))


def spectrum_pattern(rng, r, pattern):
    s = rng.uniform(0.4, 1.6, r)
    if pattern == "repeated":
        s = np.full(r, 0.9)
        if r >= 3:
            s[-1] = 0.5
    elif pattern == "zero":
        s[-1] = 0.0
    return s


# --------------------------------------------------------------------------------------------------
# The vector field
# --------------------------------------------------------------------------------------------------


@functools.cache
def _jit_field(depth):
    return jax.jit(lambda X, C: EndToEnd(linear_loss(C), depth)(0.0, X))


@HYP
@given(
    seed=seeds,
    dN=st.integers(1, 3),
    d0=st.integers(1, 3),
    depth=st.sampled_from([1, 2, 3, 5, 8, INF]),
    is_complex=st.booleans(),
    pattern=st.sampled_from(["generic", "repeated", "zero"]),
)
def test_vector_field_is_sum_of_fractional_powers(seed, dN, d0, depth, is_complex, pattern):
    rng = np.random.default_rng(seed)
    X, spec = factored(rng, dN, d0, spectrum_pattern(rng, min(dN, d0), pattern), is_complex)
    C = rand_matrix(rng, (dN, d0), is_complex)
    v = _jit_field(depth)(jnp.asarray(X), jnp.asarray(C))
    assert v.dtype == (jnp.complex128 if is_complex else jnp.float64)
    assert_close(v, -ref_A(spec, C, depth), 1e-12, f"EndToEnd {dN}x{d0} depth {depth} {pattern}")


@pytest.mark.parametrize(
    "shape,is_complex", [((4, 4), False), ((4, 4), True), ((5, 3), False), ((2, 4), True)]
)
def test_operator_against_eigh_fractional_powers(shape, is_complex):
    # generic X, reference fractional powers from np.linalg.eigh of the Gram matrices
    rng = np.random.default_rng(7)
    X = rand_matrix(rng, shape, is_complex) + 0.5 * np.eye(*shape)
    Z = rand_matrix(rng, shape, is_complex)
    spec = eigh_spec(X)
    if shape[0] != shape[1]:  # the structural zeros of the larger Gram matrix are exact
        U, lam, V, mu = spec
        r = min(shape)
        lam[: shape[0] - r], mu[: shape[1] - r] = 0, 0
    for depth in (2, 4, 16, INF):
        assert_close(end_to_end_operator(X, Z, depth), ref_A(spec, Z, depth), 1e-11, f"A_{depth}")


def test_multiplier_closed_form():
    x = np.array([0.0, 0.0, 1.0, 2.0, 2.0, 1e-3, 3.0, 1.0 + 1e-9, 1.0 + 1e-3])
    y = np.array([0.0, 1.5, 1.0, 0.0, 0.5, 5.0, 3.0, 1.0, 1.0])
    for depth in (1, 2, 3, 7, 100):
        ref = [
            sum(xi ** ((m - 1) / depth) * yi ** ((depth - m) / depth) for m in range(1, depth + 1))
            for xi, yi in zip(x, y)
        ]
        assert_close(end_to_end_multiplier(x, y, depth), np.array(ref), 1e-13, f"a_{depth}")
    with np.errstate(divide="ignore", invalid="ignore"):
        logmean = np.where(x == y, x, (x - y) / (np.log(x) - np.log(y)))
    logmean = np.where((x == 0) | (y == 0), 0.0, logmean)
    logmean[7] = (
        1.0 + 0.5e-9
    )  # (x - y)/(ln x - ln y) cancels there; the mean of the two is exact to O(1e-18)
    assert_close(end_to_end_multiplier(x, y, INF), logmean, 1e-12, "a_inf")


def test_multiplier_derivatives_smooth_at_the_diagonal():
    # d/dx a(x, y) across x = y (both branches: Taylor and closed form) against central differences
    x = 1.3 * np.array([1.0, 1 + 1e-6, 1 - 3e-5, 1 + 2e-4, 1 - 0.3, 1.6])
    h = 1e-4
    for depth in (3, INF):
        a = lambda x: end_to_end_multiplier(x, 1.3, depth)
        grad = jax.jit(jax.vmap(jax.grad(a)))(x)
        fd = (a(x + h) - a(x - h)) / (2 * h)
        assert np.max(np.abs(grad - fd)) < 1e-8, depth


def test_kappa_term():
    rng = np.random.default_rng(3)
    X, C = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    for depth in (1, 4, INF):
        base = EndToEnd(linear_loss(C), depth)(0.0, X)
        decay = 0.3 if depth == INF else 0.3 * depth
        assert_close(
            EndToEnd(linear_loss(C), depth, kappa=0.3)(0.0, X), base - decay * X, 1e-14, "kappa"
        )


# --------------------------------------------------------------------------------------------------
# Trajectories: the weight flow from balanced starts, and the infinite-depth limit
# --------------------------------------------------------------------------------------------------


class _Product:
    """Several vector fields integrated side by side (one compile for all)."""

    def __init__(self, fields):
        self.fields = fields

    def __call__(self, t, ys, args):
        return tuple(f(t, y, args) for f, y in zip(self.fields, ys))


def test_weight_flow_from_balanced_start_matches_end_to_end():
    rng = np.random.default_rng(11)
    cases = [  # (shape, depth, is_complex, kappa): N = 2, 3, 8, square and rectangular, one complex, one with kappa
        ((3, 3), 2, False, 0.0),
        ((4, 2), 2, False, 0.3),
        ((3, 3), 3, True, 0.0),
        ((2, 3), 3, False, 0.0),
        ((3, 3), 8, False, 0.0),
        ((4, 2), 8, False, 0.0),
    ]
    X0s, weight_flows, e2e_flows = [], [], []
    for shape, depth, is_complex, kappa in cases:
        X0s.append(
            jnp.asarray(factored(rng, *shape, rng.uniform(0.5, 1.2, min(shape)), is_complex)[0])
        )
        M = jnp.asarray(rand_matrix(rng, shape, is_complex))
        loss = lambda X, M=M: 0.5 * jnp.sum(jnp.abs(X - M) ** 2)
        weight_flows.append(
            dlnjax.flows.Regularized(loss, kappa) if kappa else dlnjax.flows.Gradient(loss)
        )
        e2e_flows.append(EndToEnd(loss, depth, kappa=kappa))

    @jax.jit  # one compile for everything
    def run(X0s):
        nets = [dlnjax.fiber_center(X0, depth) for X0, (_, depth, _, _) in zip(X0s, cases)]
        product = _Product(weight_flows + e2e_flows)
        traj = dlnjax.simulate(
            product, tuple(nets) + tuple(X0s), jnp.array([0.0, 0.4, 1.0]), rtol=1e-11, atol=1e-12
        )
        n = len(cases)
        errs = [
            jnp.max(jnp.abs(jax.vmap(dlnjax.end_to_end)(traj.ys[c]) - traj.ys[n + c]))
            for c in range(n)
        ]
        moved = [jnp.max(jnp.abs(traj.ys[n + c][-1] - X0s[c])) for c in range(n)]
        balance = [dlnjax.balancedness(net) for net in nets]
        return jnp.stack(errs), jnp.stack(moved), jnp.stack(balance), traj.success

    errs, moved, balance, success = run(tuple(X0s))
    assert bool(success)
    assert np.all(np.asarray(balance) < 1e-13)  # balanced starts
    assert np.all(np.asarray(moved) > 0.1)
    for c, case in enumerate(cases):
        assert errs[c] < 1e-8, (
            f"(shape, N, complex, kappa) = {case}: |X_weights - X_end_to_end| = {float(errs[c]):.2e}"
        )


DEPTHS = (4, 8, 16, 32, 64)


def test_depth_N_with_time_rescaled_converges_to_depth_inf():
    # Y_N(tau) = X_N(tau / N) solves dY/dtau = -(A_N / N)[grad E]; compare with X_inf(tau) at tau = 1.
    rng = np.random.default_rng(5)
    X0 = factored(rng, 3, 3, np.array([1.4, 0.8, 0.3]))[0]
    M = jnp.asarray(rng.standard_normal((3, 3)))
    loss = lambda X: 0.5 * jnp.sum((X - M) ** 2)

    def rescaled(depth):
        flow = EndToEnd(loss, depth)
        return lambda t, y, args: flow(t / depth, y, args) / depth

    fields = [rescaled(n) for n in DEPTHS] + [EndToEnd(loss, INF)]
    traj = dlnjax.simulate(
        _Product(fields),
        (jnp.asarray(X0),) * len(fields),
        jnp.array([0.0, 1.0]),
        rtol=1e-12,
        atol=1e-13,
    )
    assert bool(traj.success)
    final = [y[-1] for y in traj.ys]
    errs = np.array([float(jnp.linalg.norm(x - final[-1])) for x in final[:-1]])
    order = -np.polyfit(np.log(DEPTHS), np.log(errs), 1)[0]
    # measured: errors 0.25, 0.125, 0.064, 0.032, 0.016 at N = 4..64, order 0.98 (A_N / N - A_inf = O(1/N))
    assert 0.9 < order < 1.1, f"errors {errs}, fitted order {order:.3f}"
    assert np.all(np.diff(errs) < 0)
    assert errs[-1] < 0.05


# --------------------------------------------------------------------------------------------------
# Metric, inverse and volume against dense matrices
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 3), (4, 2), (2, 3)])
@pytest.mark.parametrize("depth", [2, 5, INF])
def test_operator_inverse_metric_volume_dense(shape, depth):
    rng = np.random.default_rng(17)
    r = min(shape)
    X1, spec1 = factored(rng, *shape, rng.uniform(0.5, 1.5, r))
    X2, spec2 = factored(rng, *shape, rng.uniform(0.3, 2.0, r))
    D1 = dense_real(lambda Z: ref_A(spec1, Z, depth), shape, False)
    D2 = dense_real(lambda Z: ref_A(spec2, Z, depth), shape, False)
    assert np.allclose(D1, D1.T, atol=1e-12)  # self-adjoint: sanity of the reference
    ours = dense_real(lambda Z: end_to_end_operator(X1, Z, depth), shape, False)
    assert_close(ours, D1, 1e-12, "dense A_N")
    Z1, Z2 = rng.standard_normal(shape), rng.standard_normal(shape)
    singular = (
        depth == INF and shape[0] != shape[1]
    )  # A_inf kills u_i v_j^* with u_i in ker X^* (or v_j in ker X)
    Dinv = np.linalg.pinv(D1, rcond=1e-10) if singular else np.linalg.inv(D1)
    assert_close(
        end_to_end_operator_inverse(X1, Z1, depth),
        (Dinv @ Z1.ravel()).reshape(shape),
        1e-11,
        "inverse",
    )
    g = float(end_to_end_metric(X1, Z1, Z2, depth))
    assert abs(g - Z1.ravel() @ Dinv @ Z2.ravel()) < 1e-11 * max(1.0, abs(g)), "metric"
    assert (
        abs(
            float(end_to_end_metric(X1, Z1, Z2, depth))
            - float(end_to_end_metric(X1, Z2, Z1, depth))
        )
        < 1e-12
    )
    lv1, lv2 = float(log_volume_density(X1, depth)), float(log_volume_density(X2, depth))
    if singular:
        assert (
            np.linalg.matrix_rank(D1, tol=1e-10) == r * r
        )  # only the u_i v_j^* with i, j <= rank survive
        assert lv1 == np.inf and lv2 == np.inf
        return
    ld1, ld2 = np.linalg.slogdet(D1)[1], np.linalg.slogdet(D2)[1]
    # density sqrt(det G), G = D^{-1}: ratios between points (and the absolute value: no hidden constant)
    assert abs((lv1 - lv2) - (-0.5 * (ld1 - ld2))) < 1e-10
    assert abs(lv1 - (-0.5 * ld1)) < 1e-10


@pytest.mark.parametrize("shape,depth", [((3, 2), 3), ((2, 2), INF)])
def test_volume_density_complex_dense(shape, depth):
    rng = np.random.default_rng(23)
    X, spec = factored(rng, *shape, rng.uniform(0.5, 1.5, min(shape)), True)
    D = dense_real(lambda Z: ref_A(spec, Z, depth), shape, True)  # 2 dN d0 real coordinates
    assert abs(float(log_volume_density(X, depth)) - (-0.5 * np.linalg.slogdet(D)[1])) < 1e-10
    Z1, Z2 = rand_matrix(rng, shape, True), rand_matrix(rng, shape, True)
    ref = to_vec(Z1, True) @ np.linalg.solve(D, to_vec(Z2, True))
    assert abs(float(end_to_end_metric(X, Z1, Z2, depth)) - ref) < 1e-11 * max(1, abs(ref))


def test_rank_deficient_square():
    # finite N: A_N singular iff ker X and ker X^* are both nontrivial; pseudo-inverse, density +inf
    rng = np.random.default_rng(29)
    X, spec = factored(rng, 3, 3, np.array([1.2, 0.7, 0.0]))
    D = dense_real(lambda Z: ref_A(spec, Z, 3), (3, 3), False)
    Z = rng.standard_normal((3, 3))
    assert_close(
        end_to_end_operator_inverse(X, Z, 3),
        (np.linalg.pinv(D, rcond=1e-10) @ Z.ravel()).reshape(3, 3),
        1e-10,
    )
    assert float(log_volume_density(X, 3)) == np.inf
    assert np.isfinite(float(log_volume_density(X + 1e-3 * np.eye(3), 3)))


# --------------------------------------------------------------------------------------------------
# Derivatives
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape,s,is_complex,depths",
    [
        ((3, 3), [1.0, 1.0, 0.6], False, (2, INF)),
        ((4, 4), [0.8, 0.8, 0.8, 1.5], True, (3, INF)),
        ((5, 2), [1.1, 1.1], False, (9, INF)),
        ((2, 4), [1.3, 0.4], True, (3,)),
    ],
)
def test_operator_jvp_at_repeated_singular_values(shape, s, is_complex, depths):
    # (the rectangular cases have a repeated zero eigenvalue in the larger Gram matrix)
    rng = np.random.default_rng(31)
    X = factored(rng, *shape, np.array(s), is_complex)[0]
    Z, dX, dZ = (jnp.asarray(rand_matrix(rng, shape, is_complex)) for _ in range(3))
    with_volume = [
        d for d in depths if not (d == INF and shape[0] != shape[1])
    ]  # else density +inf

    def values(X, Z):
        ops = [
            f(X, Z, d) for d in depths for f in (end_to_end_operator, end_to_end_operator_inverse)
        ]
        return ops, [log_volume_density(X, d) for d in with_volume]

    @jax.jit
    def derivatives(X, Z):
        _, tangents = jax.jvp(lambda X, Z: values(X, Z)[0], (X, Z), (dX, dZ))
        grads = [jax.grad(lambda X: log_volume_density(X, d))(X) for d in with_volume]
        return tangents, [
            jnp.sum(jnp.real(g * dX)) for g in grads
        ]  # jax.grad of a real function: conj convention

    h = 1e-5
    values = jax.jit(values)
    X = jnp.asarray(X)
    (op_p, vol_p), (op_m, vol_m) = values(X + h * dX, Z + h * dZ), values(X - h * dX, Z - h * dZ)
    tangents, directional = derivatives(X, Z)
    for k, t in enumerate(tangents):
        assert np.all(np.isfinite(np.asarray(t)))
        assert_close(t, (op_p[k] - op_m[k]) / (2 * h), 1e-8, f"jvp {k}")
    for d, g, vp, vm in zip(with_volume, directional, vol_p, vol_m):
        fd = float(vp - vm) / (2 * h)
        assert abs(float(g) - fd) < 1e-8 * max(1, abs(fd)), f"volume gradient depth {d}"


def test_gradient_through_simulate_matches_finite_differences():
    # jax.grad of a final loss of simulate w.r.t. X0, at starts with repeated singular values (and a rectangular
    # one, whose larger Gram matrix has a repeated zero eigenvalue). Fixed steps: the discrete map is smooth in X0.
    rng = np.random.default_rng(37)
    cases = [((3, 3), [1.0, 1.0, 0.6], 3, False), ((4, 2), [0.9, 0.9], INF, False)]
    X0s, fields, targets = [], [], []
    for shape, s, depth, is_complex in cases:
        X0s.append(jnp.asarray(factored(rng, *shape, np.array(s), is_complex)[0]))
        M = jnp.asarray(rand_matrix(rng, shape, is_complex))
        fields.append(EndToEnd(lambda X, M=M: 0.5 * jnp.sum(jnp.abs(X - M) ** 2), depth))
        targets.append(jnp.asarray(rand_matrix(rng, shape, is_complex)))

    def finals(X0s):
        traj = dlnjax.simulate(
            _Product(fields), tuple(X0s), jnp.array([0.0, 0.5]), dt0=0.05, solver=dfx.Tsit5()
        )
        out = jnp.stack([jnp.sum(jnp.abs(x[-1] - T) ** 2) for x, T in zip(traj.ys, targets)])
        return jnp.sum(out), out

    value_and_grad = jax.jit(jax.value_and_grad(finals, has_aux=True))
    (_, _), grads = value_and_grad(tuple(X0s))
    h = 1e-5
    for c, (shape, _s, _depth, is_complex) in enumerate(cases):
        g = grads[c]
        assert np.all(np.isfinite(np.asarray(g)))
        for _ in range(2):
            d = jnp.asarray(rand_matrix(rng, shape, is_complex))
            plus = [x + h * d if k == c else x for k, x in enumerate(X0s)]
            minus = [x - h * d if k == c else x for k, x in enumerate(X0s)]
            fd = float(
                value_and_grad(tuple(plus))[0][1][c] - value_and_grad(tuple(minus))[0][1][c]
            ) / (2 * h)
            directional = float(
                jnp.sum(jnp.real(g * d))
            )  # jax.grad of a real function: conj convention
            assert abs(directional - fd) < 1e-7 * max(1.0, abs(fd)), (
                f"case {c}: grad {directional} vs fd {fd}"
            )


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


def test_bad_input():
    loss = lambda X: jnp.sum(X**2)
    for bad in (0, -1, 2.5, 2.0, "3", None, True, -INF):
        with pytest.raises(ValueError, match="depth must be a positive integer or math.inf"):
            EndToEnd(loss, bad)
        with pytest.raises(ValueError, match="depth must be a positive integer or math.inf"):
            end_to_end_operator(jnp.ones((2, 2)), jnp.ones((2, 2)), bad)
    assert EndToEnd(loss, np.int64(3)).depth == 3
    flow = EndToEnd(loss, 3)
    with pytest.raises(ValueError, match="2-D matrix"):
        flow(0.0, jnp.ones(3))
    with pytest.raises(ValueError, match="2-D matrix"):
        dlnjax.simulate(flow, jnp.ones((2, 2, 2)), jnp.array([0.0, 1.0]))
    with pytest.raises(TypeError, match="end_to_end"):
        flow(0.0, dlnjax.fiber_center(jnp.eye(2), 3))
    with pytest.raises(ValueError, match="real scalar"):
        EndToEnd(lambda X: X, 2)(0.0, jnp.eye(2))
    with pytest.raises(ValueError, match="shape of X"):
        end_to_end_operator(jnp.eye(2), jnp.ones((2, 3)), 2)
    with pytest.raises(ValueError, match="Z2 must have the shape of X"):
        end_to_end_metric(jnp.eye(2), jnp.eye(2), jnp.ones(2), 2)
    with pytest.raises(ValueError, match="2-D matrix"):
        log_volume_density(jnp.ones(3), 2)
    with pytest.raises(TypeError, match="callable"):
        EndToEnd(3.0, 2)
