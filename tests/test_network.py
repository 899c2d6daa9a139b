"""The network state `DLN`, its invariants (docs/theory.md §1-2) and the constructors.

Library calls on random instances go through one jitted function per family (`_network_quantities`,
`_fiber_center_q`, ...): building a DLN eagerly compiles one error check per layer shape, so each
hypothesis example costs one compilation instead of dozens.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from conftest import (
    HYP,
    NONUNIFORM,
    assert_close,
    ct,
    explicit_moments,
    explicit_product,
    padding_masks,
    padding_max_abs,
    rand_invertible,
    rand_layers,
    rand_matrix,
    seeds,
    sq_norm,
    tree_max_abs_diff,
    widths_st,
)
from hypothesis import given
from hypothesis import strategies as st

import dlnjax

# --------------------------------------------------------------------------------------------------
# Construction, storage, .layers
# --------------------------------------------------------------------------------------------------


def _check_storage(net, layers, widths):
    """.layers returns the layers exactly; the arrays hold them top-left, zero-padded to m."""
    assert net.widths == tuple(widths)
    assert net.depth == len(widths) - 1
    back = net.layers
    assert len(back) == len(layers)
    for w, b in zip(layers, back):
        assert b.shape == w.shape
        np.testing.assert_array_equal(np.asarray(b), w)
    n = len(widths) - 1
    if n == 1:
        assert net.inner is None and net.last is None
        assert net.first.shape == (widths[1], widths[0])
        return
    m = max(widths[1:-1])
    assert net.first.shape == (m, widths[0])
    assert net.inner.shape == (n - 2, m, m)
    assert net.last.shape == (widths[-1], m)
    assert padding_max_abs(net) == 0.0
    np.testing.assert_array_equal(np.asarray(net.first[: widths[1]]), layers[0])
    np.testing.assert_array_equal(np.asarray(net.last[:, : widths[-2]]), layers[-1])
    for k in range(n - 2):
        np.testing.assert_array_equal(
            np.asarray(net.inner[k, : widths[k + 2], : widths[k + 1]]), layers[k + 1]
        )


@pytest.mark.parametrize("widths", [NONUNIFORM, (2, 7, 1, 3), (4, 3), (3, 5, 2)])
@pytest.mark.parametrize("is_complex", [False, True])
def test_layers_round_trip_eager(widths, is_complex):
    layers = rand_layers(7, widths, is_complex)
    net = dlnjax.DLN(layers)
    assert net.dtype == (jnp.complex128 if is_complex else jnp.float64)
    _check_storage(net, layers, widths)


def test_replace_arrays_and_arrays():
    net = dlnjax.DLN(rand_layers(0, NONUNIFORM))
    arrs = net.arrays()
    assert len(arrs) == 3
    doubled = net.replace_arrays(*(2 * a for a in arrs))
    assert doubled.widths == net.widths
    for a, b in zip(doubled.layers, net.layers):
        np.testing.assert_array_equal(np.asarray(a), 2 * np.asarray(b))
    one = dlnjax.DLN(rand_layers(0, (3, 2)))
    assert len(one.arrays()) == 1 and one.arrays()[0] is one.first


def test_layers_with_leading_batch_axes_from_vmap():
    widths = NONUNIFORM
    keys = jr.split(jr.PRNGKey(1), 6).reshape(2, 3, 2)
    # two leading batch axes (nested vmap) on a network with padded inner widths
    batch = jax.jit(jax.vmap(jax.vmap(lambda k: dlnjax.gaussian(k, widths))))(keys)
    assert batch.widths == tuple(widths)
    single = jax.jit(lambda k: dlnjax.gaussian(k, widths).layers)
    for k, w in enumerate(batch.layers):
        assert w.shape == (2, 3, widths[k + 1], widths[k])
    for i, j in [(0, 0), (1, 2)]:
        for w, s in zip(batch.layers, single(keys[i, j])):
            np.testing.assert_allclose(np.asarray(w[i, j]), np.asarray(s), rtol=0, atol=1e-15)
    assert padding_max_abs(batch) == 0.0
    # one leading axis, by indexing the batch: .layers commutes with indexing
    sub = jax.tree_util.tree_map(lambda a: a[1], batch)
    for a, b in zip(sub.layers, batch.layers):
        assert a.shape == b.shape[1:]
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b[1]))


@pytest.mark.parametrize(
    "dtypes, expected",
    [
        ((np.float32, np.float32), jnp.float32),
        ((np.float32, np.float64), jnp.float64),
        ((np.float64, np.complex64), jnp.complex128),
        ((np.float32, np.complex64), jnp.complex64),
        ((np.int32, np.int64), jnp.float64),  # integers promote to the default float (x64 on)
        ((np.int32, np.float32), jnp.float32),
    ],
)
def test_dtype_promotion(dtypes, expected):
    rng = np.random.default_rng(0)
    raw = [rng.integers(-3, 4, (3, 2)), rng.integers(-3, 4, (4, 3))]
    layers = [r.astype(dt) for r, dt in zip(raw, dtypes)]
    net = dlnjax.DLN(layers)
    assert net.dtype == expected
    for w, r in zip(net.layers, raw):
        assert w.dtype == expected
        np.testing.assert_array_equal(np.asarray(w), r.astype(expected))  # small integers: exact


def test_accepts_nested_lists_and_jax_arrays():
    net = dlnjax.DLN([[[1.0, 2.0]], jnp.array([[3.0], [4.0]])])
    assert net.widths == (2, 1, 2)
    np.testing.assert_array_equal(
        np.asarray(dlnjax.end_to_end(net)), np.array([[3.0, 6.0], [4.0, 8.0]])
    )


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


def test_rejects_non_chaining_widths():
    with pytest.raises(ValueError, match="do not chain"):
        dlnjax.DLN([np.ones((3, 2)), np.ones((4, 4))])
    with pytest.raises(ValueError, match=r"W_3 has shape \(2, 3\) but W_2 has shape \(2, 3\)"):
        dlnjax.DLN([np.ones((3, 2)), np.ones((2, 3)), np.ones((2, 3))])


@pytest.mark.parametrize(
    "layers",
    [
        [np.ones(3)],
        [np.ones((3, 2)), np.ones((2, 3, 1))],
        [np.ones((3, 2)), np.float64(2.0)],
        [np.ones((1, 2, 2))],
    ],
)
def test_rejects_wrong_ranks(layers):
    with pytest.raises(ValueError, match="must be a 2-D array"):
        dlnjax.DLN(layers)


def test_rejects_no_layers():
    with pytest.raises(ValueError, match="at least one layer"):
        dlnjax.DLN([])


@pytest.mark.parametrize(
    "layers",
    [[np.ones((0, 2)), np.ones((3, 0))], [np.ones((3, 0))], [np.ones((2, 3)), np.ones((0, 2))]],
)
def test_rejects_zero_widths(layers):
    with pytest.raises(ValueError, match="every width must be positive"):
        dlnjax.DLN(layers)


@pytest.mark.parametrize("widths", [(2, 0, 3), (0, 2), (3,)])
def test_constructors_reject_bad_widths(widths):
    with pytest.raises(ValueError, match="widths must list|every width must be positive"):
        dlnjax.gaussian(jr.PRNGKey(0), widths)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, complex(0.0, np.nan)])
@pytest.mark.parametrize("where", [0, 2])
def test_rejects_non_finite_entries(bad, where):
    is_complex = isinstance(bad, complex)
    layers = rand_layers(0, (3, 4, 4, 2), is_complex=is_complex)
    layers[where][1, 0] = bad
    # concrete input is checked at once and names the layer
    with pytest.raises(ValueError, match=rf"layer W_{where + 1} holds non-finite values"):
        dlnjax.DLN(layers)


def test_rejects_non_finite_entries_under_jit():
    f = jax.jit(lambda a: dlnjax.end_to_end(dlnjax.DLN([a, a])))
    np.testing.assert_array_equal(np.asarray(f(jnp.eye(2))), np.eye(2))
    with pytest.raises(RuntimeError, match="holds non-finite values"):
        jax.block_until_ready(f(jnp.full((2, 2), jnp.nan)))


def test_fiber_center_rejects_inner_width_below_rank():
    X = rand_matrix(np.random.default_rng(0), (4, 4), False)  # rank 4
    with pytest.raises(ValueError, match=r"inner width 3 is below rank X = 4"):
        dlnjax.fiber_center(X, 3, widths=(4, 5, 3, 4))
    Y = rand_matrix(np.random.default_rng(1), (4, 2), False) @ rand_matrix(
        np.random.default_rng(2), (2, 5), False
    )
    with pytest.raises(ValueError, match=r"inner width 1 is below rank X = 2"):
        dlnjax.fiber_center(Y, 2, widths=(5, 1, 4))
    # an inner width equal to rank X < min(d_N, d_0) is allowed, and lands on the fiber
    c = dlnjax.fiber_center(Y, 3, widths=(5, 2, 3, 4))
    assert_close(
        explicit_product([np.asarray(w) for w in c.layers]),
        Y,
        1e-12,
        "X(fiber_center) at inner width = rank X",
    )


def test_fiber_center_rejects_bad_arguments():
    X = np.eye(3)
    with pytest.raises(ValueError, match="must be a 2-D matrix"):
        dlnjax.fiber_center(np.ones(3), 2)
    with pytest.raises(ValueError, match="do not match depth"):
        dlnjax.fiber_center(X, 2, widths=(3, 3, 3, 3))
    with pytest.raises(ValueError, match="do not match depth"):
        dlnjax.fiber_center(X, 2, widths=(4, 3, 3))
    with pytest.raises(ValueError, match="depth must be >= 1"):
        dlnjax.fiber_center(X, 0)
    with pytest.raises(ValueError, match="non-finite"):
        dlnjax.fiber_center(np.full((2, 2), np.nan), 2)


def test_group_action_rejects_bad_arguments():
    net = dlnjax.DLN(rand_layers(0, NONUNIFORM))
    with pytest.raises(ValueError, match="need N - 1 = 3 matrices"):
        dlnjax.group_action([np.eye(4), np.eye(6)], net)
    with pytest.raises(ValueError, match=r"A_2 must have shape \(6, 6\)"):
        dlnjax.group_action([np.eye(4), np.eye(5), np.eye(5)], net)


# --------------------------------------------------------------------------------------------------
# end_to_end, moments, squared_norm, balancedness (one compiled function per widths)
# --------------------------------------------------------------------------------------------------


@jax.jit
def _network_quantities(layers, V):
    net = dlnjax.DLN(layers)
    G, dG = jax.jvp(dlnjax.moments, (net,), (net,))
    _, dGV = jax.jvp(dlnjax.moments, (net,), (dlnjax.DLN(V),))
    scaled = net.replace_arrays(*(3.0 * a for a in net.arrays()))
    return dict(
        net=net,
        X=dlnjax.end_to_end(net),
        G=G,
        dG=dG,
        dGV=dGV,
        sqnorm=dlnjax.squared_norm(net),
        bal=dlnjax.balancedness(net),
        bal_scaled=dlnjax.balancedness(scaled),
    )


def _dG_explicit(layers, V):
    """dG(V)_k = V_k W_k^* + W_k V_k^* - V_{k+1}^* W_{k+1} - W_{k+1}^* V_{k+1} (docs/theory.md §2)."""
    return [
        V[k] @ ct(layers[k])
        + layers[k] @ ct(V[k])
        - ct(V[k + 1]) @ layers[k + 1]
        - ct(layers[k + 1]) @ V[k + 1]
        for k in range(len(layers) - 1)
    ]


def _check_network_identities(widths, is_complex, seed):
    layers = rand_layers(seed, widths, is_complex)
    V = rand_layers(seed + 1, widths, is_complex)
    q = _network_quantities(layers, V)
    n = len(widths) - 1
    _check_storage(q["net"], layers, widths)
    assert q["net"].dtype == (jnp.complex128 if is_complex else jnp.float64)
    # end-to-end matrix = explicit product
    assert q["X"].shape == (widths[-1], widths[0])
    assert_close(q["X"], explicit_product(layers), 1e-13, "end_to_end")
    # ||W||^2 and balancedness
    norms = [np.sum(np.abs(w) ** 2) for w in layers]
    nrm = sum(norms)
    assert abs(float(q["sqnorm"]) - nrm) <= 1e-13 * nrm
    Gref = explicit_moments(layers)
    gnorm = np.sqrt(sum(np.sum(np.abs(g) ** 2) for g in Gref))
    assert abs(float(q["bal"]) - gnorm / nrm) <= 1e-13 * gnorm / nrm + 1e-300
    assert (
        abs(float(q["bal_scaled"]) - gnorm / nrm) <= 1e-12 * gnorm / nrm + 1e-300
    )  # scale invariant
    G = np.asarray(q["G"])
    if n == 1:
        assert G.shape[0] == 0 and float(q["bal"]) == 0.0
        return
    m = max(widths[1:-1])
    assert G.shape == (n - 1, m, m)
    scale = max(np.max(np.abs(g)) for g in Gref)
    dG, dGV = np.asarray(q["dG"]), np.asarray(q["dGV"])
    dGV_ref = _dG_explicit(layers, V)
    for k, g in enumerate(Gref):
        d = widths[k + 1]
        # G_k = W_k W_k^* - W_{k+1}^* W_{k+1}, zero-padded, Hermitian
        assert np.max(np.abs(G[k, :d, :d] - g)) <= 1e-13 * scale, f"G_{k + 1}"
        assert np.all(G[k, d:, :] == 0) and np.all(G[k, :, d:] == 0), "padding of G"
        assert np.max(np.abs(G[k] - ct(G[k]))) <= 1e-14 * scale, "G Hermitian"
        # Tr G_k = ||W_k||^2 - ||W_{k+1}||^2
        tr = np.trace(G[k])
        assert abs(np.imag(tr)) <= 1e-13 * max(norms[k], norms[k + 1])
        assert abs(np.real(tr) - (norms[k] - norms[k + 1])) <= 1e-13 * max(
            norms[k], norms[k + 1]
        ), "Tr G_k"
        # dG(W) = 2G (jvp of `moments` along W itself)
        assert np.max(np.abs(dG[k] - 2 * G[k])) <= 1e-13 * scale, "dG(W) = 2G"
        # the tangent map of `moments` is dG of docs/theory.md §2
        assert_close(dGV[k, :d, :d], dGV_ref[k], 1e-13, f"dG(V)_{k + 1}")


@HYP
@given(widths=widths_st(), is_complex=st.booleans(), seed=seeds)
def test_network_identities_random(widths, is_complex, seed):
    _check_network_identities(widths, is_complex, seed)


@pytest.mark.parametrize(
    "widths", [NONUNIFORM, (4, 4, 4, 4), (2, 5, 3), (3, 1, 4), (2, 3), (1, 1, 1, 1)]
)
@pytest.mark.parametrize("is_complex", [False, True])
def test_network_identities_cases(widths, is_complex):
    _check_network_identities(widths, is_complex, 11)


def test_balancedness_of_a_known_network():
    net = dlnjax.DLN([np.diag([2.0, 1.0]), np.eye(2)])  # G_1 = diag(3, 0), ||W||^2 = 7
    assert abs(float(dlnjax.balancedness(net)) - 3.0 / 7.0) <= 1e-15
    np.testing.assert_array_equal(np.asarray(dlnjax.moments(net))[0], np.diag([3.0, 0.0]))


def test_balancedness_of_the_zero_network_is_zero():
    z = dlnjax.DLN([np.zeros((2, 2))] * 3)
    assert float(np.max(np.abs(np.asarray(dlnjax.moments(z))))) == 0.0
    assert float(dlnjax.balancedness(z)) == 0.0


# --------------------------------------------------------------------------------------------------
# vmap equivalence
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "widths, is_complex", [(NONUNIFORM, False), (NONUNIFORM, True), ((4, 2), True)]
)
def test_functions_under_vmap_equal_per_element(widths, is_complex):
    layer_sets = [rand_layers(s, widths, is_complex) for s in range(3)]
    stacked = [np.stack(ws) for ws in zip(*layer_sets)]
    fns = (dlnjax.end_to_end, dlnjax.moments, dlnjax.balancedness, dlnjax.squared_norm)
    batched = jax.jit(jax.vmap(lambda ls: [f(dlnjax.DLN(ls)) for f in fns]))(stacked)
    single = jax.jit(lambda ls: [f(dlnjax.DLN(ls)) for f in fns])
    for i, ls in enumerate(layer_sets):
        ref = single(ls)
        for b, r in zip(batched, ref):
            b, r = np.asarray(b[i]), np.asarray(r)
            assert b.shape == r.shape
            assert np.max(np.abs(b - r), initial=0.0) <= 1e-14 * max(
                np.max(np.abs(r), initial=0.0), 1.0
            )
        assert_close(batched[0][i], explicit_product(ls), 1e-13, "batched end_to_end")
        Gref = explicit_moments(ls)
        for k, g in enumerate(Gref):
            d = widths[k + 1]
            assert_close(batched[1][i][k, :d, :d], g, 1e-13, "batched moments")


# --------------------------------------------------------------------------------------------------
# Fiber centre, group action, random fiber points
# --------------------------------------------------------------------------------------------------

_fiber_center_jit = jax.jit(
    lambda X, depth, widths: (
        lambda c: (c.layers, dlnjax.end_to_end(c), dlnjax.squared_norm(c), dlnjax.balancedness(c))
    )(dlnjax.fiber_center(X, depth, widths)),
    static_argnums=(1, 2),
)


def _check_fiber_center(X, depth, widths):
    layers, Xc, sqn, bal = _fiber_center_jit(X, depth, widths)
    dN, d0 = X.shape
    r = min(dN, d0)
    expected_widths = widths if widths is not None else (d0,) + (r,) * (depth - 1) + (dN,)
    assert tuple(w.shape for w in layers) == tuple(
        (expected_widths[k + 1], expected_widths[k]) for k in range(depth)
    )
    layers = [np.asarray(w) for w in layers]
    assert_close(Xc, X, 1e-12, "end_to_end(fiber_center)")
    assert_close(explicit_product(layers), X, 1e-12, "explicit X(fiber_center)")
    sig = np.linalg.svd(X, compute_uv=False)
    target = depth * np.sum(sig ** (2.0 / depth))  # Theorem 1
    assert abs(sq_norm(layers) - target) <= 1e-12 * target
    assert abs(float(sqn) - target) <= 1e-12 * target
    G = explicit_moments(layers)
    assert max([np.max(np.abs(g)) for g in G] + [0.0]) <= 1e-12 * target, "fiber_center is balanced"
    assert float(bal) <= 1e-12


@HYP
@given(
    d0=st.integers(1, 5),
    dN=st.integers(1, 5),
    depth=st.integers(1, 5),
    extra=st.lists(st.integers(0, 2), min_size=4, max_size=4),
    is_complex=st.booleans(),
    seed=seeds,
)
def test_fiber_center_random(d0, dN, depth, extra, is_complex, seed):
    X = rand_matrix(np.random.default_rng(seed), (dN, d0), is_complex)
    r = min(d0, dN)
    widths = (d0,) + tuple(r + extra[k] for k in range(depth - 1)) + (dN,)  # inner widths >= rank X
    _check_fiber_center(X, depth, None)
    _check_fiber_center(X, depth, widths)


@pytest.mark.parametrize("shape", [(4, 4), (2, 5), (5, 3)])
@pytest.mark.parametrize("is_complex", [False, True])
def test_fiber_center_structure(shape, is_complex):
    """C = (Lambda V^*, Lambda, ..., Lambda, U Lambda), Lambda = Sigma^(1/N): every layer has singular values sigma^(1/N)."""
    X = rand_matrix(np.random.default_rng(3), shape, is_complex)
    depth = 4
    _check_fiber_center(X, depth, None)
    layers, *_ = _fiber_center_jit(X, depth, None)
    sig = np.linalg.svd(X, compute_uv=False)
    for w in layers:
        s = np.linalg.svd(np.asarray(w), compute_uv=False)
        np.testing.assert_allclose(s[: len(sig)], sig ** (1.0 / depth), rtol=1e-12, atol=0)
    for w in layers[1:-1]:  # inner layers are diagonal
        w = np.asarray(w)
        assert np.max(np.abs(w - np.diag(np.diag(w)))) == 0.0


@jax.jit
def _group_action_jit(A, layers):
    out = dlnjax.group_action(A, dlnjax.DLN(layers))
    return out, dlnjax.end_to_end(out)


@HYP
@given(widths=widths_st(min_depth=2), is_complex=st.booleans(), seed=seeds)
def test_group_action_preserves_X_and_is_the_explicit_action(widths, is_complex, seed):
    layers = rand_layers(seed, widths, is_complex)
    rng = np.random.default_rng(seed + 17)
    A = [rand_invertible(rng, d, is_complex) for d in widths[1:-1]]
    out, Xout = _group_action_jit(A, layers)
    assert out.widths == tuple(widths)
    X = explicit_product(layers)
    assert_close(Xout, X, 1e-12, "group action preserves X")
    inv = [np.linalg.inv(a) for a in A]
    n = len(layers)
    ref = (
        [A[0] @ layers[0]]
        + [A[k] @ layers[k] @ inv[k - 1] for k in range(1, n - 1)]
        + [layers[-1] @ inv[-1]]
    )
    assert_close(out.layers, ref, 1e-12, "group action formula (1.6)")
    assert padding_max_abs(out) <= 1e-15 * max(np.max(np.abs(r)) for r in ref)


def test_group_action_array_form_and_balance():
    widths = (3, 4, 4, 4, 2)
    layers = rand_layers(1, widths, True)
    rng = np.random.default_rng(2)
    A = [rand_invertible(rng, 4, True) for _ in range(3)]
    a, _ = _group_action_jit(A, layers)
    b, _ = _group_action_jit(np.stack(A), layers)
    assert tree_max_abs_diff(a.layers, b.layers) <= 1e-14 * max(
        float(np.max(np.abs(np.asarray(w)))) for w in a.layers
    )
    # depth one: the group is trivial
    one = dlnjax.DLN(rand_layers(0, (3, 2)))
    assert tree_max_abs_diff(dlnjax.group_action([], one).layers, one.layers) == 0.0
    # a generic action unbalances the centre; a unitary one keeps it balanced (G_k -> A_k G_k A_k^*)
    X = rand_matrix(np.random.default_rng(4), (3, 3), False)
    c = _fiber_center_jit(X, 3, None)[0]
    u, _ = _group_action_jit([rand_invertible(rng, 3, False) for _ in range(2)], c)
    Gu = explicit_moments([np.asarray(w) for w in u.layers])
    assert max(np.max(np.abs(g)) for g in Gu) > 1e-2
    v, Xv = _group_action_jit([np.linalg.qr(rng.standard_normal((3, 3)))[0] for _ in range(2)], c)
    Gv = explicit_moments([np.asarray(w) for w in v.layers])
    assert max(np.max(np.abs(g)) for g in Gv) <= 1e-13
    assert_close(Xv, X, 1e-12, "X after a unitary action")


_rfp_jit = jax.jit(
    lambda key, X, depth, spread, widths: dlnjax.random_fiber_point(key, X, depth, spread, widths),
    static_argnums=(2, 4),
)


@pytest.mark.parametrize(
    "shape, depth, widths, is_complex",
    [
        ((3, 3), 4, None, False),
        ((3, 3), 3, None, True),
        ((2, 5), 3, (5, 3, 4, 2), False),
        ((4, 2), 2, (2, 3, 4), True),
        ((3, 3), 1, None, False),
    ],
)
def test_random_fiber_point_lies_on_the_fiber(shape, depth, widths, is_complex):
    X = rand_matrix(np.random.default_rng(6), shape, is_complex)
    for seed in range(3):
        w = _rfp_jit(jr.PRNGKey(seed), X, depth, 0.5, widths)
        assert w.depth == depth
        if widths is not None:
            assert w.widths == widths
        assert_close(
            explicit_product([np.asarray(x) for x in w.layers]),
            X,
            1e-12,
            "random_fiber_point on the fiber",
        )
        if depth > 1:
            G = explicit_moments([np.asarray(x) for x in w.layers])
            assert max(np.max(np.abs(g)) for g in G) > 1e-3 * sq_norm(
                w.layers
            )  # a generic fiber point is unbalanced
    c0 = _rfp_jit(jr.PRNGKey(0), X, depth, 0.0, widths)
    c = _fiber_center_jit(X, depth, widths)[0]
    assert tree_max_abs_diff(c0.layers, c) <= 1e-15 * max(
        float(np.max(np.abs(np.asarray(x)))) for x in c
    )


# --------------------------------------------------------------------------------------------------
# Random constructors
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.complex128, jnp.float32])
def test_gaussian_statistics(dtype):
    widths = (300, 200, 150)
    scale = 0.7
    gauss = jax.jit(lambda k: dlnjax.gaussian(k, widths, scale, dtype=dtype))
    net = gauss(jr.PRNGKey(0))
    assert net.widths == widths and net.dtype == dtype
    for w in net.layers:
        w = np.asarray(
            w, np.complex128 if jnp.issubdtype(dtype, jnp.complexfloating) else np.float64
        )
        n = w.size  # >= 30000 samples: relative standard error of the second moment <= 1%
        m2 = np.mean(np.abs(w) ** 2)
        assert abs(m2 / scale**2 - 1) < 0.05  # E|w|^2 = scale^2
        assert abs(np.mean(w)) < 6 * scale / np.sqrt(n)  # centred
        if np.iscomplexobj(w):
            # real and imaginary parts each carry half the variance, uncorrelated
            assert abs(np.mean(np.real(w) ** 2) / (scale**2 / 2) - 1) < 0.05
            assert abs(np.mean(np.imag(w) ** 2) / (scale**2 / 2) - 1) < 0.05
            assert abs(np.mean(np.real(w) * np.imag(w))) < 6 * scale**2 / np.sqrt(n)
        # Gaussian fourth moment: E w^4 = 3 sigma^4 (real), E|w|^4 = 2 sigma^4 (complex)
        kurt = np.mean(np.abs(w) ** 4) / m2**2
        assert abs(kurt - (2.0 if np.iscomplexobj(w) else 3.0)) < 0.25
    # different keys give different networks
    a, b = net.layers[0], gauss(jr.PRNGKey(1)).layers[0]
    assert np.max(np.abs(np.asarray(a) - np.asarray(b))) > 0.1


@pytest.mark.parametrize("widths", [(4, 4, 4), NONUNIFORM])
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.complex128])
def test_orthogonal_has_singular_values_scale(widths, dtype):
    scale = 1.7
    net = jax.jit(lambda k: dlnjax.orthogonal(k, widths, scale, dtype=dtype))(jr.PRNGKey(3))
    assert net.dtype == dtype and net.widths == widths
    for w in net.layers:
        w = np.asarray(w)
        s = np.linalg.svd(w, compute_uv=False)
        np.testing.assert_allclose(s, scale, rtol=1e-13, atol=0)
        r, c = w.shape
        gram = w @ ct(w) if r <= c else ct(w) @ w  # orthonormal rows (wide) or columns (tall)
        assert np.max(np.abs(gram - scale**2 * np.eye(min(r, c)))) <= 1e-13


def test_residual_and_identity():
    depth, width = 5, 4
    r0 = jax.jit(lambda k: dlnjax.residual(k, depth, width, 0.0))(jr.PRNGKey(0))
    assert r0.widths == (width,) * (depth + 1)
    for w in r0.layers:
        np.testing.assert_array_equal(np.asarray(w), np.eye(width))
    idn = dlnjax.identity(depth, width)
    for w in idn.layers:
        np.testing.assert_array_equal(np.asarray(w), np.eye(width))
    np.testing.assert_array_equal(np.asarray(dlnjax.end_to_end(idn)), np.eye(width))
    assert float(dlnjax.balancedness(idn)) == 0.0
    # W_k = I + s / sqrt(N d) * Gaussian: the deviation from I has standard deviation s / sqrt(N d)
    depth, width, s = 3, 100, 2.0
    r = jax.jit(lambda k: dlnjax.residual(k, depth, width, s))(jr.PRNGKey(1))
    dev = np.stack([np.asarray(w) - np.eye(width) for w in r.layers])
    std = s / np.sqrt(depth * width)
    assert abs(np.sqrt(np.mean(dev**2)) / std - 1) < 0.03  # 30000 samples
    assert abs(np.mean(dev)) < 6 * std / np.sqrt(dev.size)
    with pytest.raises(ValueError, match="need depth >= 1 and width >= 1"):
        dlnjax.residual(jr.PRNGKey(0), 0, 3, 1.0)


@pytest.mark.parametrize(
    "widths", [(5, 1, 4, 3), (2, 3, 3, 6), (4, 2, 3, 2, 7), (3, 3), (6, 2, 2, 2, 1)]
)
def test_mask_is_one_exactly_on_the_weights(widths):
    """`DLN.mask()` has the stored arrays' shapes and is 1 off the padding, 0 on it (also when d_0 or d_N exceed m)."""
    net = dlnjax.gaussian(jax.random.PRNGKey(0), widths)
    mask = net.mask()
    pads = padding_masks(widths)
    for m, a, pad in zip(mask.arrays(), net.arrays(), pads):
        assert m.shape == a.shape
        np.testing.assert_array_equal(np.asarray(m), (~pad).astype(float))


