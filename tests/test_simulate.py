"""`dlnjax.simulate`: batching, differentiation, failure reporting, saved times, statistics, bad input."""

from __future__ import annotations

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    NONUNIFORM,
    explicit_moments,
    explicit_product,
    rand_layers,
    rand_matrix,
    real_inner,
    sq_norm,
)

import dlnjax
from dlnjax import flows

RTOL, ATOL = 1e-10, 1e-12
TS = jnp.linspace(0.0, 1.5, 7)


def _kn_solve(layers):
    return dlnjax.simulate(flows.KirwanNess(), dlnjax.DLN(layers), TS, rtol=RTOL, atol=ATOL)


_kn_single = eqx.filter_jit(_kn_solve)
_kn_batch = eqx.filter_jit(jax.vmap(_kn_solve))


@pytest.fixture(scope="module")
def kn_runs():
    layer_sets = [rand_layers(100 + i, NONUNIFORM, False, scale=1.2) for i in range(3)]
    batch = _kn_batch([np.stack(ws) for ws in zip(*layer_sets)])
    singles = [_kn_single(ls) for ls in layer_sets]
    return dict(layer_sets=layer_sets, batch=batch, singles=singles)


def test_vmap_over_initial_conditions_equals_unbatched_runs(kn_runs):
    batch, singles = kn_runs["batch"], kn_runs["singles"]
    assert np.asarray(batch.success).shape == (3,)
    assert bool(np.all(np.asarray(batch.success)))
    for i, s in enumerate(singles):
        assert bool(s.success)
        for a, b in zip(batch.ys.arrays(), s.ys.arrays()):
            a, b = np.asarray(a[i]), np.asarray(b)
            assert a.shape == b.shape
            assert np.max(np.abs(a - b)) <= 1e-13 * np.max(np.abs(b))
        # same adaptive steps, element by element
        assert int(batch.stats["num_steps"][i]) == int(s.stats["num_steps"])
        np.testing.assert_array_equal(np.asarray(batch.ts[i]), np.asarray(TS))
    # the batch members really are different trajectories
    assert np.max(np.abs(np.asarray(batch.ys.first[0]) - np.asarray(batch.ys.first[1]))) > 0.1


def test_good_run_success_ts_indexing_and_stats(kn_runs):
    s, W0 = kn_runs["singles"][0], kn_runs["layer_sets"][0]
    assert bool(s.success)
    assert s.result == dfx.RESULTS.successful
    np.testing.assert_array_equal(
        np.asarray(s.ts), np.asarray(TS)
    )  # saved at exactly the requested times
    # ys: a DLN with a leading time axis; traj[i] is the state at ts[i]
    assert s.ys.widths == NONUNIFORM
    for k, w in enumerate(s.ys.layers):
        assert w.shape == (len(TS), NONUNIFORM[k + 1], NONUNIFORM[k])
    first = s[0]
    assert isinstance(first, dlnjax.DLN)
    for a, b in zip(first.layers, W0):
        np.testing.assert_array_equal(np.asarray(a), b)  # the initial state is saved unchanged
    last = s[-1]
    for a, b in zip(last.layers, s.ys.layers):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b[-1]))
    # the state moved, and along Kirwan-Ness X is constant
    assert max(np.max(np.abs(np.asarray(a) - b)) for a, b in zip(last.layers, W0)) > 1e-2
    X0 = explicit_product(W0)
    assert np.max(
        np.abs(explicit_product([np.asarray(w) for w in last.layers]) - X0)
    ) <= 1e-9 * np.max(np.abs(X0))
    # statistics
    for key in ("num_steps", "num_accepted_steps", "num_rejected_steps"):
        assert key in s.stats
    n = int(s.stats["num_steps"])
    assert 0 < n < 65536
    assert int(s.stats["num_accepted_steps"]) + int(s.stats["num_rejected_steps"]) == n
    assert int(s.stats["num_accepted_steps"]) >= 1


