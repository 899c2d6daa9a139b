"""`dlnjax.train` (dlnjax/_train.py): Optax training as one compiled scan, under vmap, with divergence flags.

Every reference run is a plain Python loop of gradient steps whose gradient is ``jax.grad`` of an explicit
loss of an explicit list of layers (`conftest.explicit_product`, or an explicit ReLU forward pass), never
a dlnjax function. Float64 throughout (conftest switches x64 on).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import (
    NONUNIFORM,
    assert_close,
    explicit_moments,
    explicit_product,
    padding_max_abs,
    rand_layers,
)

import dlnjax
from dlnjax._train import METRICS, train
from dlnjax.losses import Factorization, Regression

WIDTHS = (3, 4, 4, 2)  # depth 3, small: every test compiles a few scans


def _data(seed=0, n=12, d_in=3, d_out=2, noise=0.3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d_in))
    w = rng.standard_normal((d_out, d_in))
    w /= np.linalg.norm(w)
    y = x @ w.T + noise * rng.standard_normal((n, d_out))
    return x, y, w


def _explicit_loss(layers, x, y, activation=None):
    """(1/n) sum_i ||f(x_i) - y_i||^2 with f the explicit product, or an explicit ReLU network."""
    if activation is None:
        pred = x @ explicit_product(layers).T
    else:
        h = x
        for w in layers[:-1]:
            h = activation(h @ w.T)
        pred = h @ layers[-1].T
    return jnp.sum((pred - y) ** 2) / x.shape[0]


def _reference_run(layers, step_fn, steps):
    """The iterates W_0, ..., W_steps of ``layers <- step_fn(layers)`` (a Python loop)."""
    out = [[jnp.asarray(w) for w in layers]]
    for _ in range(steps):
        out.append(step_fn(out[-1]))
    return out


def _gd(objective, lr):
    grad = jax.jit(jax.grad(objective))

    def step(layers):
        return [w - lr * g for w, g in zip(layers, grad(layers))]

    return step


def _stack(trees):
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def _index(tree, i):
    return jax.tree_util.tree_map(lambda a: a[i], tree)


# --------------------------------------------------------------------------------------------------
# Agreement with hand-written loops
# --------------------------------------------------------------------------------------------------


def test_sgd_equals_hand_written_gradient_descent():
    x, y, w = _data()
    loss = Regression(x, y, truth=w)
    layers = rand_layers(1, WIDTHS, scale=1.0)
    lr, steps, every = 0.05, 30, 10
    opt = optax.sgd(lr)
    fns = {
        "X": dlnjax.end_to_end,
        "pair": lambda n: (dlnjax.squared_norm(n), n.first),
    }  # user metrics: pytrees
    res = train(loss, dlnjax.DLN(layers), opt, steps, every=every, metrics=METRICS, metric_fns=fns)
    objective = lambda ls: _explicit_loss(ls, x, y)
    ref = _reference_run(layers, _gd(objective, lr), steps)
    assert_close(res.net.layers, ref[-1], 1e-12, "final layers")
    np.testing.assert_array_equal(res.steps, np.arange(0, steps + 1, every))
    assert not bool(res.diverged) and int(res.diverged_at) == -1
    rec = [ref[t] for t in range(0, steps + 1, every)]
    grads = [jax.grad(objective)(ls) for ls in rec]
    expect = {
        "loss": [objective(ls) for ls in rec],
        "objective": [objective(ls) for ls in rec],
        "test_error": [np.linalg.norm(explicit_product(ls) - w) / np.linalg.norm(w) for ls in rec],
        "squared_norm": [sum(np.sum(np.asarray(a) ** 2) for a in ls) for ls in rec],
        "grad_norm": [np.sqrt(sum(np.sum(np.asarray(a) ** 2) for a in g)) for g in grads],
        "layer_norms": [[np.linalg.norm(a) ** 2 for a in ls] for ls in rec],
        "balancedness": [
            np.sqrt(sum(np.sum(np.asarray(G) ** 2) for G in explicit_moments(ls)))
            / sum(np.sum(np.asarray(a) ** 2) for a in ls)
            for ls in rec
        ],
    }
    assert set(res.history) == set(METRICS) | {"X", "pair"}
    for name, values in expect.items():
        assert res.history[name].shape[0] == len(rec), name
        assert_close(res.history[name], np.asarray(values, float), 1e-11, name)
    assert float(res.history["loss"][-1]) < 0.5 * float(res.history["loss"][0])
    assert res.history["X"].shape == (len(rec), 2, 3) and res.history["pair"][1].shape == (
        len(rec),
        4,
        3,
    )
    assert_close(
        res.history["X"], np.stack([explicit_product(ls) for ls in rec]), 1e-12, "user metric X"
    )
    assert_close(
        res.history["pair"][0], np.asarray(expect["squared_norm"]), 1e-12, "user metric pair[0]"
    )
    # recording every step: the history every 10 steps is its subsample, the final network the same
    full = train(loss, dlnjax.DLN(layers), opt, steps, every=1, metrics=METRICS, metric_fns=fns)
    np.testing.assert_array_equal(full.steps, np.arange(steps + 1))
    assert_close(
        full.history["loss"], np.array([objective(ls) for ls in ref]), 1e-11, "loss at every step"
    )
    for name in res.history:
        assert_close(
            jax.tree_util.tree_map(lambda a: a[::every], full.history[name]),
            res.history[name],
            1e-13,
            name,
        )
    assert_close(full.net.arrays(), res.net.arrays(), 1e-13, "final network")


def test_weight_decay_matches_hand_written():
    """kappa adds kappa/2 ||W||^2: the regularized loss (4.1) of seed 001, here with momentum SGD."""
    x, y, _ = _data(1)
    loss = Regression(x, y)
    layers = rand_layers(2, WIDTHS, scale=1.0)
    lr, kappa, steps = 0.05, 0.3, 20
    res = train(
        loss, dlnjax.DLN(layers), optax.sgd(lr), steps, kappa=kappa, metrics=("loss", "objective")
    )
    objective = lambda ls: _explicit_loss(ls, x, y) + 0.5 * kappa * sum(jnp.sum(a**2) for a in ls)
    ref = _reference_run(layers, _gd(objective, lr), steps)
    assert_close(res.net.layers, ref[-1], 1e-12, "final layers")
    assert_close(
        res.history["objective"], np.array([objective(ls) for ls in ref]), 1e-12, "objective"
    )
    assert_close(
        res.history["loss"], np.array([_explicit_loss(ls, x, y) for ls in ref]), 1e-12, "loss"
    )


def test_relu_network_matches_hand_written_and_decreases():
    x, y, _ = _data(2, n=20)
    loss = Regression(x, y)
    layers = rand_layers(3, (3, 6, 5, 2), scale=1.5)
    lr, steps = 0.05, 40
    net0 = dlnjax.DLN(layers, activation="relu")
    res = train(
        loss, net0, optax.sgd(lr), steps, every=10, metrics=("loss", "grad_norm", "balancedness")
    )
    objective = lambda ls: _explicit_loss(ls, x, y, activation=lambda h: jnp.maximum(h, 0.0))
    ref = _reference_run(layers, _gd(objective, lr), steps)
    assert res.net.activation.name == "relu"
    assert_close(res.net.layers, ref[-1], 1e-12, "final layers")
    assert_close(
        res.history["loss"],
        np.array([objective(ref[t]) for t in range(0, steps + 1, 10)]),
        1e-12,
        "loss",
    )
    assert float(res.history["loss"][-1]) < 0.8 * float(res.history["loss"][0])


def test_sharpness_as_user_metric():
    sharpness = dlnjax.sharpness
    x, y, _ = _data(6, d_out=1)
    loss = Regression(x, y)
    net0 = dlnjax.DLN(rand_layers(6, (3, 3, 3, 1)))
    res = train(
        loss,
        net0,
        optax.sgd(0.05),
        10,
        every=5,
        metric_fns={"sharpness": lambda n: sharpness(loss, n, iterations=12)},
    )
    assert res.history["sharpness"].shape == (3,)
    assert_close(
        res.history["sharpness"][-1],
        sharpness(loss, res.net, iterations=12),
        1e-10,
        "sharpness at the end",
    )


# --------------------------------------------------------------------------------------------------
# vmap: batched runs equal the same runs one by one
# --------------------------------------------------------------------------------------------------


def _assert_same_runs(batched, singles, rtol=1e-11):
    for i, single in enumerate(singles):
        one = _index(batched, i)
        assert bool(one.diverged) == bool(single.diverged) and int(one.diverged_at) == int(
            single.diverged_at
        ), i
        assert_close(one.net.arrays(), single.net.arrays(), rtol, f"run {i}: network")
        for name in single.history:
            a, b = np.asarray(one.history[name]), np.asarray(single.history[name])
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
            assert_close(np.nan_to_num(a), np.nan_to_num(b), rtol, f"run {i}: {name}")


def test_vmap_over_initial_networks():
    x, y, _ = _data(7)
    loss = Regression(x, y)
    nets = [dlnjax.DLN(rand_layers(10 + i, WIDTHS, scale=1.2)) for i in range(3)]
    opt = optax.adam(0.02)
    run = lambda n: train(loss, n, opt, 20, every=5, metrics=("loss", "grad_norm"))
    _assert_same_runs(jax.vmap(run)(_stack(nets)), [run(n) for n in nets])


def test_vmap_over_learning_rates_with_one_divergent_run():
    x, y, _ = _data(8)
    loss = Regression(x, y)
    net0 = dlnjax.DLN(rand_layers(8, WIDTHS, scale=1.2))
    lrs = [0.02, 3.0]
    run = lambda lr: train(loss, net0, optax.sgd(lr), 30, every=5, metrics=("loss", "squared_norm"))
    batched = jax.vmap(run)(jnp.asarray(lrs))
    assert np.asarray(batched.diverged).tolist() == [False, True]
    assert (
        np.asarray(batched.diverged_at).tolist()[0] == -1
        and np.asarray(batched.diverged_at).tolist()[1] > 0
    )
    assert np.all(
        np.isfinite(np.asarray(batched.history["loss"][0]))
    )  # small step: no divergence, finite history
    assert float(batched.history["loss"][0, -1]) < float(batched.history["loss"][0, 0])
    _assert_same_runs(batched, [run(lr) for lr in lrs])


def test_vmap_over_initialization_scales():
    x, y, _ = _data(9, d_out=1)
    loss = Regression(x, y)
    key = jax.random.PRNGKey(3)
    widths = (3, 3, 3, 3, 1)
    opt = optax.sgd(0.05)
    run = lambda s: train(
        loss, dlnjax.gaussian(key, widths, s), opt, 20, every=10, metrics=("loss", "balancedness")
    )
    scales = [0.3, 0.6, 1.0]
    _assert_same_runs(jax.vmap(run)(jnp.asarray(scales)), [run(s) for s in scales])


# --------------------------------------------------------------------------------------------------
# Divergence
# --------------------------------------------------------------------------------------------------


BIG_STEP = optax.sgd(
    2.0
)  # shared by the divergence tests: one compiled program (the threshold is traced)


def test_divergence_is_flagged_and_frozen():
    x, y, _ = _data(11)
    loss = Regression(x, y)
    layers = rand_layers(11, WIDTHS, scale=1.2)
    lr, steps, every, thr = 2.0, 40, 2, 1e3
    res = train(
        loss,
        dlnjax.DLN(layers),
        BIG_STEP,
        steps,
        every=every,
        metrics=("loss", "layer_norms"),
        divergence_threshold=thr,
    )
    objective = lambda ls: _explicit_loss(ls, x, y)
    ref = _reference_run(layers, _gd(objective, lr), steps)
    values = np.array([float(objective(ls)) for ls in ref])
    bad = ~np.isfinite(values) | (values > thr * values[0])
    s = int(np.argmax(bad))
    assert bad.any() and s > 0
    assert bool(res.diverged) and int(res.diverged_at) == s
    # frozen at the last accepted iterate W_{s-1}, which is finite
    assert all(np.all(np.isfinite(np.asarray(a))) for a in res.net.arrays())
    assert_close(res.net.layers, ref[s - 1], 1e-10, "frozen network")
    rec = np.arange(0, steps + 1, every)
    loss_hist = np.asarray(res.history["loss"])
    assert np.all(np.isnan(loss_hist[rec >= s])) and np.all(
        np.isnan(np.asarray(res.history["layer_norms"])[rec >= s])
    )
    assert_close(loss_hist[rec < s], values[rec[rec < s]], 1e-9, "history before divergence")


def test_divergence_without_threshold_waits_for_non_finite_values():
    x, y, _ = _data(11)
    loss = Regression(x, y)
    net0 = dlnjax.DLN(rand_layers(11, WIDTHS, scale=1.2))
    run = lambda thr: train(
        loss, net0, BIG_STEP, 40, every=2, metrics=("loss", "layer_norms"), divergence_threshold=thr
    )
    rel, off = run(1e3), run(None)
    assert bool(off.diverged) and int(off.diverged_at) > int(rel.diverged_at)
    assert all(np.all(np.isfinite(np.asarray(a))) for a in off.net.arrays())
    assert np.isfinite(float(dlnjax.network_loss(loss, off.net)))


# --------------------------------------------------------------------------------------------------
# Padding of non-uniform widths
# --------------------------------------------------------------------------------------------------


def test_adam_and_noise_keep_padding_zero():
    rng = np.random.default_rng(12)
    loss = Factorization(rng.standard_normal((NONUNIFORM[-1], NONUNIFORM[0])))
    net0 = dlnjax.DLN(rand_layers(12, NONUNIFORM))
    assert padding_max_abs(net0) == 0.0
    opt = optax.chain(optax.add_noise(0.01, 0.0, 0), optax.adamw(0.02, weight_decay=0.1))
    res = train(loss, net0, opt, 30, every=10, kappa=0.01)
    assert padding_max_abs(res.net) == 0.0
    assert res.net.widths == NONUNIFORM
    assert float(res.history["loss"][-1]) < float(res.history["loss"][0])


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=0), "steps must be >= 1"),
        (dict(steps=2.0), "steps must be a Python int"),
        (dict(every=0), "every must be >= 1"),
        (dict(steps=10, every=3), "every must divide steps"),
        (dict(metrics=("loss", "curvature")), "unknown metric 'curvature'"),
        (dict(metrics=("test_error",)), "'test_error' needs a loss with a ground truth"),
        (dict(metric_fns={"loss": lambda n: 0.0}), "both built in"),
        (dict(divergence_threshold=-1.0), "divergence_threshold must be positive"),
    ],
)
def test_bad_input(kwargs, match):
    loss = Regression(*_data(0)[:2])  # no truth
    net0 = dlnjax.DLN(rand_layers(0, WIDTHS))
    args = dict(steps=10)
    args.update(kwargs)
    steps = args.pop("steps")
    with pytest.raises(ValueError, match=match):
        train(loss, net0, optax.sgd(0.1), steps, **args)


def test_bad_input_nonlinear_test_error_and_types():
    x, y, w = _data(0)
    net0 = dlnjax.DLN(rand_layers(0, WIDTHS), activation="relu")
    with pytest.raises(ValueError, match="no end-to-end matrix"):
        train(Regression(x, y, truth=w), net0, optax.sgd(0.1), 5, metrics=("test_error",))
    with pytest.raises(ValueError, match="net0 must be a dlnjax.DLN"):
        train(Regression(x, y), list(net0.layers), optax.sgd(0.1), 5)
    with pytest.raises(ValueError, match="optax.GradientTransformation"):
        train(Regression(x, y), net0, 0.1, 5)


# --------------------------------------------------------------------------------------------------
# One table of recorded quantities (dlnjax._quantities), shared with the sweeps
# --------------------------------------------------------------------------------------------------


def test_train_metrics_and_sweep_quantities_come_from_one_table():
    """`train`'s built-in metrics and the sweeps' quantity functions are the entries of one table: on the same
    run they agree to round-off (train reuses its step's gradient for ``grad_norm``, the sweep recomputes it),
    and on a padded run the sweep's live-masked quantities equal the real run's metrics."""
    from dlnjax.internal import QUANTITIES
    from dlnjax.sweep._quantities import quantity_fns

    assert METRICS == tuple(name for name, q in QUANTITIES.items() if q.train)
    x, y, w = _data()
    loss = Regression(x, y, truth=w)
    net0 = dlnjax.DLN(rand_layers(2, WIDTHS, scale=0.7))
    kappa, opt = 0.1, optax.sgd(0.05)
    fns = quantity_fns(METRICS, loss, kappa=kappa, n_layers=len(WIDTHS) - 1)
    res = train(loss, net0, opt, 6, every=3, metrics=(), kappa=kappa, metric_fns=fns)
    hist = jax.device_get(res.history)
    ref = train(loss, net0, opt, 6, every=3, metrics=METRICS, kappa=kappa)
    for name in METRICS:
        np.testing.assert_allclose(
            np.asarray(ref.history[name]), hist[name], rtol=1e-12, atol=1e-15, err_msg=name
        )
    # the table's grad_norm against an explicit gradient of the explicit objective
    layers = [jnp.asarray(a) for a in res.net.layers]
    objective = lambda ls: _explicit_loss(ls, x, y) + 0.5 * kappa * sum(jnp.sum(a**2) for a in ls)
    g = jax.grad(objective)(layers)
    explicit = np.sqrt(sum(float(jnp.sum(a**2)) for a in g))
    np.testing.assert_allclose(hist["grad_norm"][-1], explicit, rtol=1e-12)

    # padded: the sweep's quantities with live are those of the real run
    padded, live = dlnjax.pad(net0, 5, 6)
    fns_live = quantity_fns(METRICS, loss, kappa=kappa, live=live, n_layers=5)
    pres = train(
        loss, padded, opt, 6, every=3, metrics=(), kappa=kappa, metric_fns=fns_live, mask=live
    )
    for name in METRICS:
        got = np.asarray(pres.history[name])
        want = np.asarray(ref.history[name])
        if name == "layer_norms":  # NaN past the real depth, up to n_layers
            assert np.all(np.isnan(got[:, want.shape[1] :]))
            got = got[:, : want.shape[1]]
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14, err_msg=name)