# --------------------------------------------------------------------------------------------------
# The stored-array constructor, DLN.from_layers, one mask builder
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("widths", [NONUNIFORM, (2, 7, 1, 3), (4, 3), (3, 5, 2)])
def test_from_layers_and_stored_array_constructor_round_trip(widths):
    layers = rand_layers(3, widths)
    net = dlnjax.DLN.from_layers(layers, activation="relu")
    legacy = dlnjax.DLN(layers, activation="relu")
    again = dlnjax.DLN(*net.arrays(), widths=net.widths, activation=net.activation)
    for other in (legacy, again):
        assert other.widths == tuple(widths) and other.activation == net.activation
        for a, b in zip(other.arrays(), net.arrays()):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for w, ref in zip(again.layers, layers):
        np.testing.assert_array_equal(np.asarray(w), ref)


def test_stored_array_constructor_checks_shapes_against_widths():
    net = dlnjax.DLN(rand_layers(0, NONUNIFORM))
    first, inner, last = net.arrays()
    with pytest.raises(dlnjax.ShapeError, match="last must have shape"):
        dlnjax.DLN(first, inner, last[:, :-1], widths=net.widths)
    with pytest.raises(dlnjax.ShapeError, match="inner must have shape"):
        dlnjax.DLN(first, inner[:-1], last, widths=net.widths)
    with pytest.raises(dlnjax.ShapeError, match="stores first, inner and last"):
        dlnjax.DLN(first, None, last, widths=net.widths)
    with pytest.raises(dlnjax.ShapeError, match="inner width m = 2 is below"):
        dlnjax.DLN(first[:2], inner[:, :2, :2], last[:, :2], widths=net.widths)
    with pytest.raises(dlnjax.ShapeError, match="widths must list"):
        dlnjax.DLN(first, inner, last, widths=(3,))
    with pytest.raises(dlnjax.ShapeError, match="share one floating"):
        dlnjax.DLN(first, inner.astype(jnp.float32), last, widths=net.widths)
    with pytest.raises(dlnjax.UnsupportedError, match="needs real weights"):
        dlnjax.DLN(*(a.astype(complex) for a in net.arrays()), widths=net.widths, activation="relu")
    one = dlnjax.DLN(rand_layers(0, (3, 2)))
    assert dlnjax.DLN(one.first, widths=(3, 2)).depth == 1
    with pytest.raises(dlnjax.ShapeError, match="first must have shape"):
        dlnjax.DLN(one.first.T, widths=(3, 2))
    with pytest.raises(dlnjax.ShapeError, match="stores only first"):
        dlnjax.DLN(one.first, inner, widths=(3, 2))


