"""Padded networks (dlnjax/_padding.py) and the masks that train them: ``train(mask=)``, ``flows.Masked``,
``sharpness(mask=)``.

A real network of depth N and hidden widths <= W sits in the padded shape (d_0, W, ..., W, d_N) of depth
N_max with frozen identity layers after layer 1. Every check compares the padded computation with the real
network computed directly: explicit products and ``jax.grad`` / ``jax.hessian`` of explicit losses of the
real layers (conftest), or the same dlnjax routine run on the real (unpadded) network. Float64 throughout.
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402
from conftest import explicit_moments, explicit_product, rand_layers, sq_norm  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import dlnjax  # noqa: E402
from dlnjax import flows  # noqa: E402
from dlnjax._diagnostics import sharpness  # noqa: E402
from dlnjax._padding import (  # noqa: E402
    pad,
    padded_balancedness,
    padded_layer_norms,
    padded_squared_norm,
    unpad,
)
from dlnjax._quantities import padded_objective  # noqa: E402
from dlnjax._train import train  # noqa: E402
from dlnjax.losses import MatrixCompletion, Regression  # noqa: E402

D0, DN = 3, 2


def _max_diff(a, b) -> float:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    out = 0.0
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape, (x.shape, y.shape)
        if x.size:
            out = max(out, float(np.max(np.abs(x - y))))
    return out


def _stack(nets):
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *nets)


def _frozen_block(widths_real, depth, width):
    """(N_max - N, W, W): the frozen layers pad() must insert, written out."""
    n = len(widths_real) - 1
    f = np.zeros((width, width))
    f[: widths_real[1], : widths_real[1]] = np.eye(widths_real[1])
    return np.broadcast_to(f, (depth - n, width, width))


@st.composite
def _padded_case(draw):
    n = draw(st.integers(2, 4))
    hidden = [draw(st.integers(1, 4)) for _ in range(n - 1)]
    widths = (draw(st.integers(1, 4)),) + tuple(hidden) + (draw(st.integers(1, 3)),)
    depth = n + draw(st.integers(0, 2))
    width = max(hidden) + draw(st.integers(0, 2))
    return widths, depth, width, draw(st.booleans()), draw(st.integers(0, 2**31 - 1))


# --------------------------------------------------------------------------------------------------
# The embedding
# --------------------------------------------------------------------------------------------------


@settings(max_examples=6)
@given(_padded_case())
def test_pad_layout_round_trip_and_end_to_end(case):
    """pad puts W_1, then the frozen [[I, 0], [0, 0]] layers, then W_2..W_N (zero-padded); live marks exactly
    the real weights; unpad inverts pad exactly; the end-to-end matrix is the real one."""
    widths, depth, width, is_complex, seed = case
    layers = rand_layers(seed, widths, is_complex)
    net = dlnjax.DLN(layers)
    padded, live = pad(net, depth, width)
    n = len(widths) - 1
    assert padded.widths == (widths[0],) + (width,) * (depth - 1) + (widths[-1],) == live.widths
    P = [np.asarray(w) for w in padded.layers]
    L = [np.asarray(w) for w in live.layers]
    # layer 1, frozen layers, layers 2..N, each with its zero padding
    expected = [np.zeros_like(p) for p in P]
    expected_live = [np.zeros(p.shape) for p in P]
    real_positions = [0] + list(range(depth - n + 1, depth))
    for k, pos in enumerate(real_positions):
        r, c = layers[k].shape
        expected[pos][:r, :c] = layers[k]
        expected_live[pos][:r, :c] = 1.0
    for j, f in enumerate(_frozen_block(widths, depth, width)):
        expected[1 + j] = f
    for p, e, l, el in zip(P, expected, L, expected_live):
        np.testing.assert_array_equal(p, e)
        np.testing.assert_array_equal(l, el)
    assert np.sum([l.sum() for l in L]) == sum(widths[k] * widths[k + 1] for k in range(n))
    assert _max_diff(unpad(padded, widths), net) == 0.0
    assert unpad(padded, widths).widths == net.widths
    X = explicit_product(layers)
    assert _max_diff(explicit_product(P), X) <= 1e-13 * max(1.0, np.max(np.abs(X)))


def test_pad_under_vmap_and_unpad_of_a_batch():
    """jax.vmap(pad) over a batch equals pad of each net; unpad keeps leading axes."""
    nets = [dlnjax.DLN(rand_layers(s, (D0, 3, 2, DN))) for s in range(3)]
    batch = _stack(nets)
    padded, live = jax.jit(jax.vmap(lambda n: pad(n, 5, 4)))(batch)
    for i, net in enumerate(nets):
        p, l = pad(net, 5, 4)
        assert _max_diff(jax.tree_util.tree_map(lambda a: a[i], padded), p) == 0.0
        assert _max_diff(jax.tree_util.tree_map(lambda a: a[i], live), l) == 0.0
    assert _max_diff(unpad(padded, (D0, 3, 2, DN)), batch) == 0.0


@pytest.mark.parametrize("kind", ["regression", "completion"])
def test_loss_and_gradient_unchanged(kind):
    """network_loss equal; the gradient is the real one (jax.grad of the explicit product) on live entries,
    zero on the padding, and (the reason for masks) not zero on the frozen block."""
    widths = (4, 3, 2, 3)  # non-uniform hidden widths
    if kind == "regression":
        loss = Regression.random(jr.PRNGKey(0), 10, widths[0], widths[-1])
    else:
        loss = MatrixCompletion.random(jr.PRNGKey(1), (widths[-1], widths[0]), 2, 7)
    layers = [jnp.asarray(w) for w in rand_layers(3, widths, scale=1.2)]
    net = dlnjax.DLN(layers)
    padded, live = pad(net, 6, 5)
    ref = float(loss(explicit_product(layers)))
    assert abs(float(dlnjax.network_loss(loss, padded)) - ref) <= 1e-13 * abs(ref)
    g_ref = jax.grad(lambda ls: loss(explicit_product(ls)))(layers)
    g_pad = dlnjax.network_gradient(loss, padded)
    embedded, _ = pad(dlnjax.DLN(g_ref), 6, 5)
    masked = jax.tree_util.tree_map(jnp.multiply, g_pad, live)
    assert _max_diff(masked, jax.tree_util.tree_map(jnp.multiply, embedded, live)) <= 1e-12 * max(
        float(jnp.max(jnp.abs(x))) for x in g_ref
    )
    assert _max_diff(unpad(g_pad, widths), dlnjax.DLN(g_ref)) <= 1e-12 * max(
        float(jnp.max(jnp.abs(x))) for x in g_ref
    )
    # zero on the padding (everything off live and off the d_1 x d_1 corner of the frozen layers)
    frozen_corner = np.zeros(g_pad.inner.shape, bool)
    frozen_corner[: 6 - 3, : widths[1], : widths[1]] = True
    assert np.all(np.asarray(g_pad.first)[np.asarray(live.first) == 0] == 0)
    assert np.all(np.asarray(g_pad.last)[np.asarray(live.last) == 0] == 0)
    assert np.all(np.asarray(g_pad.inner)[(np.asarray(live.inner) == 0) & ~frozen_corner] == 0)
    assert np.max(np.abs(np.asarray(g_pad.inner)[frozen_corner])) > 1e-3


# --------------------------------------------------------------------------------------------------
# Layer-wise quantities with a traced live: several real depths in one program
# --------------------------------------------------------------------------------------------------

MIXED = [(D0,) + (w,) * (n - 1) + (DN,) for n in (2, 3, 5) for w in (3, 4)] + [(D0, 4, 2, 3, DN)]
PAD_DEPTH, PAD_WIDTH = 5, 6


def test_padded_quantities_equal_the_real_ones_in_one_vmapped_program():
    """Real depths 2, 3, 5 and widths 3, 4 (and a non-uniform net) padded to (5, 6), one jitted vmap:
    squared norm, layer norms (then NaN) and balancedness equal the explicit ones of each real net."""
    layer_sets = [rand_layers(10 + i, w, scale=1.1) for i, w in enumerate(MIXED)]
    pairs = [pad(dlnjax.DLN(ls), PAD_DEPTH, PAD_WIDTH) for ls in layer_sets]
    padded, live = _stack([p for p, _ in pairs]), _stack([l for _, l in pairs])
    fn = jax.jit(
        jax.vmap(
            lambda n, l: (
                padded_squared_norm(n, l),
                padded_layer_norms(n, l),
                padded_balancedness(n, l),
            )
        )
    )
    sq, norms, bal = fn(padded, live)
    for i, ls in enumerate(layer_sets):
        n = len(ls)
        ref_norms = [float(np.sum(np.abs(w) ** 2)) for w in ls]
        ref_sq = sq_norm(ls)
        ref_bal = np.sqrt(sum(np.sum(np.abs(g) ** 2) for g in explicit_moments(ls))) / ref_sq
        np.testing.assert_allclose(float(sq[i]), ref_sq, rtol=1e-13)
        np.testing.assert_allclose(np.asarray(norms[i, :n]), ref_norms, rtol=1e-13)
        assert np.all(np.isnan(np.asarray(norms[i, n:])))
        np.testing.assert_allclose(float(bal[i]), ref_bal, rtol=1e-12)
    # the dlnjax functions of one real net (the non-uniform one)
    real = dlnjax.DLN(layer_sets[-1])
    np.testing.assert_allclose(float(bal[-1]), float(dlnjax.balancedness(real)), rtol=1e-12)
    np.testing.assert_allclose(
        np.asarray(norms[-1, :4]), np.asarray(dlnjax.layer_norms(real)), rtol=1e-13
    )
    # the zero network is balanced, no NaN
    zero = jax.tree_util.tree_map(jnp.zeros_like, pairs[0][0])
    assert float(padded_balancedness(zero, pairs[0][1])) == 0.0


# --------------------------------------------------------------------------------------------------
# Training and flows with the mask
# --------------------------------------------------------------------------------------------------


def test_train_with_mask_follows_the_real_trajectory():
    """optax.sgd with weight decay, one vmapped train of padded nets of real depths 2 and 3 (mask=live,
    per-run metric functions closing over live) against train on each real net: final nets (unpadded),
    loss, grad_norm and objective histories to 1e-12; frozen layers unmoved, padding zero."""
    loss = Regression.random(jr.PRNGKey(2), 15, D0, DN, noise=0.5)
    opt, steps, every, kappa = optax.sgd(0.05), 30, 10, 0.01
    shapes = [(D0, 3, DN), (D0, 2, 3, DN)]
    nets = [dlnjax.DLN(rand_layers(20 + i, w, scale=0.9)) for i, w in enumerate(shapes)]
    pairs = [pad(n, 4, 4) for n in nets]
    padded, live = _stack([p for p, _ in pairs]), _stack([l for _, l in pairs])

    def run_padded(net, l):
        fns = {
            "objective": lambda n: padded_objective(loss, n, l, kappa),
            "norms": lambda n: padded_layer_norms(n, l),
        }
        return train(
            loss,
            net,
            opt,
            steps,
            every=every,
            kappa=kappa,
            metrics=("loss", "grad_norm"),
            metric_fns=fns,
            mask=l,
        )

    res = jax.jit(jax.vmap(run_padded))(padded, live)
    assert not np.any(np.asarray(res.diverged))
    for i, (net, w) in enumerate(zip(nets, shapes)):
        ref = train(
            loss,
            net,
            opt,
            steps,
            every=every,
            kappa=kappa,
            metrics=("loss", "grad_norm", "objective", "layer_norms"),
        )
        final = jax.tree_util.tree_map(lambda a: a[i], res.net)
        assert _max_diff(unpad(final, w), ref.net) <= 1e-12
        for name in ("loss", "grad_norm", "objective"):
            np.testing.assert_allclose(
                np.asarray(res.history[name][i]),
                np.asarray(ref.history[name]),
                rtol=1e-12,
                err_msg=name,
            )
        n = len(w) - 1
        np.testing.assert_allclose(
            np.asarray(res.history["norms"][i][:, :n]),
            np.asarray(ref.history["layer_norms"]),
            rtol=1e-12,
        )
        # nothing moved where live is 0
        frozen = [np.asarray(l) == 0 for l in pairs[i][1].arrays()]
        for a, a0, f in zip(final.arrays(), pairs[i][0].arrays(), frozen):
            np.testing.assert_array_equal(np.asarray(a)[f], np.asarray(a0)[f])
    # without the mask the frozen layers do move (so the test above tests the mask)
    unmasked = train(loss, pairs[0][0], opt, steps, every=every)
    assert _max_diff(unmasked.net.inner, pairs[0][0].inner) > 1e-4


def test_masked_gradient_flow_follows_the_real_flow():
    """simulate(Masked(Gradient(loss), live), padded) unpads to simulate(Gradient(loss), net) (both at
    rtol = 1e-10, atol = 1e-12); the frozen layers stay exactly the identity block."""
    loss = MatrixCompletion.random(jr.PRNGKey(3), (DN, D0), 2, 5)
    widths = (D0, 3, 3, DN)
    net = dlnjax.DLN(rand_layers(7, widths, scale=1.0))
    padded, live = pad(net, 5, 4)
    ts = jnp.linspace(0.0, 2.0, 5)
    kw = dict(rtol=1e-10, atol=1e-12)
    real = dlnjax.simulate(flows.Gradient(loss), net, ts, **kw)
    flow = flows.Masked(flows.Gradient(loss), live)
    assert not hasattr(flow, "diffusion")
    pad_traj = dlnjax.simulate(flow, padded, ts, **kw)
    assert bool(real.success) and bool(pad_traj.success)
    assert _max_diff(unpad(pad_traj.ys, widths), real.ys) <= 1e-8
    assert _max_diff(real.ys.first[-1], real.ys.first[0]) > 1e-2  # it moved
    frozen = np.broadcast_to(
        _frozen_block(widths, 5, 4), (5, 2, 4, 4)
    )  # 5 save times, 2 frozen layers
    np.testing.assert_array_equal(np.asarray(pad_traj.ys.inner[:, :2]), frozen)
    with pytest.raises(ValueError, match="key= is only for stochastic"):
        dlnjax.simulate(flow, padded, ts, key=jr.PRNGKey(0))


def test_masked_langevin_keeps_frozen_entries_fixed():
    """Masked(Langevin) is stochastic; its drift on live entries is the real drift, its noise is sqrt(2/beta)
    on live entries and zero elsewhere; along an SDE path frozen and padding entries never move."""
    loss = Regression.random(jr.PRNGKey(4), 12, D0, DN)
    widths = (D0, 2, 3, DN)
    net = dlnjax.DLN(rand_layers(8, widths))
    padded, live = pad(net, 4, 4)
    lang = flows.Langevin(loss, 0.5, 4.0)
    flow = flows.Masked(lang, live)
    assert isinstance(flow, flows.Masked) and isinstance(flow, flows.MaskedStochastic)
    assert _max_diff(unpad(flow(0.0, padded), widths), lang(0.0, net)) <= 1e-13
    ones = jax.tree_util.tree_map(jnp.ones_like, padded)
    noise = flow.diffusion(0.0, padded).mv(ones)
    assert _max_diff(noise, jax.tree_util.tree_map(lambda l: np.sqrt(2.0 / 4.0) * l, live)) <= 1e-15
    traj = dlnjax.simulate(flow, padded, jnp.linspace(0.0, 0.5, 3), key=jr.PRNGKey(5), dt0=0.05)
    assert bool(traj.success)
    for a, a0, l in zip(traj.ys.arrays(), padded.arrays(), live.arrays()):
        fixed = np.asarray(l) == 0
        np.testing.assert_array_equal(
            np.asarray(a)[:, fixed], np.broadcast_to(np.asarray(a0)[fixed], (3, int(fixed.sum())))
        )
        assert (
            np.max(np.abs(np.asarray(a[-1])[~fixed] - np.asarray(a0)[~fixed])) > 1e-3
        )  # the live entries moved
    with pytest.raises(ValueError, match="needs key"):
        dlnjax.simulate(flow, padded, jnp.array([0.0, 1.0]))


# --------------------------------------------------------------------------------------------------
# Sharpness restricted to the live entries
# --------------------------------------------------------------------------------------------------


def _explicit_hessian_top(loss, layers):
    shapes = [w.shape for w in layers]
    sizes = [int(np.prod(s)) for s in shapes]
    theta = jnp.concatenate([jnp.ravel(w) for w in layers])

    def f(t):
        parts = jnp.split(t, np.cumsum(sizes)[:-1])
        return loss(explicit_product([p.reshape(s) for p, s in zip(parts, shapes)]))

    return float(np.linalg.eigvalsh(np.asarray(jax.hessian(f)(theta)))[-1])


# slow (30 s): padded sharpness is also checked through the sharded sweep (tests/test_sweep.py)
@pytest.mark.slow
def test_sharpness_with_mask_equals_the_real_sharpness():
    """Two real nets (depths 2 and 3; 14 and 18 weights) padded to (4, 4), one vmapped call with per-run live
    and 40 Lanczos steps (more than the live weights: the masked Krylov space is exhausted, no NaN): the
    dense Hessian's top eigenvalue of each real net and sharpness of the real net, to 1e-10."""
    loss = Regression.random(jr.PRNGKey(6), 20, D0, DN)
    shapes = [(D0, 2, DN), (D0, 2, 2, DN)]
    layer_sets = [rand_layers(30 + i, w, scale=1.2) for i, w in enumerate(shapes)]
    pairs = [pad(dlnjax.DLN(ls), 4, 4) for ls in layer_sets]
    # a third run: the second net with an all-ones mask, i.e. the unmasked Hessian of the padded net
    ones = jax.tree_util.tree_map(jnp.ones_like, pairs[1][1])
    padded = _stack([pairs[0][0], pairs[1][0], pairs[1][0]])
    live = _stack([pairs[0][1], pairs[1][1], ones])
    top, err = eqx.filter_jit(
        jax.vmap(lambda n, l: sharpness(loss, n, mask=l, iterations=40, return_error=True))
    )(padded, live)
    assert np.all(np.isfinite(np.asarray(top))) and np.all(np.isfinite(np.asarray(err)))
    for i, ls in enumerate(layer_sets):
        ref = _explicit_hessian_top(loss, [jnp.asarray(w) for w in ls])
        assert abs(float(top[i]) - ref) <= 1e-10 * abs(ref), (i, float(top[i]), ref)
        assert float(err[i]) <= 1e-8 * abs(ref)
    # the unmasked Hessian of the padded net is another matrix (frozen entries are weights there)
    assert abs(float(top[2]) - float(top[1])) > 1e-3


