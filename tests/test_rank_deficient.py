"""Rank-deficient fibers (Remark 4 of seed 001; docs/theory.md §12), Corollary 1 from general starts, and the
limits of FiberL2, FiberSchatten and Kirwan-Ness (docs/theory.md §10-12).

Strata of a 4 x 4, depth-3 fiber: rank X = 4, 3, 2, 1 at fiber points A . C (every layer of rank X), and a
generic point of the stratum "one layer of rank one" (W_2 = u v^T, W_1 and W_3 invertible; rank X = 1). All are
integrated in one vmapped batch per flow, with the default fiber solver (the least-squares projection where dX is
not onto). References: numpy SVDs, explicit products and moments.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import dense_tangent_projection, explicit_moments, explicit_product, rand_layers

import dlnjax
from dlnjax import flows

N, D = 3, 4
TS = jnp.array([0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0])


def _starts():
    rng = np.random.default_rng(0)
    out = []
    for r in (4, 3, 2, 1):
        X = rng.standard_normal((D, r)) @ rng.standard_normal((r, D))
        out.append(dlnjax.random_fiber_point(jax.random.PRNGKey(r), jnp.asarray(X), N, spread=0.5))
    W = [
        rng.standard_normal((4, 4)),
        rng.standard_normal((4, 1)) @ rng.standard_normal((1, 4)),
        rng.standard_normal((4, 4)),
    ]
    out.append(dlnjax.DLN([jnp.asarray(w) for w in W]))
    return out


@eqx.filter_jit
def _run(flow, batch, ts):
    return jax.vmap(
        lambda n: dlnjax.simulate(flow, n, ts, rtol=1e-10, atol=1e-12, max_steps=100000)
    )(batch)


def _layers(tr, i, j):
    return [np.asarray(w[i, j]) for w in tr.ys.layers]


def _floor(layers):
    s = np.linalg.svd(explicit_product(layers), compute_uv=False)
    return N * np.sum(s[s > 1e-12 * s[0]] ** (2 / N))


def _g_norm(layers):
    return np.sqrt(sum(np.sum(np.abs(g) ** 2) for g in explicit_moments(layers)))


@pytest.fixture(scope="module")
def starts():
    nets = _starts()
    return nets, jax.tree_util.tree_map(lambda *x: jnp.stack(x), *nets)


def test_fiber_center_of_rank_deficient_X_has_exactly_rank_r_layers():
    rng = np.random.default_rng(1)
    for r in (1, 2, 3):
        X = rng.standard_normal((D, r)) @ rng.standard_normal((r, D))
        c = dlnjax.fiber_center(jnp.asarray(X), N)
        for w in c.layers:
            s = np.linalg.svd(np.asarray(w), compute_uv=False)
            assert np.all(s[r:] == 0.0) and s[r - 1] > 0.1
        assert np.max(np.abs(explicit_product([np.asarray(w) for w in c.layers]) - X)) <= 1e-13
    # full rank: the singular values are all kept (unchanged result)
    X = rng.standard_normal((D, D))
    s = np.linalg.svd(X, compute_uv=False)
    lam = np.linalg.svd(
        np.asarray(dlnjax.fiber_center(jnp.asarray(X), N).layers[1]), compute_uv=False
    )
    assert np.max(np.abs(lam - s ** (1 / N))) <= 1e-14


def test_fiber_l2_theorem_2_stratum_by_stratum_and_the_limit(starts):
    nets, batch = starts
    tr = _run(flows.FiberL2(), batch, TS)
    assert np.asarray(tr.success).all()  # the default solver works on every stratum
    for i, net in enumerate(nets):
        L0 = [np.asarray(w) for w in net.layers]
        X0, G0 = explicit_product(L0), explicit_moments(L0)
        for j, t in enumerate(np.asarray(TS)):
            L = _layers(tr, i, j)
            assert np.max(np.abs(explicit_product(L) - X0)) <= 1e-9 * np.max(np.abs(X0))
            G = explicit_moments(L)
            err = max(np.max(np.abs(g - np.exp(-2 * t) * g0)) for g, g0 in zip(G, G0))
            assert err <= 1e-8 * max(np.max(np.abs(g0)) for g0 in G0), (i, t)  # Theorem 2
        # the limit: balanced, ||W||^2 = N sum_{sigma_i > 0} sigma_i^(2/N), every layer of rank X
        L = _layers(tr, i, -1)
        assert abs(sum(np.sum(w**2) for w in L) - _floor(L0)) <= 1e-8
        r = np.linalg.matrix_rank(X0)
        for w in L:
            s = np.linalg.svd(w, compute_uv=False)
            assert np.all(s[r:] <= 1e-6) and s[r - 1] > 0.1


def test_fiber_schatten_limit_is_balanced(starts):
    # Theorem 20: the Schatten-3 flow ends on the balanced orbit, the regularizer at N ||Sigma^(1/N)||_3. Full-rank
    # X: exponentially. Rank-deficient X (layers of rank X, padded by zero singular values): the Schatten gradient
    # sigma^(p-1) vanishes to second order at the zero singular values, and ||G|| decays only algebraically.
    nets, batch = starts
    sub = jax.tree_util.tree_map(lambda x: x[:3], batch)
    ts = jnp.array([0.0, 25.0, 50.0, 100.0])
    tr = _run(flows.FiberSchatten(p=3.0), sub, ts)
    assert np.asarray(tr.success).all()
    for i in range(3):
        L0 = [np.asarray(w) for w in nets[i].layers]
        g = [_g_norm(_layers(tr, i, j)) for j in range(4)]
        s = np.linalg.svd(explicit_product(L0), compute_uv=False)
        reg = sum(
            np.sum(np.linalg.svd(w, compute_uv=False) ** 3) ** (1 / 3) for w in _layers(tr, i, -1)
        )
        target = N * np.sum(s[s > 1e-12 * s[0]] ** 1.0) ** (1 / 3)
        if i == 0:
            assert g[-1] <= 1e-6 * g[0]
            assert abs(reg - target) <= 1e-6
        else:
            assert g[-1] <= 1e-4 * g[0] and g[1] > g[2] > g[3]
            assert 0 <= reg - target <= 1e-3


def test_corollary_1_kirwan_ness_from_general_starts(starts):
    # Corollary 1: from any start, Kirwan-Ness converges to one balanced point (X kept). On the fibers A . C
    # (layers of rank X) the convergence is exponential; from the stratum "one layer of rank one" the limit's
    # layers have rank one, the extra singular values of W_1, W_3 decay like t^(-1/2) (the cubic flow
    # s' ~ -2 s^3) and ||G|| ~ c / t: algebraic, not exponential. A generic Gaussian start converges too.
    nets, batch = starts
    rng = np.random.default_rng(9)
    gauss = dlnjax.DLN([jnp.asarray(rng.standard_normal((4, 4))) for _ in range(3)])
    batch = jax.tree_util.tree_map(lambda b, g: jnp.concatenate([b, g[None]]), batch, gauss)
    ts = jnp.array([0.0, 50.0, 200.0, 400.0, 800.0])
    tr = _run(flows.KirwanNess(), batch, ts)
    assert np.asarray(tr.success).all()
    for i in range(6):
        L0 = [np.asarray(w) for w in (nets[i].layers if i < 5 else gauss.layers)]
        L = _layers(tr, i, -1)
        X0 = explicit_product(L0)
        assert np.max(np.abs(explicit_product(L) - X0)) <= 1e-8 * np.max(np.abs(X0))
        g = [_g_norm(_layers(tr, i, j)) for j in range(5)]
        if i == 4:  # algebraic: t ||G|| levels off
            assert g[-1] <= 1e-2 * g[0]
            assert abs(g[-1] * 800 / (g[-2] * 400) - 1) <= 0.05
            assert g[-1] > 1e-4  # far from the exponential regime
        else:
            assert g[-1] <= 1e-9 * g[0], (i, g)
            # one point: the trajectory has stopped moving
            assert max(np.max(np.abs(a - b)) for a, b in zip(L, _layers(tr, i, -2))) <= 1e-8


def test_default_projection_is_the_least_squares_one_on_low_rank_layers():
    # Layers that are products of random 5 x 2 and 2 x 5 factors (rank 2 to rounding; dX is not onto): the default
    # solver's projection equals the least-squares projection of a dense pseudo-inverse of the Jacobian.
    rng = np.random.default_rng(3)
    W = [rng.standard_normal((5, 2)) @ rng.standard_normal((2, 5)) for _ in range(3)]
    V = rand_layers(4, (5, 5, 5, 5))
    out = dlnjax.fiber_tangent_projection(dlnjax.DLN(W), dlnjax.DLN(V)).layers
    ref = dense_tangent_projection(W, V)
    assert max(np.max(np.abs(np.asarray(a) - b)) for a, b in zip(out, ref)) <= 1e-10