def test_stored_array_constructor_takes_batches_and_tracers():
    keys = jr.split(jr.PRNGKey(0), 4)
    batch = jax.vmap(lambda k: dlnjax.gaussian(k, NONUNIFORM))(keys)
    rebuilt = dlnjax.DLN(*batch.arrays(), widths=batch.widths)  # leading batch axis (4,)
    assert rebuilt.layers[1].shape == (4, NONUNIFORM[2], NONUNIFORM[1])
    with pytest.raises(dlnjax.ShapeError, match="leading batch axes"):
        dlnjax.DLN(batch.first, batch.inner[0], batch.last, widths=batch.widths)
    relu = jax.jit(lambda n: n.with_activation("relu"))(batch)
    assert relu.activation.name == "relu" and relu.widths == batch.widths
    np.testing.assert_array_equal(np.asarray(relu.inner), np.asarray(batch.inner))


@pytest.mark.parametrize("widths", [(5, 1, 4, 3), (2, 3, 3, 6), (6, 2, 2, 2, 1), (3, 3), (2, 4)])
def test_mask_arrays_is_the_one_mask_of_dln_pad_and_sharpness(widths):
    """`mask_arrays` (behind `DLN.mask`, `dlnjax.pad` and the live subspace of `dlnjax.sharpness`) against
    an explicit numpy mask built entry by entry."""
    from dlnjax.internal import mask_arrays

    net = dlnjax.gaussian(jr.PRNGKey(0), widths)
    pads = padding_masks(widths)
    built = mask_arrays(widths, net.inner_width, jnp.float64)
    assert len(built) == len(pads)
    for a, pad in zip(built, pads):
        np.testing.assert_array_equal(np.asarray(a), (~pad).astype(float))
    if len(widths) > 2:  # pad's live mask of a real network padded to itself is the same mask
        _, live = dlnjax.pad(net, len(widths) - 1, net.inner_width)
        for a, pad in zip(live.arrays(), pads):
            np.testing.assert_array_equal(np.asarray(a), (~pad).astype(float))