# --------------------------------------------------------------------------------------------------
# Differentiation through simulate
# --------------------------------------------------------------------------------------------------

GRAD_WIDTHS = (3, 4, 2)
T_TARGET = rand_matrix(np.random.default_rng(110), (2, 3), False)


def _quadratic(X):
    return 0.5 * jnp.sum((X - T_TARGET) ** 2)


def _outcome_fixed(net):
    """sum of the entries of X(t = 1) under the gradient flow of a quadratic loss, fixed-step Tsit5."""
    traj = dlnjax.simulate(
        flows.Gradient(_quadratic),
        net,
        jnp.array([0.0, 1.0]),
        dt0=0.02,
        stepsize_controller=dfx.ConstantStepSize(),
    )
    return jnp.sum(dlnjax.end_to_end(traj[-1]))


def _outcome_adaptive(net):
    traj = dlnjax.simulate(
        flows.Gradient(_quadratic), net, jnp.array([0.0, 1.0]), rtol=RTOL, atol=ATOL
    )
    return jnp.sum(dlnjax.end_to_end(traj[-1]))


def _directional_fd(f, W, V, h):
    plus = dlnjax.DLN([w + h * v for w, v in zip(W, V)])
    minus = dlnjax.DLN([w - h * v for w, v in zip(W, V)])
    return (float(f(plus)) - float(f(minus))) / (2 * h)


def test_grad_through_fixed_step_simulate_matches_finite_differences():
    """With a fixed step the solve is a smooth map of y0; reverse mode differentiates it exactly."""
    W = rand_layers(111, GRAD_WIDTHS, False)
    f = jax.jit(_outcome_fixed)
    g = jax.jit(jax.grad(_outcome_fixed))(dlnjax.DLN(W))
    assert isinstance(g, dlnjax.DLN) and g.widths == GRAD_WIDTHS
    rng = np.random.default_rng(112)
    for _ in range(2):
        V = [rng.standard_normal(w.shape) for w in W]
        fd = _directional_fd(f, W, V, 1e-5)  # O(h^2) ~ 1e-10 truncation, ~1e-11 round-off
        ad = real_inner(g.layers, V)
        assert abs(ad - fd) <= 1e-8 * max(abs(fd), 1.0), (ad, fd)
    assert sq_norm(g.layers) > 1e-2  # a non-trivial gradient


def test_grad_through_adaptive_simulate_matches_finite_differences():
    """Adaptive steps (rtol 1e-10): step-size choices are piecewise constant in y0, so central differences
    carry an O(tol / h) error; with h = 1e-3 that is ~1e-7, plus O(h^2) ~ 1e-6 truncation."""
    W = rand_layers(113, GRAD_WIDTHS, False)
    f = jax.jit(_outcome_adaptive)
    g = jax.jit(jax.grad(_outcome_adaptive))(dlnjax.DLN(W))
    V = [np.random.default_rng(114).standard_normal(w.shape) for w in W]
    fd = _directional_fd(f, W, V, 1e-3)
    ad = real_inner(g.layers, V)
    assert abs(ad - fd) <= 1e-5 * max(abs(fd), 1.0), (ad, fd)


# --------------------------------------------------------------------------------------------------
# Failure reporting
# --------------------------------------------------------------------------------------------------