def test_sharpness_mask_on_a_negative_definite_block():
    """Only W_1 live, E = -1/2 ||W_2 W_1 - T||^2: the Hessian on W_1 is -(W_2^T W_2 (x) I), negative definite,
    4 live weights and 10 iterations: the top eigenvalue -sigma_min(W_2)^2, not a spurious 0 from the
    steps past the exhausted masked space."""
    W2 = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    W1 = np.random.default_rng(0).standard_normal((2, 2))
    net = dlnjax.DLN([W1, W2])
    mask = net.replace_arrays(jnp.ones((2, 2)), jnp.zeros((0, 2, 2)), jnp.zeros((3, 2)))
    T = jnp.ones((3, 2))
    s = float(sharpness(lambda X: -0.5 * jnp.sum((X - T) ** 2), net, mask=mask, iterations=10))
    ref = -(np.linalg.svd(W2, compute_uv=False)[-1] ** 2)
    assert abs(s - ref) <= 1e-10 * abs(ref), (s, ref)


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_naming_the_problem():
    net = dlnjax.DLN(rand_layers(0, (D0, 3, 3, DN)))
    padded, live = pad(net, 4, 4)
    with pytest.raises(ValueError, match="depth N >= 2"):
        pad(dlnjax.DLN(rand_layers(0, (D0, DN))), 4, 4)
    with pytest.raises(ValueError, match="exceeds the padded depth"):
        pad(net, 2, 4)
    with pytest.raises(ValueError, match="exceed the padded width"):
        pad(net, 4, 2)
    with pytest.raises(ValueError, match="idempotent"):
        pad(net.with_activation("leaky_relu"), 4, 4)
    with pytest.raises(ValueError, match="d_0 and d_N"):
        unpad(padded, (D0 + 1, 3, 3, DN))
    with pytest.raises(ValueError, match="exceeds the padded depth"):
        unpad(padded, (D0, 3, 3, 3, 3, DN))
    other, _ = pad(net, 4, 5)
    with pytest.raises(ValueError, match="widths of net"):
        padded_balancedness(padded, pad(net, 4, 5)[1])
    with pytest.raises(ValueError, match="widths of net0"):
        train(lambda X: jnp.sum(X**2), padded, optax.sgd(0.1), 2, mask=pad(net, 4, 5)[1])
    with pytest.raises(ValueError, match="mask must be a dlnjax.DLN"):
        train(lambda X: jnp.sum(X**2), padded, optax.sgd(0.1), 2, mask=live.arrays())
    with pytest.raises(ValueError, match="mask must have the widths"):
        sharpness(lambda X: jnp.sum(X**2), padded, mask=pad(net, 4, 5)[1])
    with pytest.raises(ValueError, match="mask must be a dlnjax.DLN"):
        flows.Masked(flows.Gradient(lambda X: jnp.sum(X**2)), live.arrays())
    with pytest.raises(ValueError, match="widths"):
        flows.Masked(flows.Gradient(lambda X: jnp.sum(X**2)), live)(0.0, other)