def test_with_activation_keeps_arrays_and_checks_dtype():
    net = dlnjax.DLN(rand_layers(1, NONUNIFORM, is_complex=True))
    assert net.with_activation(None).activation.is_linear
    with pytest.raises(dlnjax.UnsupportedError, match="needs real weights"):
        net.with_activation("gelu")


@pytest.mark.parametrize("is_complex", [False, True])
def test_squared_norm_hessian_is_twice_the_identity_at_zero_entries(is_complex):
    """``||W||^2`` is a quadratic form: its Hessian is ``2 I`` everywhere, including at zero entries (where
    ``|w|^2`` written as ``abs(w) ** 2`` would differentiate to 0)."""
    rng = np.random.default_rng(3)
    layers = [rand_matrix(rng, (2, 3), is_complex), rand_matrix(rng, (3, 2), is_complex)]
    layers[0][0, :] = 0.0
    layers[1][:, 1] = 0.0
    net = dlnjax.DLN.from_layers([jnp.asarray(w) for w in layers])
    flat, unravel = jax.flatten_util.ravel_pytree(net.layers)
    if is_complex:
        to_net = lambda v: net.__class__.from_layers(
            list(unravel(v[: flat.size] + 1j * v[flat.size :]))
        )
        v0 = jnp.concatenate([flat.real, flat.imag])
    else:
        to_net = lambda v: net.__class__.from_layers(list(unravel(v)))
        v0 = flat
    H = jax.hessian(lambda v: dlnjax.squared_norm(to_net(v)))(v0)
    np.testing.assert_allclose(np.asarray(H), 2 * np.eye(v0.size), atol=1e-14)