def test_blow_up_is_reported_not_silently_returned():
    """Gradient flow of E(X) = -sum X^4 (unbounded below) explodes in finite time (between t = 2 and 5 here)."""
    W = rand_layers(120, (2, 3, 2), False, scale=0.5)
    ts = jnp.array([0.0, 0.5, 1.0, 2.0, 5.0, 20.0])
    traj = dlnjax.simulate(
        flows.Gradient(lambda X: -jnp.sum(X**4)),
        dlnjax.DLN(W),
        ts,
        rtol=RTOL,
        atol=ATOL,
        max_steps=2048,
    )
    assert not bool(traj.success)
    assert traj.result != dfx.RESULTS.successful
    assert int(traj.stats["num_accepted_steps"]) > 0  # it did integrate up to the blow-up
    states = [[np.asarray(w[i]) for w in traj.ys.layers] for i in range(len(ts))]
    finite = [all(np.all(np.isfinite(w)) for w in layers) for layers in states]
    assert finite[:4] == [True] * 4
    # past the blow-up the saved values are not finite numbers passed off as a solution
    assert finite[4:] == [False, False]
    # before it, the saved states are genuine: G conserved, sum X^4 increasing
    G0 = explicit_moments(W)
    quart = []
    for layers in states[:4]:
        G = explicit_moments(layers)
        assert max(np.max(np.abs(a - b)) for a, b in zip(G, G0)) <= 1e-9 * max(
            np.max(np.abs(g)) for g in G0
        )
        quart.append(float(np.sum(explicit_product(layers) ** 4)))
    assert all(q1 > q0 for q0, q1 in zip(quart, quart[1:])), quart


def test_max_steps_too_small_is_reported():
    W = rand_layers(121, NONUNIFORM, False, scale=1.2)
    traj = dlnjax.simulate(flows.KirwanNess(), dlnjax.DLN(W), TS, rtol=RTOL, atol=ATOL, max_steps=4)
    assert not bool(traj.success)
    assert traj.result == dfx.RESULTS.max_steps_reached
    assert int(traj.stats["num_steps"]) == 4
    assert not all(np.all(np.isfinite(np.asarray(a[-1]))) for a in traj.ys.arrays())


def test_complex_gradient_flow_with_steep_start_succeeds():
    widths = (2, 4, 3, 3)
    W = rand_layers(75, widths, True, scale=1.5)
    T = rand_matrix(np.random.default_rng(76), (3, 2), True)
    loss = lambda X: jnp.sum(jnp.abs(X - T) ** 4)
    traj = dlnjax.simulate(
        flows.Gradient(loss),
        dlnjax.DLN(W),
        jnp.array([0.0, 0.5]),
        rtol=RTOL,
        atol=ATOL,
        max_steps=4096,
    )
    assert bool(traj.success)
    G0 = explicit_moments(W)
    G1 = explicit_moments([np.asarray(w) for w in traj[-1].layers])
    assert max(np.max(np.abs(a - b)) for a, b in zip(G0, G1)) <= 1e-9 * max(
        np.max(np.abs(g)) for g in G0
    )


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_rejects_non_finite_initial_condition(bad):
    net = dlnjax.DLN(rand_layers(130, (2, 3, 2), False))
    first = net.first.at[0, 0].set(bad)
    y0 = net.replace_arrays(first, net.inner, net.last)  # replace_arrays does not check
    with pytest.raises(RuntimeError, match="initial condition y0 holds non-finite values"):
        dlnjax.simulate(flows.KirwanNess(), y0, TS)
    # any pytree, not only a DLN
    with pytest.raises(RuntimeError, match="initial condition y0 holds non-finite values"):
        dlnjax.simulate(lambda t, y, args: -y, {"a": jnp.array([1.0, bad])}, TS)


@pytest.mark.parametrize("ts", [jnp.array([0.0]), jnp.array([]), jnp.zeros((2, 2)), jnp.array(1.0)])
def test_rejects_bad_ts_shape(ts):
    net = dlnjax.DLN(rand_layers(131, (2, 3, 2), False))
    with pytest.raises(ValueError, match="ts must be a 1-D array of at least two save times"):
        dlnjax.simulate(flows.KirwanNess(), net, ts)


@pytest.mark.parametrize("ts", [jnp.array([0.0, 1.0, 0.5]), jnp.array([0.0, jnp.nan])])
def test_rejects_decreasing_or_non_finite_ts(ts):
    net = dlnjax.DLN(rand_layers(132, (2, 3, 2), False))
    with pytest.raises(RuntimeError, match="ts must be finite and non-decreasing"):
        dlnjax.simulate(flows.KirwanNess(), net, ts)
