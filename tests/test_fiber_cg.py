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
from conftest import dense_tangent_projection, rand_layers, rand_matrix, sq_norm

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
