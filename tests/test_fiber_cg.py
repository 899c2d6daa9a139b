"""`FiberCG`, the default solver of the fiber geometry (docs/theory.md §3): its stopping rule on the error of the
projection, its implicit derivatives, single precision and its failure modes.

References: the dense pseudo-inverse projection of conftest (np.linalg.pinv of the real Jacobian) and the
dense Lineax solves (lineax.LU on the d_N d_0 x d_N d_0 normal matrix).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import lineax as lx
import numpy as np
import pytest
from conftest import (
    ct,
    dense_tangent_projection,
    explicit_partials,
    rand_invertible,
    rand_layers,
    rand_matrix,
    sq_norm,
)

import dlnjax


def _norm(layers) -> float:
    return float(np.sqrt(sq_norm([np.asarray(x) for x in layers])))


def _diff(a, b) -> float:
    return _norm([np.asarray(x) - np.asarray(y) for x, y in zip(a, b)])


@eqx.filter_jit
def _fiber_point(X, depth, widths, spread, key):
    return dlnjax.random_fiber_point(key, X, depth, spread=spread, widths=widths)


@eqx.filter_jit
def _pw(net, solver=None):
    return dlnjax.fiber_tangent_projection(net, net, solver=solver)


NEAR_BALANCE_CASES = [
    ((4, 4, 4, 4), False),
    ((3, 5, 5, 2), True),  # wide X, inner widths above rank
    ((2, 4, 4, 4, 5), False),  # tall X
    ((4, 4, 4, 4, 4, 4), True),
]


@pytest.mark.parametrize("widths, is_complex", NEAR_BALANCE_CASES, ids=lambda c: str(c))
@pytest.mark.parametrize("spread", [0.0, 1e-3, 0.3])
def test_projection_of_W_accurate_relative_to_its_own_size(widths, is_complex, spread):
    # Near balance Pi_T(W) is small against W: the stopping rule must resolve it to relative accuracy
    # (rtol = 1e-10 of the smaller part), not only to atol relative to ||W||. At spread 1e-3,
    # ||Pi_T(W)|| ~ 1e-3 ||W||, so the bound below is 1e3 times tighter than an error of atol ||W||; and
    # at a balanced point (spread 0) Pi_T(W) = 0 up to round-off.
    rng = np.random.default_rng(5)
    X = rand_matrix(rng, (widths[-1], widths[0]), is_complex)
    net = _fiber_point(jnp.asarray(X), len(widths) - 1, widths, spread, jr.PRNGKey(2))
    W = [np.asarray(w) for w in net.layers]
    ref = dense_tangent_projection(W, W)
    pw = _pw(net).layers
    if spread == 0.0:
        assert _norm(pw) <= 1e-13 * _norm(W)
        return
    assert _norm(ref) >= 1e-5 * _norm(W)
    err = _diff(pw, ref)
    assert err <= 1e-9 * _norm(ref) + 1e-13 * _norm(W), (
        f"error {err:.2e}, |Pi_T W| {_norm(ref):.2e}"
    )
    # the normal part W - Pi_T(W) to the same absolute accuracy
    nw = dlnjax.fiber_normal_projection(net, net).layers
    assert _diff(nw, [w - r for w, r in zip(W, ref)]) <= 1e-9 * _norm(ref) + 1e-13 * _norm(W)


def _fiber_l2(solver):
    return lambda net: dlnjax.fiber_l2_gradient(net, solver=solver)


@pytest.mark.parametrize("widths, is_complex", [((3, 4, 4, 3), False), ((2, 3, 3, 4), True)])
def test_implicit_derivatives_match_dense_solve(widths, is_complex):
    # The derivative of the FiberCG solution is implicit (custom_jvp, custom_linear_solve for reverse mode);
    # it must equal the derivative through a dense LU solve, forward and reverse.
    W = dlnjax.DLN([jnp.asarray(w) for w in rand_layers(11, widths, is_complex)])
    V = dlnjax.DLN([jnp.asarray(w) for w in rand_layers(12, widths, is_complex)])
    C = dlnjax.DLN([jnp.asarray(w) for w in rand_layers(13, widths, is_complex)])

    def scalar(solver):
        return lambda net: dlnjax.inner(_fiber_l2(solver)(net), C)

    @jax.jit
    def run(W, V):
        out = {}
        for name, solver in (("cg", None), ("lu", lx.LU())):
            out[name + "_jvp"] = jax.jvp(_fiber_l2(solver), (W,), (V,))[1]
            out[name + "_grad"] = jax.grad(scalar(solver))(W)
        return out

    out = run(W, V)
    jv_cg, jv_lu = out["cg_jvp"].layers, out["lu_jvp"].layers
    assert _norm(jv_lu) > 1e-2
    assert _diff(jv_cg, jv_lu) <= 1e-9 * _norm(jv_lu)
    g_cg, g_lu = out["cg_grad"].layers, out["lu_grad"].layers
    assert _norm(g_lu) > 1e-2
    assert _diff(g_cg, g_lu) <= 1e-9 * _norm(g_lu)
    # forward and reverse agree: d/de <f(W + e V), C> = Re <conj(grad), V> (JAX's grad of a real function of
    # complex input is the conjugate direction)
    lhs = float(dlnjax.inner(out["cg_jvp"], C))
    rhs = float(sum(np.real(np.vdot(np.conj(g), v)) for g, v in zip(g_cg, V.layers)))
    assert abs(lhs - rhs) <= 1e-9 * max(abs(lhs), _norm(g_cg) * _norm(V.layers))


def test_single_precision():
    widths = (4, 4, 4, 4)
    W64 = rand_layers(21, widths)
    ref = dense_tangent_projection(W64, W64)
    net32 = dlnjax.DLN([jnp.asarray(w, jnp.float32) for w in W64])
    pw = _pw(net32).layers
    assert all(p.dtype == jnp.float32 for p in pw)
    assert _diff(pw, ref) <= 1e-4 * _norm(W64)


def test_too_few_steps_raise_inside_jit():
    widths = (4, 4, 4, 4)
    net = dlnjax.DLN(
        [jnp.asarray(w) for w in rand_layers(22, widths)]
    )  # a generic point: CG needs many steps
    assert _norm(_pw(net).layers) > 0.1
    with pytest.raises(RuntimeError, match="max_steps"):
        jax.block_until_ready(_pw(net, dlnjax.FiberCG(max_steps=1)))


def test_fiber_flow_with_fiber_cg_keeps_X():
    # FiberL2 with the default solver from a generic point: X stays put, ||W||^2 decreases to tolerance.
    widths = (3, 4, 4, 4, 2)
    net0 = dlnjax.DLN([jnp.asarray(w) for w in rand_layers(23, widths)])
    tr = jax.jit(
        lambda n: dlnjax.simulate(
            dlnjax.flows.FiberL2(), n, jnp.array([0.0, 0.5, 1.0]), rtol=1e-10, atol=1e-10
        )
    )(net0)
    assert bool(tr.success)
    X0 = np.asarray(dlnjax.end_to_end(net0))
    for i in range(3):
        Xi = np.asarray(dlnjax.end_to_end(tr[i]))
        assert np.max(np.abs(Xi - X0)) <= 1e-8 * np.max(np.abs(X0))
    norms = [float(dlnjax.squared_norm(tr[i])) for i in range(3)]
    assert norms[2] < norms[1] < norms[0]


def test_ill_conditioned_deep_network_converges_to_the_float64_floor():
    # Depth 64 from W_k = I + 0.3 G_k / sqrt(d): cond X ~ 1e3-1e4, the energy estimate of CG stalls at its rounding
    # floor; the residual rule must end the solve (not max_steps), at the accuracy of a dense solve.
    d, N = 16, 64  # at d = 16 the energy rule alone ran into max_steps (500)
    net = dlnjax.residual(jr.PRNGKey(0), N, d, 0.3 * np.sqrt(N))
    s = np.linalg.svd(np.asarray(dlnjax.end_to_end(net)), compute_uv=False)
    assert s[0] / s[-1] > 1e3
    W = [np.asarray(w) for w in net.layers]
    ref = dense_tangent_projection(W, W)
    cg = _pw(net).layers
    lu = _pw(net, lx.LU()).layers
    lu_err = _diff(lu, ref)
    assert _diff(cg, ref) <= max(1e-9 * _norm(ref), 10 * lu_err)


# --------------------------------------------------------------------------------------------------
# The strategy objects: one solve interface, result codes, throw=
# --------------------------------------------------------------------------------------------------


def _dense_normal_matrix(W) -> np.ndarray:
    """sum_k A_k (x) B_k^T from explicit partial products (conftest), on row-major vec(lam)."""
    P, Q = explicit_partials(W)
    return sum(np.kron(p @ ct(p), (ct(q) @ q).T) for p, q in zip(P, Q))


@eqx.filter_jit
def _strategy_solves(net, rhs):
    op = dlnjax.FiberProducts(net).normal_operator()
    out = {"L_rhs": op.mv(rhs), "dense": op.as_matrix()}
    for name, solver in (
        ("fiber_cg", dlnjax.FiberCG()),
        ("lineax_cg", dlnjax.FiberLineax(lx.CG(rtol=1e-12, atol=1e-12, max_steps=500))),
        ("lu", dlnjax.FiberDense(lx.LU())),
    ):
        out[name] = solver.solve(op, rhs)
    return out


@pytest.mark.parametrize("widths, is_complex", [((3, 4, 4, 3), False), ((2, 3, 5, 4), True)])
def test_solvers_share_one_interface_and_match_a_dense_solve(widths, is_complex):
    W = rand_layers(41, widths, is_complex)
    rhs = rand_matrix(np.random.default_rng(42), (widths[-1], widths[0]), is_complex)
    out = _strategy_solves(dlnjax.DLN([jnp.asarray(w) for w in W]), jnp.asarray(rhs))
    M = _dense_normal_matrix(W)
    # the operator and its dense matrix, against the explicit sum_k A_k (x) B_k^T
    assert np.max(np.abs(np.asarray(out["dense"]) - M)) <= 1e-13 * np.max(np.abs(M))
    Lr = (M @ rhs.reshape(-1)).reshape(rhs.shape)
    assert np.max(np.abs(np.asarray(out["L_rhs"]) - Lr)) <= 1e-13 * np.max(np.abs(Lr))
    lam_ref = np.linalg.solve(M, rhs.reshape(-1)).reshape(rhs.shape)
    for name in ("fiber_cg", "lineax_cg", "lu"):
        sol = out[name]
        assert isinstance(sol, dlnjax.FiberSolution)
        assert sol.result == dlnjax.FiberResults.successful, name
        err = np.max(np.abs(np.asarray(sol.value) - lam_ref))
        assert err <= 1e-9 * np.max(np.abs(lam_ref)), f"{name}: {err:.2e}"
    assert 1 <= int(out["fiber_cg"].stats["num_steps"]) < 500


class _NumpyFreeDense(dlnjax.AbstractFiberSolver):
    """A user-defined strategy: jnp.linalg.solve on the dense matrix (result always successful)."""

    def solve(self, operator, rhs, *, v2=None):
        lam = jnp.linalg.solve(operator.as_matrix(), rhs.reshape(-1)).reshape(rhs.shape)
        return dlnjax.FiberSolution(lam, dlnjax.FiberResults.successful, {})


def test_a_user_strategy_plugs_into_the_projections():
    widths = (3, 4, 4, 3)
    W, V = rand_layers(43, widths), rand_layers(44, widths)
    ref = dense_tangent_projection(W, V)
    net, v = dlnjax.DLN([jnp.asarray(w) for w in W]), dlnjax.DLN([jnp.asarray(w) for w in V])
    out = dlnjax.fiber_tangent_projection(net, v, solver=_NumpyFreeDense()).layers
    assert _diff(out, ref) <= 1e-11 * _norm(V)
    with pytest.raises(TypeError, match="Lineax solver"):
        dlnjax.FiberDense("lu")


def _ill_posed_network():
    """The centre of a numerically rank-2 4 x 4 X, unbalanced by the group action: an ill-posed system."""
    rng = np.random.default_rng(31)
    X = rng.standard_normal((4, 2)) @ rng.standard_normal((2, 4))
    # The centre of a numerically rank-2 X built without fiber_center's rank cutoff: Lambda = s^(1/3) lifts the
    # rounding-level singular values s_3, s_4 ~ 1e-16 to ~5e-6 in every layer (dX onto only numerically).
    u, s, vh = np.linalg.svd(X)
    lam = np.diag(s ** (1 / 3))
    c = dlnjax.DLN([lam @ vh, lam, u @ lam])
    A = [rand_invertible(rng, 4, False) for _ in range(2)]
    return dlnjax.group_action(A, c)


@eqx.filter_jit
def _codes(net, solver):
    products = dlnjax.FiberProducts(net)
    sol = solver.solve(products.normal_operator(), products.differential_of_weights())
    return sol.result, sol.stats.get("num_steps", -1)


def test_result_codes_and_throw_false():
    generic = dlnjax.DLN([jnp.asarray(w) for w in rand_layers(22, (4, 4, 4, 4))])
    ill = _ill_posed_network()
    codes = dlnjax.FiberResults
    # too few steps: not_converged, with the remedy in its message
    result, steps = _codes(generic, dlnjax.FiberCG(max_steps=1))
    assert result == codes.not_converged and int(steps) == 1
    assert "max_steps" in codes[result] and "lineax.SVD" in codes[result]
    # the ill-posed system: a failure (inconsistent or not converged), never a silent success
    result, _ = _codes(ill, dlnjax.FiberCG())
    assert result in (codes.inconsistent, codes.not_converged)
    assert "lineax.SVD" in codes[result]
    # Cholesky at a rank-deficient X fails; SVD gives the least-squares solution
    assert _codes(ill, dlnjax.FiberDense(lx.Cholesky()))[0] != codes.successful
    assert _codes(ill, dlnjax.FiberDense(lx.SVD()))[0] == codes.successful
    # non-finite input: flagged after a single step, not after max_steps
    nan_net = jax.tree_util.tree_map(lambda w: w * jnp.nan, generic)
    result, steps = _codes(nan_net, dlnjax.FiberCG())
    assert result == codes.nonfinite and int(steps) <= 1
    # throw=False: NaN where the solve failed, no error; the successful solve is untouched
    bad = dlnjax.fiber_l2_gradient(generic, solver=dlnjax.FiberCG(max_steps=1), throw=False)
    assert all(np.all(np.isnan(np.asarray(x))) for x in bad.arrays())
    good = dlnjax.fiber_l2_gradient(generic, throw=False).layers
    assert _diff(good, dlnjax.fiber_l2_gradient(generic).layers) == 0.0
    assert np.all(np.isnan(np.asarray(dlnjax.solve_normal(ill, jnp.eye(4), throw=False))))
    with pytest.raises(RuntimeError, match="lineax.SVD"):
        jax.block_until_ready(dlnjax.solve_normal(ill, jnp.eye(4)))


_TS = jnp.array([0.0, 0.5, 1.0])


@eqx.filter_jit
def _batch_simulate(nets, throw):
    flow = dlnjax.flows.FiberL2(throw=throw)
    return jax.vmap(lambda n: dlnjax.simulate(flow, n, _TS, max_steps=200))(nets)


def test_throw_false_flags_only_the_failed_run_of_a_vmapped_batch():
    # One ill-posed start in a batch of three: with throw=False its velocity is NaN, Diffrax rejects every step
    # (max_steps reached) and only that run reports success = False; the others are exactly their own solves.
    rng = np.random.default_rng(45)
    good = [
        dlnjax.DLN([jnp.asarray(rng.standard_normal((4, 4))) for _ in range(3)]) for _ in range(2)
    ]
    nets = [good[0], _ill_posed_network(), good[1]]
    batch = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *nets)
    tr = _batch_simulate(batch, False)
    assert np.asarray(tr.success).tolist() == [True, False, True]
    assert not np.all(np.isfinite(np.asarray(tr.ys.first[1, -1])))
    single = eqx.filter_jit(
        lambda n: dlnjax.simulate(dlnjax.flows.FiberL2(), n, _TS, max_steps=200)
    )
    for i in (0, 2):
        ref = single(nets[i])
        assert bool(ref.success)
        for a, b in zip(ref.ys.arrays(), tr.ys.arrays()):
            assert np.max(np.abs(np.asarray(a) - np.asarray(b[i]))) <= 1e-12 * np.max(np.abs(a))
        # and the flow did its job on the good runs: X kept, ||W||^2 decreased
        at = lambda j: jax.tree_util.tree_map(lambda y: y[i, j], tr.ys)  # run i, save time j
        X0, X1 = (np.asarray(dlnjax.end_to_end(at(j))) for j in (0, -1))
        assert np.max(np.abs(X1 - X0)) <= 1e-5 * np.max(
            np.abs(X0)
        )  # Tsit5 at simulate's rtol = 1e-6
        assert float(dlnjax.squared_norm(at(-1))) < float(dlnjax.squared_norm(at(0)))
    # throw=True (the default): the failed solve raises, for the whole batch
    with pytest.raises(RuntimeError, match="normal-system solve"):
        jax.block_until_ready(_batch_simulate(batch, True))
