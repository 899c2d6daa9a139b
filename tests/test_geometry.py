"""Geometry of the product map and its fibers (docs/theory.md §1-3).

References: explicit partial products P_k, Q_k (Python loops), the dense real Jacobian of the explicit
product (jax.jacfwd on real and imaginary parts) and its pseudo-inverse (np.linalg.pinv).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest
from conftest import (
    HYP,
    NONUNIFORM,
    assert_close,
    ct,
    dense_jacobian,
    dense_tangent_projection,
    explicit_moments,
    explicit_partials,
    explicit_product,
    explicit_tangent_vector,
    padding_max_abs,
    rand_invertible,
    rand_layers,
    rand_matrix,
    real_inner,
    seeds,
    sq_norm,
    widths_st,
)
from hypothesis import given
from hypothesis import strategies as st

import dlnjax

# --------------------------------------------------------------------------------------------------
# dX, dX^*, <.,.>, partial Gram matrices, network gradient
# --------------------------------------------------------------------------------------------------


def _quartic(T):
    """A non-quadratic loss E(X) = sum |X - T|^4 (real-valued for complex X)."""
    return lambda X: jnp.sum(jnp.abs(X - T) ** 4)


@jax.jit
def _geometry_quantities(layers, V, Z, T):
    net, v = dlnjax.DLN(layers), dlnjax.DLN(V)
    adj = dlnjax.product_adjoint(net, Z)
    _, dG_adj = jax.jvp(dlnjax.moments, (net,), (adj,))
    A, B = dlnjax.partial_grams(net)
    return dict(
        dXV=dlnjax.product_differential(net, v),
        adj=adj,
        dG_adj=dG_adj,
        inner=dlnjax.inner(net, v),
        A=A,
        B=B,
        LZ=dlnjax.normal_operator(net).mv(Z),
        grad=dlnjax.network_gradient(_quartic(T), net),
    )


def _check_geometry(widths, is_complex, seed):
    rng = np.random.default_rng(seed)
    W = rand_layers(seed, widths, is_complex)
    V = rand_layers(seed + 1, widths, is_complex)
    Z = rand_matrix(rng, (widths[-1], widths[0]), is_complex)
    T = rand_matrix(rng, (widths[-1], widths[0]), is_complex)
    q = _geometry_quantities(W, V, Z, T)
    n = len(W)
    P, Q = explicit_partials(W)

    # dX(V) = sum_k P_k V_k Q_k
    dXV = sum(P[k] @ V[k] @ Q[k] for k in range(n))
    assert_close(q["dXV"], dXV, 1e-13, "product_differential")
    # dX^*(Z)_k = P_k^* Z Q_k^*, with zero padding
    adj_ref = [ct(P[k]) @ Z @ ct(Q[k]) for k in range(n)]
    assert_close(q["adj"].layers, adj_ref, 1e-13, "product_adjoint")
    assert padding_max_abs(q["adj"]) == 0.0
    # adjointness for <A, B> = Re Tr(A^* B): <dX(V), Z> = <V, dX^*(Z)>
    lhs = float(np.real(np.vdot(dXV, Z)))
    rhs = real_inner(V, q["adj"].layers)
    assert abs(lhs - rhs) <= 1e-13 * np.linalg.norm(dXV) * np.linalg.norm(Z)
    # inner product
    assert abs(float(q["inner"]) - real_inner(W, V)) <= 1e-13 * np.sqrt(sq_norm(W) * sq_norm(V))
    # partial Gram matrices A_k = P_k P_k^*, B_k = Q_k^* Q_k
    A, B = np.asarray(q["A"]), np.asarray(q["B"])
    assert A.shape == (n, widths[-1], widths[-1]) and B.shape == (n, widths[0], widths[0])
    assert_close(A, np.stack([p @ ct(p) for p in P]), 1e-13, "partial_grams A")
    assert_close(B, np.stack([ct(x) @ x for x in Q]), 1e-13, "partial_grams B")
    # normal operator (dX dX^*)(Z) = sum_k A_k Z B_k = dX(dX^*(Z))
    LZ = sum(P[k] @ adj_ref[k] @ Q[k] for k in range(n))
    assert_close(q["LZ"], LZ, 1e-13, "normal_operator")
    # G is conserved by every gradient flow: dG(dX^*(Z)) = 0
    if n > 1:
        scale = max(np.max(np.abs(a)) for a in adj_ref) * max(np.max(np.abs(w)) for w in W)
        assert float(np.max(np.abs(np.asarray(q["dG_adj"])))) <= 1e-13 * scale, "dG(dX^*(Z)) != 0"
    # network gradient: P_k^* grad E(X) Q_k^*, grad E(X) = 4 |X - T|^2 (X - T) for the real inner product
    X = explicit_product(W)
    gE = 4 * np.abs(X - T) ** 2 * (X - T)
    grad_ref = [ct(P[k]) @ gE @ ct(Q[k]) for k in range(n)]
    assert_close(q["grad"].layers, grad_ref, 1e-12, "network_gradient")
    # and it is the gradient for Re Tr: d/de E(X(W + e V)) at e = 0 equals <grad, V>
    E = _quartic(jnp.asarray(T))
    f = lambda e: E(explicit_product([jnp.asarray(w) + e * jnp.asarray(v) for w, v in zip(W, V)]))
    _, dE = jax.jvp(f, (0.0,), (1.0,))
    gV = real_inner(q["grad"].layers, V)
    assert abs(float(dE) - gV) <= 1e-12 * max(
        abs(float(dE)), np.sqrt(sq_norm(grad_ref) * sq_norm(V))
    )


@HYP
@given(widths=widths_st(), is_complex=st.booleans(), seed=seeds)
def test_geometry_identities_random(widths, is_complex, seed):
    _check_geometry(widths, is_complex, seed)


@pytest.mark.parametrize("widths", [NONUNIFORM, (3, 3, 3, 3), (2, 5, 4), (3, 2)])
def test_geometry_identities_complex_cases(widths):
    _check_geometry(widths, True, 5)


def test_network_gradient_is_the_steepest_descent_direction_for_complex():
    """E(W - e g) - E(W + e g) = -2 e ||g||^2 + O(e^3) for the real-inner-product gradient g (central differences)."""
    widths = (2, 3, 2)
    W = rand_layers(0, widths, True)
    T = rand_matrix(np.random.default_rng(1), (2, 2), True)
    E = _quartic(jnp.asarray(T))
    g = [np.asarray(x) for x in dlnjax.network_gradient(E, dlnjax.DLN(W)).layers]
    energy = lambda layers: float(E(explicit_product([jnp.asarray(w) for w in layers])))
    eps = 1e-5
    minus = [w - eps * gk for w, gk in zip(W, g)]
    plus = [w + eps * gk for w, gk in zip(W, g)]
    slope = (energy(plus) - energy(minus)) / (2 * eps)
    assert abs(slope - sq_norm(g)) <= 1e-7 * sq_norm(g)
    # jax.grad's raw output (the conjugate) is not a descent direction of the same slope
    raw = [np.conj(x) for x in g]
    slope_raw = (
        energy([w + eps * r for w, r in zip(W, raw)])
        - energy([w - eps * r for w, r in zip(W, raw)])
    ) / (2 * eps)
    assert abs(slope_raw - sq_norm(g)) > 1e-3 * sq_norm(g)


# --------------------------------------------------------------------------------------------------
# Tangent projection onto the fiber (docs/theory.md §3)
# --------------------------------------------------------------------------------------------------


def _fiber_quantities(layers, V, U, rhs):
    net, v, u = dlnjax.DLN(layers), dlnjax.DLN(V), dlnjax.DLN(U)
    pv = dlnjax.fiber_tangent_projection(net, v)
    out = dict(
        pv=pv,
        nv=dlnjax.fiber_normal_projection(net, v),
        nv_rhs=dlnjax.fiber_normal_projection(net, v, rhs=dlnjax.product_differential(net, v)),
        pu=dlnjax.fiber_tangent_projection(net, u),
        ppv=dlnjax.fiber_tangent_projection(net, pv),
        dX_pv=dlnjax.product_differential(net, pv),
        pv_chol=dlnjax.fiber_tangent_projection(net, v, solver=lx.Cholesky()),
        pv_svd=dlnjax.fiber_tangent_projection(net, v, solver=lx.SVD()),
        pv_lxcg=dlnjax.fiber_tangent_projection(
            net, v, solver=lx.CG(rtol=1e-12, atol=1e-12, max_steps=500)
        ),
        pw=dlnjax.fiber_tangent_projection(net, net),
        lam=dlnjax.solve_normal(net, rhs),
        lam_chol=dlnjax.solve_normal(net, rhs, solver=lx.Cholesky()),
    )
    out["L_lam"] = dlnjax.normal_operator(net).mv(out["lam"])
    if net.depth > 1:
        out["lemma5"] = dlnjax.internal.fiber_l2_gradient_lemma5(net)
    return out


_fiber_quantities_jit = eqx.filter_jit(_fiber_quantities)

FIBER_CASES = [
    (NONUNIFORM, False),  # wide X (2 x 3), padded inner widths
    (NONUNIFORM, True),
    ((2, 5, 4), False),  # depth 2, tall X (4 x 2), inner width above rank X
    ((3, 3, 3, 3), True),  # square
    ((4, 3, 3, 2), True),  # wide X (2 x 4), inner width above rank X
    ((3, 2), False),  # depth 1: dX = identity, the fiber is a point
]


@pytest.fixture(
    scope="module", params=FIBER_CASES, ids=lambda c: f"{c[0]}-{'complex' if c[1] else 'real'}"
)
def fiber_case(request):
    widths, is_complex = request.param
    rng = np.random.default_rng(21)
    W = rand_layers(3, widths, is_complex)
    V = rand_layers(4, widths, is_complex)
    U = rand_layers(5, widths, is_complex)
    rhs = rand_matrix(rng, (widths[-1], widths[0]), is_complex)
    q = _fiber_quantities_jit(W, V, U, rhs)
    return dict(
        widths=widths,
        W=W,
        V=V,
        U=U,
        rhs=rhs,
        q=q,
        ref_pv=dense_tangent_projection(W, V),
        ref_pw=dense_tangent_projection(W, W),
        jac_norm=np.linalg.norm(dense_jacobian(W), 2),
    )


# The default FiberCG stops when its estimate of the projection error is below atol ||V|| = 1e-12 ||V|| (or
# rtol = 1e-10 times the smaller part); lineax.CG runs to rtol = atol = 1e-12 on the normal system. Measured
# errors on these instances are ~1e-15. Dense solves are at round-off.
CG_TOL = 1e-12
DENSE_TOL = 1e-13


def test_projection_is_tangent(fiber_case):
    q, V = fiber_case["q"], fiber_case["V"]
    # |dX(Pi_T V)| relative to ||dX|| ||V|| (||dX|| = spectral norm of the dense Jacobian)
    bound = 1e-13 * fiber_case["jac_norm"] * np.sqrt(sq_norm(V))
    assert float(np.max(np.abs(q["dX_pv"]))) <= bound
    P, Q = explicit_partials(fiber_case["W"])
    dX = sum(P[k] @ np.asarray(q["pv"].layers[k]) @ Q[k] for k in range(len(V)))
    assert float(np.max(np.abs(dX))) <= bound


def test_projection_is_orthogonal_and_idempotent(fiber_case):
    q, V = fiber_case["q"], fiber_case["V"]
    pv, pu, ppv = q["pv"].layers, q["pu"].layers, q["ppv"].layers
    resid = [np.asarray(v) - np.asarray(p) for v, p in zip(V, pv)]
    # V - Pi_T V is orthogonal to the tangent space (tested against Pi_T U for a random U)
    scale = np.sqrt(sq_norm(V) * sq_norm(pu))
    assert abs(real_inner(resid, pu)) <= 1e-11 * scale
    # idempotence
    assert_close(ppv, pv, CG_TOL, "Pi_T(Pi_T V) = Pi_T V")
    # tangent + normal = V (both computations, with and without the closed-form rhs)
    total = [np.asarray(p) + np.asarray(nv) for p, nv in zip(pv, q["nv"].layers)]
    assert_close(total, V, 1e-13, "tangent + normal = V")
    assert_close(q["nv_rhs"].layers, q["nv"].layers, 1e-13, "normal projection with rhs = dX(V)")
    # the projection does not increase the norm, and the normal part is orthogonal to the tangent part
    assert sq_norm(pv) <= sq_norm(V) * (1 + 1e-12)
    assert abs(real_inner(pv, q["nv"].layers)) <= 1e-11 * sq_norm(V)
    assert padding_max_abs(q["pv"]) == 0.0 and padding_max_abs(q["nv"]) == 0.0


def test_projection_equals_dense_pinv_reference(fiber_case):
    q, ref = fiber_case["q"], fiber_case["ref_pv"]
    scale = np.sqrt(sq_norm(fiber_case["V"]))
    for key, tol in (
        ("pv", CG_TOL),
        ("pv_lxcg", CG_TOL),
        ("pv_chol", DENSE_TOL),
        ("pv_svd", DENSE_TOL),
    ):
        err = max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(q[key].layers, ref))
        assert err <= tol * scale, f"{key}: {err:.2e}"
    if len(fiber_case["widths"]) == 2:  # depth one: the fiber is a point, Pi_T = 0
        assert float(np.max(np.abs(np.asarray(q["pv"].layers[0])))) <= 1e-13


def test_solve_normal(fiber_case):
    q, rhs = fiber_case["q"], fiber_case["rhs"]
    assert_close(q["L_lam"], rhs, 1e-12, "(dX dX^*)(solve_normal(rhs)) = rhs")
    assert_close(q["lam"], q["lam_chol"], 1e-12, "CG vs Cholesky solve_normal")


def test_lemma5_equals_tangent_projection_of_W(fiber_case):
    """Lemma 5 (w_b with H(b) = G) and the normal system give the same fiber gradient of 1/2 ||W||^2."""
    q = fiber_case["q"]
    scale = np.sqrt(sq_norm(fiber_case["W"]))
    err = max(
        float(np.max(np.abs(np.asarray(a) - b)))
        for a, b in zip(q["pw"].layers, fiber_case["ref_pw"])
    )
    assert err <= CG_TOL * scale
    if "lemma5" not in q:  # depth one: see test_lemma5_at_depth_one
        return
    lem = q["lemma5"]
    assert len(lem) == len(fiber_case["W"])
    assert tuple(w.shape for w in lem) == tuple(np.shape(w) for w in fiber_case["W"])
    err = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(lem, q["pw"].layers)
    )
    assert err <= 1e-12 * scale, f"Lemma 5 vs Pi_T(W): {err:.2e}"


def test_lemma5_at_depth_one():
    W = rand_layers(0, (3, 2))
    out = dlnjax.internal.fiber_l2_gradient_lemma5(dlnjax.DLN(W))
    assert len(out) == 1 and out[0].shape == (2, 3)
    assert float(np.max(np.abs(np.asarray(out[0])))) == 0.0


@pytest.mark.parametrize(
    "widths, is_complex", [(NONUNIFORM, True), ((3, 3, 3, 3), False), ((2, 4, 3), True)]
)
def test_lemma5_tangent_vectors_and_operator(widths, is_complex):
    """w_a is tangent (dX(w_a) = 0) and <w_a, w_b> = sum_k Re Tr(b_k^* H_k(a)) (Lemma 2.9 of seed 001)."""
    W = rand_layers(8, widths, is_complex)
    rng = np.random.default_rng(9)
    a = tuple(rand_matrix(rng, (d, d), is_complex) for d in widths[1:-1])
    b = tuple(rand_matrix(rng, (d, d), is_complex) for d in widths[1:-1])

    @jax.jit
    def run(W, a, b):
        net = dlnjax.DLN(W)
        wa, wb = dlnjax.internal.tangent_vector(net, a), dlnjax.internal.tangent_vector(net, b)
        return wa, wb, dlnjax.internal.lemma5_operator(net, a)

    wa, wb, Ha = run(W, a, b)
    n = len(W)
    # explicit (w_a)_k = a_k W_k - W_k a_{k-1}, a_0 = a_N = 0
    ref = explicit_tangent_vector(W, a)
    assert_close(wa, ref, 1e-13, "tangent_vector")
    P, Q = explicit_partials(W)
    dX = sum(P[k] @ np.asarray(wa[k]) @ Q[k] for k in range(n))
    assert np.max(np.abs(dX)) <= 1e-13 * np.sqrt(sq_norm(ref)) * max(
        np.linalg.norm(p, 2) * np.linalg.norm(x, 2) for p, x in zip(P, Q)
    )
    lhs = real_inner(wb, wa)
    rhs = sum(float(np.real(np.trace(ct(bk) @ np.asarray(hk)))) for bk, hk in zip(b, Ha))
    assert abs(lhs - rhs) <= 1e-12 * np.sqrt(sq_norm(wa) * sq_norm(wb))


# --------------------------------------------------------------------------------------------------
# Rank-deficient X
# --------------------------------------------------------------------------------------------------


def _rank_deficient_exact():
    """An exactly rank-2 4 x 4 X: balanced layers (L V^*, L, U L) with L = diag(1.3, 0.8, 0, 0), then unbalanced by the group action."""
    rng = np.random.default_rng(30)
    U, Vm = (
        np.linalg.qr(rng.standard_normal((4, 4)))[0],
        np.linalg.qr(rng.standard_normal((4, 4)))[0],
    )
    L = np.diag([1.3, 0.8, 0.0, 0.0])
    A = [rand_invertible(rng, 4, False) for _ in range(2)]
    layers = [A[0] @ L @ Vm.T, A[1] @ L @ np.linalg.inv(A[0]), U @ L @ np.linalg.inv(A[1])]
    return layers


def _rank_deficient_center():
    """The centre of a numerically rank-2 4 x 4 X, unbalanced by the group action."""
    rng = np.random.default_rng(31)
    X = rng.standard_normal((4, 2)) @ rng.standard_normal((2, 4))
    # The centre of a numerically rank-2 X built without fiber_center's rank cutoff: Lambda = s^(1/3) lifts the
    # rounding-level singular values s_3, s_4 ~ 1e-16 to ~5e-6 in every layer (dX onto only numerically).
    u, s, vh = np.linalg.svd(X)
    lam = np.diag(s ** (1 / 3))
    c = dlnjax.DLN([lam @ vh, lam, u @ lam])
    A = [rand_invertible(rng, 4, False) for _ in range(2)]
    return [np.asarray(w) for w in dlnjax.group_action(A, c).layers]


RANK_DEFICIENT = {"exact": _rank_deficient_exact, "fiber_center": _rank_deficient_center}


@pytest.fixture(scope="module", params=list(RANK_DEFICIENT))
def rank_deficient(request):
    W = RANK_DEFICIENT[request.param]()
    V = rand_layers(32, (4, 4, 4, 4))
    X = explicit_product(W)
    s = np.linalg.svd(X, compute_uv=False)
    assert s[2] <= 1e-14 * s[0]  # rank 2
    G = explicit_moments(W)
    assert max(np.max(np.abs(g)) for g in G) > 0.1  # unbalanced
    J = dense_jacobian(W)
    sj = np.linalg.svd(J, compute_uv=False)
    assert sj[-1] <= 1e-9 * sj[0]  # dX is not onto
    return dict(W=W, V=V, ref=dense_tangent_projection(W, V))


_proj_jit = eqx.filter_jit(
    lambda W, V, solver: (
        dlnjax.fiber_tangent_projection(dlnjax.DLN(W), dlnjax.DLN(V), solver=solver).layers
    )
)


def test_rank_deficient_svd_gives_least_squares_projection(rank_deficient):
    out = _proj_jit(rank_deficient["W"], rank_deficient["V"], lx.SVD())
    assert_close(out, rank_deficient["ref"], 1e-11, "lineax.SVD at rank-deficient X")
    # and it is tangent
    P, Q = explicit_partials(rank_deficient["W"])
    dX = sum(P[k] @ np.asarray(out[k]) @ Q[k] for k in range(3))
    assert np.max(np.abs(dX)) <= 1e-11 * np.sqrt(sq_norm(rank_deficient["V"])) * 10


def test_rank_deficient_cg(rank_deficient, request):
    if request.node.callspec.params["rank_deficient"] == "exact":
        # Exactly rank-deficient X (zero singular values in the layers): CG gives the least-squares projection.
        out = _proj_jit(rank_deficient["W"], rank_deficient["V"], None)
        assert_close(out, rank_deficient["ref"], 1e-10, "default CG at rank-deficient X")
    else:
        # Only numerically rank-deficient (sigma_3 ~ 1e-16 sigma_1): the system is ill-posed, and CG must say so
        # clearly (naming the least-squares remedy) rather than return garbage.
        with pytest.raises(RuntimeError, match="lineax.SVD"):
            jax.block_until_ready(_proj_jit(rank_deficient["W"], rank_deficient["V"], None))


def test_rank_deficient_cholesky_raises(rank_deficient):
    with pytest.raises(RuntimeError, match="normal-system solve"):
        jax.block_until_ready(_proj_jit(rank_deficient["W"], rank_deficient["V"], lx.Cholesky()))


# --------------------------------------------------------------------------------------------------
# The normal operator at a balanced point and the balanced preconditioner (docs/theory.md §3)
# --------------------------------------------------------------------------------------------------


@eqx.filter_jit
def _balanced_ops(X, depth, basis, lam):
    c = dlnjax.fiber_center(X, depth)
    L = dlnjax.normal_operator(c)
    M = dlnjax.balanced_preconditioner(c)
    return jax.vmap(L.mv)(basis), jax.vmap(M.mv)(basis), M.mv(L.mv(lam))


@pytest.mark.parametrize(
    "shape, depth, is_complex",
    [
        ((4, 4), 3, False),
        ((3, 3), 4, True),
        ((2, 4), 3, False),
        ((4, 3), 2, True),
        ((3, 3), 1, False),
    ],
)
def test_normal_operator_is_diagonal_at_balance_and_preconditioner_inverts_it(
    shape, depth, is_complex
):
    rng = np.random.default_rng(40)
    X = rand_matrix(rng, shape, is_complex)
    U, s, Vh = np.linalg.svd(X)  # full bases
    dN, d0 = shape
    sig_u = np.concatenate([s, np.zeros(dN - len(s))])  # sigma_i (0 beyond the rank)
    sig_v = np.concatenate([s, np.zeros(d0 - len(s))])
    power = lambda x, e: np.where(e == 0, 1.0, np.abs(x) ** e)  # convention 0^0 = 1
    a = np.zeros((dN, d0))
    for m in range(1, depth + 1):
        a += power(sig_u[:, None], 2 * (m - 1) / depth) * power(
            sig_v[None, :], 2 * (depth - m) / depth
        )
    basis = np.stack([np.outer(U[:, i], Vh[j]) for i in range(dN) for j in range(d0)])
    lam = rand_matrix(rng, shape, is_complex)
    Lb, Mb, MLlam = _balanced_ops(X, depth, basis, lam)
    Lb, Mb = np.asarray(Lb), np.asarray(Mb)
    amax = a.max()
    for idx, (i, j) in enumerate((i, j) for i in range(dN) for j in range(d0)):
        # L(u_i v_j^*) = a_ij u_i v_j^*
        assert np.max(np.abs(Lb[idx] - a[i, j] * basis[idx])) <= 1e-12 * amax, f"L(u_{i} v_{j}^*)"
        # preconditioner(u_i v_j^*) = u_i v_j^* / a_ij
        assert np.max(np.abs(Mb[idx] - basis[idx] / a[i, j])) <= 1e-12 / a[i, j], (
            f"M(u_{i} v_{j}^*)"
        )
    # exact inverse at the balanced point
    assert_close(MLlam, lam, 1e-12, "preconditioner(normal_operator(lam)) = lam at balance")


def test_default_fiber_solver():
    s64 = dlnjax.default_fiber_solver(jnp.float64)
    s32 = dlnjax.default_fiber_solver(jnp.float32)
    assert isinstance(s64, dlnjax.FiberCG) and isinstance(s32, dlnjax.FiberCG)
    assert s64.rtol == 1e-10 and s64.atol == 1e-12
    assert s32.rtol > s64.rtol and s32.atol > s64.atol
    assert dlnjax.default_fiber_solver(jnp.complex128) == s64
    for bad in (dict(rtol=0.0), dict(atol=-1.0), dict(max_steps=0), dict(stabilise_every=0)):
        with pytest.raises(ValueError, match="FiberCG"):
            dlnjax.FiberCG(**bad)
