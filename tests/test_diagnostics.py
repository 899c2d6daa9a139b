"""Diagnostics (dlnjax/_diagnostics.py): sharpness against dense Hessians, seed 004's bounds at minimizers found
by gradient descent, ranks, and seed 002's conserved layer balances along gradient flow and gradient descent.

Every reference is computed directly: dense ``jax.hessian`` of an explicit loop product / forward pass over
the flattened layers, ``np.linalg.svd``/``eigvalsh``, numpy sums. Compiling the Lanczos loop takes
seconds on CPU, so several random instances of one shape are checked through one vmapped, jitted call.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from conftest import NONUNIFORM, explicit_product, rand_layers, rand_matrix

import dlnjax
from dlnjax import _diagnostics as diag
from dlnjax import flows
from dlnjax._diagnostics import regression_constants, sharpness, sharpness_bounds
from dlnjax.losses import Regression

# The cheap diagnostics, jitted: one compile per shape costs less than many eager ops.
alignment = jax.jit(diag.alignment)
distance_to_minimizer = jax.jit(diag.distance_to_minimizer)
effective_rank = jax.jit(diag.effective_rank)
layer_norm_differences = jax.jit(diag.layer_norm_differences)
layer_norms = jax.jit(diag.layer_norms)
neuron_balance = jax.jit(diag.neuron_balance)
numerical_rank = jax.jit(diag.numerical_rank, static_argnames="rtol")
rank_one_ratio = jax.jit(diag.rank_one_ratio)


# --------------------------------------------------------------------------------------------------
# References (never through dlnjax)
# --------------------------------------------------------------------------------------------------


class Quartic(eqx.Module):
    """A non-quadratic loss E(X) = sum (X - T)^2 + 0.1 sum X^4 (a pytree: one compile for all targets)."""

    T: jax.Array

    def __call__(self, X):
        return jnp.sum((X - self.T) ** 2) + 0.1 * jnp.sum(X**4)


def explicit_forward(layers, x, phi):
    """f(x) = W_N phi(... phi(W_1 x)) on the rows of x, by a Python loop."""
    h = x @ layers[0].T
    for w in layers[1:]:
        h = phi(h) @ w.T
    return h


def regression_value(layers, x, y, phi=lambda h: h):
    """(1/n) sum_i ||f(x_i) - y_i||^2 (seed 004: no 1/2)."""
    return jnp.sum((explicit_forward(layers, x, phi) - y) ** 2) / x.shape[0]


def _unflatten(theta, shapes):
    out, i = [], 0
    for shp in shapes:
        out.append(theta[i : i + shp[0] * shp[1]].reshape(shp))
        i += shp[0] * shp[1]
    return out


_PHI = {"identity": lambda h: h, "relu": jax.nn.relu}


@functools.partial(jax.jit, static_argnames=("shapes", "kind"))
def _dense_hessian(theta, data, shapes, kind):
    """Dense Hessian of an explicit loss in the flat real coordinates of the layers (one compile per shape)."""

    def value(t):
        layers = _unflatten(t, shapes)
        if kind == "quartic":
            X = explicit_product(layers)
            return jnp.sum((X - data[0]) ** 2) + 0.1 * jnp.sum(X**4)
        return regression_value(layers, data[0], data[1], _PHI[kind])

    return jax.hessian(value)(theta)


def dense_eigs(layers, kind, *data):
    """All eigenvalues (ascending, numpy) of the dense Hessian; kind: "quartic" (data: T) or an activation
    name for the regression loss (data: x, y of shape (n, d_N))."""
    layers = [np.asarray(w, float) for w in layers]
    theta = jnp.asarray(np.concatenate([w.ravel() for w in layers]))
    shapes = tuple(w.shape for w in layers)
    H = _dense_hessian(theta, tuple(jnp.asarray(d) for d in data), shapes, kind)
    return np.linalg.eigvalsh(np.asarray(H))


def stack_nets(nets):
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *nets)


@eqx.filter_jit
def batched_sharpness(loss, nets, iterations=40):
    return jax.vmap(lambda l, n: sharpness(l, n, iterations=iterations, return_error=True))(
        loss, nets
    )


# --------------------------------------------------------------------------------------------------
# Sharpness against the dense Hessian
# --------------------------------------------------------------------------------------------------

SHAPES = [(4, 3), (2, 5, 3, 4), NONUNIFORM, (5, 1, 4, 3)]


@pytest.mark.parametrize("widths", SHAPES, ids=str)
def test_sharpness_matches_dense_hessian(widths):
    """Random nets and targets of the non-quadratic loss (3 instances, one vmapped call): the top eigenvalue of
    the dense Hessian to 1e-6, and a small error estimate. Depth 1 to 4, rectangular; NONUNIFORM (76 weights,
    40 Lanczos steps, padded inner widths) stays in the Krylov regime; (5, 1, 4, 3) has d_0 > m; the others
    exhaust the live space (iterations > number of weights)."""
    rng = np.random.default_rng(sum(widths))
    layer_sets = [rand_layers(100 * i + len(widths), widths, scale=1.3) for i in range(3)]
    targets = np.stack([rng.standard_normal((widths[-1], widths[0])) for _ in range(3)])
    top, err = batched_sharpness(
        Quartic(jnp.asarray(targets)), stack_nets([dlnjax.DLN(ls) for ls in layer_sets])
    )
    for i, layers in enumerate(layer_sets):
        ref = dense_eigs(layers, "quartic", targets[i])[-1]
        assert abs(float(top[i]) - ref) <= 1e-6 * abs(ref), (i, float(top[i]), ref)
        assert float(err[i]) <= 1e-6 * abs(ref)


def test_sharpness_regression_and_vmap_equals_unbatched():
    """Regression loss (seed 004's R, no 1/2) on padded nets: vmap over nets equals one call per net,
    and both equal the dense Hessian's top eigenvalue."""
    x = jr.normal(jr.PRNGKey(1), (12, 3))
    y = jr.normal(jr.PRNGKey(2), (12, 2))
    loss = Regression(x, y)
    layer_sets = [rand_layers(7 + i, NONUNIFORM) for i in range(2)]
    nets = [dlnjax.DLN(ls) for ls in layer_sets]
    batched = jax.jit(jax.vmap(lambda n: sharpness(loss, n)))(stack_nets(nets))
    single = jax.jit(lambda n: sharpness(loss, n))
    for i, (net, layers) in enumerate(zip(nets, layer_sets)):
        ref = dense_eigs(layers, "identity", x, y)[-1]
        one = float(single(net))
        assert abs(one - ref) <= 1e-6 * ref
        assert abs(float(batched[i]) - one) <= 1e-10 * ref


def test_sharpness_relu_network():
    """A ReLU net with a Regression loss: against the dense Hessian of an explicit forward pass (not the
    linear net's Hessian, which differs)."""
    widths = (3, 5, 4, 1)
    x = jr.normal(jr.PRNGKey(3), (16, 3))
    y = jr.normal(jr.PRNGKey(4), (16, 1))
    layer_sets = [rand_layers(20 + i, widths, scale=1.5) for i in range(2)]
    nets = stack_nets([dlnjax.DLN(ls, activation="relu") for ls in layer_sets])
    loss = Regression(x, y)
    top, _ = batched_sharpness(jax.tree_util.tree_map(lambda a: jnp.stack([a, a]), loss), nets)
    for i, layers in enumerate(layer_sets):
        ref = dense_eigs(layers, "relu", x, y)[-1]
        linear = dense_eigs(layers, "identity", x, y)[-1]
        assert abs(float(top[i]) - ref) <= 1e-6 * ref
        assert abs(linear - ref) > 1e-3 * ref


def test_sharpness_error_estimate_bounds_distance_to_spectrum():
    """Few Lanczos steps: the residual bound |beta_k s_k| is positive, the Ritz value lies below the top
    eigenvalue, and some eigenvalue lies within the bound of it."""
    widths = (4, 6, 6, 3)  # 66 weights, 6 Lanczos steps
    layers = rand_layers(5, widths)
    T = np.random.default_rng(5).standard_normal((3, 4))
    top, err = batched_sharpness(
        Quartic(jnp.asarray(T)[None]), stack_nets([dlnjax.DLN(layers)]), iterations=6
    )
    eigs = dense_eigs(layers, "quartic", T)
    top, err = float(top[0]), float(err[0])
    assert eigs[-1] - top > 1e-8 * eigs[-1]  # not converged ...
    assert err > 1e-8 * eigs[-1]  # ... and the estimate says so
    assert top <= eigs[-1] * (1 + 1e-12)
    assert np.min(np.abs(eigs - top)) <= err * (1 + 1e-8) + 1e-12 * eigs[-1]


def test_sharpness_invariant_subspaces_give_no_nan():
    """Zero nets: at depth 3 the Hessian vanishes (breakdown at every step); at depth 2 its spectrum is
    {+-sigma_i(grad E(0)), 0}; iterations far beyond the number of weights; an explicit key agrees."""
    T = np.random.default_rng(6).standard_normal((2, 3))
    loss = Quartic(jnp.asarray(T))
    zero3 = dlnjax.DLN([jnp.zeros((4, 3)), jnp.zeros((4, 4)), jnp.zeros((2, 4))])
    s, e = sharpness(loss, zero3, iterations=100, return_error=True)
    assert float(s) == 0.0 and float(e) == 0.0
    zero2 = stack_nets([dlnjax.DLN([jnp.zeros((4, 3)), jnp.zeros((2, 4))])] * 2)
    ref = dense_eigs([np.zeros((4, 3)), np.zeros((2, 4))], "quartic", T)[-1]
    np.testing.assert_allclose(ref, np.linalg.norm(2 * T, 2), rtol=1e-12)  # grad E(0) = -2T
    keys = jnp.stack([jr.PRNGKey(0), jr.PRNGKey(9)])
    f = jax.jit(jax.vmap(lambda n, k: sharpness(loss, n, iterations=100, key=k, return_error=True)))
    s, e = f(zero2, keys)
    assert np.all(np.isfinite(np.asarray(e))) and np.all(np.abs(np.asarray(s) - ref) <= 1e-10 * ref)


def test_sharpness_batch_where_only_some_runs_break_down():
    """Under vmap the restart vector after a breakdown is computed only when some run of the batch breaks down (a
    cond on an unbatched predicate): a batch of a zero net (spectrum {+-sigma_i, 0}: an invariant Krylov subspace
    after a few steps, so the restart branch runs for the whole batch) and a generic one; each equals its
    unbatched value (where the branch runs for the zero net only) and the dense Hessian's top eigenvalue."""
    T = np.random.default_rng(7).standard_normal((2, 3))
    loss = Quartic(jnp.asarray(T))
    rng = np.random.default_rng(8)
    generic = [rng.standard_normal((4, 3)), rng.standard_normal((2, 4))]
    zero = [np.zeros((4, 3)), np.zeros((2, 4))]
    batch = stack_nets([dlnjax.DLN([jnp.asarray(w) for w in ws]) for ws in (zero, generic)])
    f = lambda n: sharpness(loss, n, iterations=20)  # 20 = the number of weights
    batched = np.asarray(jax.jit(jax.vmap(f))(batch))
    for i, ws in enumerate((zero, generic)):
        ref = dense_eigs(ws, "quartic", T)[-1]
        single = float(jax.jit(f)(dlnjax.DLN([jnp.asarray(w) for w in ws])))
        assert abs(batched[i] - ref) <= 1e-10 * abs(ref), (i, batched[i], ref)
        assert abs(single - batched[i]) <= 1e-12 * abs(ref)


def test_sharpness_bad_input():
    T = jnp.ones((2, 3))
    real = dlnjax.DLN(rand_layers(0, (3, 4, 2)))
    cplx = dlnjax.DLN(rand_layers(0, (3, 4, 2), is_complex=True))
    with pytest.raises(ValueError, match="real weights"):
        sharpness(lambda X: jnp.sum(jnp.abs(X - T) ** 2), cplx)
    loss = Regression(jnp.ones((5, 4)), jnp.ones((5, 2)))  # expects 4 -> 2; the net maps 3 -> 2
    with pytest.raises(ValueError, match="shape"):
        sharpness(loss, real)
    with pytest.raises(ValueError, match="iterations"):
        sharpness(lambda X: jnp.sum(X**2), real, iterations=0)
    with pytest.raises(TypeError):
        sharpness(lambda X: jnp.sum(X**2), [jnp.ones((2, 3))])
    with pytest.raises(ValueError, match="vmap"):
        sharpness(lambda X: jnp.sum(X**2), stack_nets([real, real]))


# --------------------------------------------------------------------------------------------------
# Seed 004: bounds at minimizers
# --------------------------------------------------------------------------------------------------


def _numpy_constants(x, y):
    x, y = np.asarray(x), np.asarray(y).reshape(-1)
    sigma = x.T @ x / x.shape[0]
    w = np.linalg.lstsq(x, y, rcond=None)[0]
    u = w / np.linalg.norm(w)
    return u @ sigma @ u, np.linalg.eigvalsh(sigma)[-1], np.linalg.norm(w)


def test_regression_constants_and_bounds_against_numpy():
    loss = Regression.random(jr.PRNGKey(0), 30, 4, noise=0.7)
    a, lam, wn = _numpy_constants(loss.inputs, loss.targets)
    c = regression_constants(loss)
    np.testing.assert_allclose([c.a, c.Lambda, c.w_norm], [a, lam, wn], rtol=1e-12)
    assert a <= lam  # a Rayleigh quotient
    for n in (1, 10):
        lo, hi = sharpness_bounds(loss, n)
        np.testing.assert_allclose(
            [lo, hi], [2 * n * a * wn ** (2 - 2 / n), 8 * n * lam * wn ** (2 - 2 / n)], rtol=1e-12
        )
    with pytest.raises(ValueError, match="univariate"):
        regression_constants(Regression(jnp.ones((5, 3)), jnp.ones((5, 2))))
    with pytest.raises(TypeError):
        regression_constants(lambda X: jnp.sum(X**2))
    with pytest.raises(ValueError, match="depth"):
        sharpness_bounds(loss, 0)


@pytest.mark.parametrize("depth", [2, 4])
def test_lower_bound_attained_at_balanced_rank_one_minimizer(depth):
    """d_0 = 1, balanced rank-one minimizer W_k = s u_k u_{k-1}^T, s = |w*|^(1/N): the dense Hessian's top
    eigenvalue is exactly 2 N a |w*|^(2-2/N). With |w*| = 0.3 this is below seed 004's printed 2 N a, which
    assumes ||w*|| = 1: hence the factor in `sharpness_bounds`."""
    rng = np.random.default_rng(depth)
    x = rng.standard_normal((10, 1))
    y = 0.3 * x  # w* = 0.3 exactly
    a, _, wn = _numpy_constants(x, y)
    us = (
        [np.ones(1)]
        + [v / np.linalg.norm(v) for v in rng.standard_normal((depth - 1, 3))]
        + [np.ones(1)]
    )
    s = wn ** (1 / depth)
    layers = [s * np.outer(us[k + 1], us[k]) for k in range(depth)]
    assert abs(explicit_product(layers)[0, 0] - 0.3) < 1e-14
    ref = dense_eigs(layers, "identity", x, y)[-1]
    np.testing.assert_allclose(ref, 2 * depth * a * wn ** (2 - 2 / depth), rtol=1e-10)
    assert ref < 2 * depth * a  # the printed bound (||w*|| = 1) would fail here
    loss = Regression(x, y)
    np.testing.assert_allclose(float(sharpness_bounds(loss, depth)[0]), ref, rtol=1e-10)


@functools.partial(jax.jit, static_argnames=("steps",))
def _descend(x, y, stacked, eta, steps):
    """Plain gradient descent on the explicit loss, vmapped over inits, until the gradient norm is < 1e-11."""

    def run(layers):
        grad = jax.grad(lambda ls: regression_value(ls, x, y))
        gnorm = lambda ls: jnp.sqrt(sum(jnp.sum(g**2) for g in grad(ls)))

        def body(state):
            i, ls = state
            return i + 1, [w - eta * g for w, g in zip(ls, grad(ls))]

        _, ls = jax.lax.while_loop(
            lambda s: (s[0] < steps) & (gnorm(s[1]) > 1e-11), body, (0, layers)
        )
        return ls, gnorm(ls)

    return jax.vmap(run)(stacked)


@pytest.mark.parametrize("depth", [2, 4])
def test_sharpness_bounds_at_gradient_descent_minimizers(depth):
    """Random regression (n = 20, d = 3, d_N = 1): minimizers reached by gradient descent (small step: close
    to the flow) from small inits satisfy 2 N a ||w*||^(2-2/N) <= sharpness <= 8 N Lambda ||w*||^(2-2/N), with
    nearly rank-one, aligned layers (seed 004); from larger, unbalanced inits the lower bound still holds (it
    holds at every minimizer). The sharpness itself: the dense Hessian, and `sharpness` at depth 4."""
    loss = Regression.random(jr.PRNGKey(depth), 20, 3, noise=0.5)
    x, y = np.asarray(loss.inputs), np.asarray(loss.targets)
    a, lam, wn = _numpy_constants(x, y)
    lower, upper = 2 * depth * a * wn ** (2 - 2 / depth), 8 * depth * lam * wn ** (2 - 2 / depth)
    widths = (3,) + (4,) * (depth - 1) + (1,)
    inits = [rand_layers(10 + i, widths, scale=0.1) for i in range(3)] + [
        rand_layers(20 + i, widths, scale=1.5) for i in range(2)
    ]
    stacked = [jnp.stack([jnp.asarray(ls[k]) for ls in inits]) for k in range(depth)]
    layers, gnorm = _descend(jnp.asarray(x), jnp.asarray(y), stacked, 0.01, 100_000)
    assert np.all(np.asarray(gnorm) <= 1e-11), np.asarray(gnorm)
    w_star = np.linalg.lstsq(x, y[:, 0], rcond=None)[0]
    refs = []
    for i in range(5):
        one = [np.asarray(w[i]) for w in layers]
        np.testing.assert_allclose(explicit_product(one)[0], w_star, atol=1e-8)  # a minimizer
        refs.append(dense_eigs(one, "identity", x, y)[-1])
        assert refs[i] >= lower * (1 - 1e-9), (i, refs[i], lower)
        net = dlnjax.DLN(one)
        assert float(distance_to_minimizer(net, w_star[None])) <= 1e-8
        if i < 3:  # small initialization
            assert refs[i] <= upper, (i, refs[i], upper)
            assert np.all(np.asarray(rank_one_ratio(net)) > 0.95)  # nearly rank one
            assert np.all(np.asarray(alignment(net)) > 0.999)  # aligned singular vectors
    if depth == 4:
        nets = jax.vmap(lambda ls: dlnjax.DLN(ls))(layers)
        top, _ = batched_sharpness(jax.tree_util.tree_map(lambda t: jnp.stack([t] * 5), loss), nets)
        np.testing.assert_allclose(np.asarray(top), refs, rtol=1e-6)


# --------------------------------------------------------------------------------------------------
# Ranks
# --------------------------------------------------------------------------------------------------


def _numpy_effective_rank(X):
    s = np.linalg.svd(np.asarray(X), compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return np.exp(-np.sum(p * np.log(p)))


@pytest.mark.parametrize("is_complex", [False, True])
def test_effective_rank_against_numpy(is_complex):
    rng = np.random.default_rng(int(is_complex))
    mats = [rand_matrix(rng, shape, is_complex) for shape in [(5, 3), (3, 7), (6, 6)]]
    for X in mats:
        np.testing.assert_allclose(float(effective_rank(X)), _numpy_effective_rank(X), rtol=1e-12)
    batch = np.stack([rand_matrix(rng, (4, 5), is_complex) for _ in range(3)])
    np.testing.assert_allclose(
        np.asarray(effective_rank(batch)), [_numpy_effective_rank(b) for b in batch], rtol=1e-12
    )


@pytest.mark.parametrize("r", [1, 2, 4])
def test_ranks_of_exact_rank_r_matrices(r):
    """U_r diag(c) V_r^T (equal singular values): effective rank r; numerical rank r; and with unequal ones
    the effective rank lies strictly between 1 and r (r > 1)."""
    rng = np.random.default_rng(r)
    U = np.linalg.qr(rng.standard_normal((7, r)))[0]
    V = np.linalg.qr(rng.standard_normal((5, r)))[0]
    X = 2.5 * U @ V.T
    np.testing.assert_allclose(float(effective_rank(X)), r, rtol=1e-12)
    assert int(numerical_rank(X)) == r
    Y = U @ np.diag(np.linspace(1, 3, r)) @ V.T
    assert int(numerical_rank(Y)) == r
    if r > 1:
        assert 1 < float(effective_rank(Y)) < r


def test_ranks_at_zero_are_zero_without_nan():
    Z = jnp.zeros((3, 4))
    assert float(effective_rank(Z)) == 0.0 and int(numerical_rank(Z)) == 0
    g = jax.grad(lambda X: effective_rank(X + 0.0))(jnp.diag(jnp.array([1.0, 0.0, 0.0]))[:, :3])
    assert np.all(np.isfinite(np.asarray(g)))
    assert int(numerical_rank(np.diag([1.0, 1e-3, 1e-20]), rtol=1e-6)) == 2
    with pytest.raises(ValueError):
        diag.effective_rank(jnp.ones(3))


# --------------------------------------------------------------------------------------------------
# Seed 002: layer norms and neuron balance
# --------------------------------------------------------------------------------------------------


def _numpy_balance(layers):
    norms = np.array([np.sum(np.abs(w) ** 2) for w in layers])
    neurons = [
        np.sum(np.abs(layers[k]) ** 2, axis=1) - np.sum(np.abs(layers[k + 1]) ** 2, axis=0)
        for k in range(len(layers) - 1)
    ]
    return norms, norms[1:] - norms[:-1], neurons


@pytest.mark.parametrize("widths", [(3, 4), (3, 4, 2), NONUNIFORM, (5, 1, 4, 3)], ids=str)
@pytest.mark.parametrize("is_complex", [False, True])
def test_layer_norms_and_balances_against_numpy(widths, is_complex):
    layers = rand_layers(3, widths, is_complex=is_complex)
    net = dlnjax.DLN(layers)
    norms, diffs, neurons = _numpy_balance(layers)
    np.testing.assert_allclose(layer_norms(net), norms, rtol=1e-13)
    np.testing.assert_allclose(layer_norm_differences(net), diffs, rtol=1e-12, atol=1e-13)
    nb = np.asarray(neuron_balance(net))
    n = len(widths) - 1
    assert nb.shape == ((n - 1, max(widths[1:-1])) if n > 1 else (0, widths[1]))
    for k in range(n - 1):
        np.testing.assert_allclose(nb[k, : widths[k + 1]], neurons[k], rtol=1e-12, atol=1e-13)
        assert np.all(nb[k, widths[k + 1] :] == 0)  # padding
    # batched networks (leading axis)
    batch = stack_nets([net, dlnjax.DLN([2 * w for w in layers])])
    np.testing.assert_allclose(layer_norms(batch), np.stack([norms, 4 * norms]), rtol=1e-13)
    np.testing.assert_allclose(np.asarray(neuron_balance(batch))[1], 4 * nb, rtol=1e-12, atol=1e-13)


def _regression():
    x = jr.normal(jr.PRNGKey(11), (6, 3))
    y = jr.normal(jr.PRNGKey(12), (6, 2))
    return Regression(x, y)


@pytest.mark.parametrize("activation", [None, "relu"])
def test_balances_conserved_by_gradient_flow(activation):
    """Along dlnjax.simulate(Gradient(loss)) (rtol 1e-10): layer-norm differences and neuron balances stay
    constant (Theorems 2.1-2.2 of seed 002) while the layer norms themselves move. (Over [0, 0.3] the ReLU
    net crosses a few kinks, i.e. activation patterns change, without stalling the adaptive solver.)"""
    loss = _regression()
    net0 = dlnjax.DLN(rand_layers(4, (3, 4, 6, 5, 2), scale=1.2)).with_activation(activation)
    traj = dlnjax.simulate(
        flows.Gradient(loss), net0, jnp.linspace(0.0, 0.3, 4), rtol=1e-10, atol=1e-12
    )
    assert bool(traj.success)
    norms = np.asarray(layer_norms(traj.ys))
    diffs = np.asarray(layer_norm_differences(traj.ys))
    nb = np.asarray(neuron_balance(traj.ys))
    assert norms.shape == (4, 4) and nb.shape == (4, 3, 6)
    assert np.max(np.abs(norms - norms[0])) > 0.05  # the flow moved the weights
    assert np.max(np.abs(diffs - diffs[0])) <= 1e-8
    assert np.max(np.abs(nb - nb[0])) <= 1e-8
    # the same quantities of the saved states, with numpy
    for t in (0, -1):
        layers = [np.asarray(w[t]) for w in traj.ys.layers]
        _, d_ref, n_ref = _numpy_balance(layers)
        np.testing.assert_allclose(diffs[t], d_ref, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("activation", [None, "relu"])
def test_gradient_descent_changes_balances_by_eta_squared(activation):
    """One gradient-descent step W - eta g changes ||W_{k+1}||^2 - ||W_k||^2 by exactly
    eta^2 (||g_{k+1}||^2 - ||g_k||^2) (the O(eta) term vanishes by homogeneity; seed 002): drift ratio 4 per halving."""
    loss = _regression()
    phi = (lambda h: h) if activation is None else jax.nn.relu
    layers = [jnp.asarray(w) for w in rand_layers(8, (3, 5, 4, 2), scale=1.2)]
    x, y = loss.inputs, loss.targets
    g = jax.grad(lambda ls: regression_value(ls, x, y, phi))(layers)
    net = dlnjax.DLN(layers, activation=activation)
    drifts, ndrifts = [], []
    for eta in (0.1, 0.05, 0.025):
        stepped = dlnjax.DLN([w - eta * gk for w, gk in zip(layers, g)], activation=activation)
        d = np.asarray(layer_norm_differences(stepped) - layer_norm_differences(net))
        nd = np.asarray(neuron_balance(stepped) - neuron_balance(net))
        gn = np.array([np.sum(np.asarray(gk) ** 2) for gk in g])
        np.testing.assert_allclose(d, eta**2 * (gn[1:] - gn[:-1]), rtol=1e-8, atol=1e-14)
        drifts.append(np.max(np.abs(d)))
        ndrifts.append(np.max(np.abs(nd)))
    for dr in (drifts, ndrifts):
        assert dr[0] > 1e-6
        np.testing.assert_allclose([dr[0] / dr[1], dr[1] / dr[2]], [4.0, 4.0], rtol=1e-6)


# --------------------------------------------------------------------------------------------------
# Seed 004: alignment, rank one, distance to the minimizer
# --------------------------------------------------------------------------------------------------


def _rot(theta):
    return np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


def test_alignment_and_rank_one_on_constructed_examples():
    """W_1 = diag(3, 1) (u_1 = e_1); W_2 = diag(2, 1) R(theta)^T (v_1 = R(theta) e_1): alignment |cos theta|.
    W_3 = 5 a b^T with b = u_1(W_2) = e_1: alignment 1, rank-one ratio 1. sigma_1^2/||W||^2 of diag(3, 1) = 9/10."""
    theta = 0.7
    W1 = np.diag([3.0, 1.0])
    W2 = np.diag([2.0, 1.0]) @ _rot(theta).T
    a = np.array([0.6, 0.8])
    W3 = 5.0 * np.outer(a, [1.0, 0.0])
    net = dlnjax.DLN([W1, W2, W3])
    np.testing.assert_allclose(alignment(net), [abs(np.cos(theta)), 1.0], rtol=1e-12)
    np.testing.assert_allclose(rank_one_ratio(net), [0.9, 0.8, 1.0], rtol=1e-12)
    for signs in [(-1, 1, 1), (1, -1, 1), (1, 1, -1), (-1, -1, -1)]:  # sign flips of layers
        flipped = dlnjax.DLN([s * w for s, w in zip(signs, [W1, W2, W3])])
        np.testing.assert_allclose(alignment(flipped), alignment(net), rtol=1e-12)
        np.testing.assert_allclose(rank_one_ratio(flipped), rank_one_ratio(net), rtol=1e-12)
    # rank-r layers with equal singular values: ratio 1/r; a zero layer: 0
    r3 = 2.0 * np.linalg.qr(np.random.default_rng(0).standard_normal((4, 3)))[0].T  # 3 x 4, rank 3
    net = dlnjax.DLN([r3, np.zeros((2, 3))])
    np.testing.assert_allclose(rank_one_ratio(net), [1 / 3, 0.0], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("widths", [(3, 4, 2), NONUNIFORM, (5, 1, 4, 3)], ids=str)
@pytest.mark.parametrize("is_complex", [False, True])
def test_alignment_and_rank_one_against_numpy(widths, is_complex):
    layers = rand_layers(12, widths, is_complex=is_complex)
    net = dlnjax.DLN(layers)
    svds = [np.linalg.svd(w) for w in layers]
    ref_align = [
        abs(np.vdot(svds[k][0][:, 0], np.conj(svds[k + 1][2][0]))) for k in range(len(layers) - 1)
    ]
    ref_ratio = [s[1][0] ** 2 / np.sum(s[1] ** 2) for s in svds]
    np.testing.assert_allclose(alignment(net), ref_align, rtol=1e-10)
    np.testing.assert_allclose(rank_one_ratio(net), ref_ratio, rtol=1e-12)
    assert alignment(dlnjax.DLN(layers[:1])).shape == (0,)


def test_distance_to_minimizer():
    layers = rand_layers(2, NONUNIFORM)
    X_star = np.random.default_rng(2).standard_normal((2, 3))
    net = dlnjax.DLN(layers)
    np.testing.assert_allclose(
        float(distance_to_minimizer(net, X_star)),
        np.linalg.norm(explicit_product(layers) - X_star),
        rtol=1e-12,
    )
    with pytest.raises(ValueError, match="shape"):
        diag.distance_to_minimizer(net, X_star.T)
    with pytest.raises(ValueError, match="linear"):
        diag.distance_to_minimizer(net.with_activation("relu"), X_star)


# --------------------------------------------------------------------------------------------------
# Lanczos (dlnjax._lanczos, behind sharpness)
# --------------------------------------------------------------------------------------------------


def _sym(rng, p, rank=None):
    B = rng.standard_normal((p, p if rank is None else rank))
    return B @ B.T - 0.5 * p * np.eye(p) if rank is None else B @ B.T


def test_lanczos_top_matches_dense_eigenvalue_and_error_bound():
    from dlnjax.internal import lanczos_top

    rng = np.random.default_rng(0)
    p = 12
    H = _sym(rng, p)  # indefinite
    fresh = jnp.asarray(rng.standard_normal((p + 1, p)))
    top, err = jax.jit(lambda f: lanczos_top(lambda v: jnp.asarray(H) @ v, f))(fresh)
    np.testing.assert_allclose(float(top), np.linalg.eigvalsh(H)[-1], rtol=1e-12)
    assert float(err) < 1e-8
    few, err_few = lanczos_top(lambda v: jnp.asarray(H) @ v, fresh[:4])  # 3 steps: a lower bound
    lam = np.linalg.eigvalsh(H)
    assert float(few) <= lam[-1] + 1e-12
    assert np.min(np.abs(lam - float(few))) <= float(err_few) * (1 + 1e-8) + 1e-12


def test_lanczos_top_restarts_on_a_low_rank_operator_and_respects_a_subspace():
    from dlnjax.internal import lanczos_top

    rng = np.random.default_rng(1)
    p = 10
    H = _sym(rng, p, rank=2)  # breakdown after two steps: restarts, never NaN
    fresh = jnp.asarray(rng.standard_normal((p + 1, p)))
    top, _ = lanczos_top(lambda v: jnp.asarray(H) @ v, fresh)
    np.testing.assert_allclose(float(top), np.linalg.eigvalsh(H)[-1], rtol=1e-12)
    # On the subspace of the first 4 coordinates: M H M restricted there, negative definite, so the top
    # eigenvalue is negative and the spent steps (the subspace has 4 dimensions of 10) add no spurious 0.
    M = np.zeros(p)
    M[:4] = 1.0
    Hneg = -_sym(rng, p, rank=p) - np.eye(p)
    Hm = jnp.asarray(Hneg * M[:, None] * M[None, :])
    top, _ = lanczos_top(lambda v: Hm @ v, fresh * M)
    expected = np.linalg.eigvalsh(Hneg[:4, :4])[-1]
    assert expected < 0
    np.testing.assert_allclose(float(top), expected, rtol=1e-10)
