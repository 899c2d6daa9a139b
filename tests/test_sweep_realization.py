"""``dlnjax sweep`` with the realization task (linear state-space models): swept runs equal `dlnjax.systems.fit`
called directly, a resumed sweep equals an uninterrupted one, diverged runs are flagged, the moment law of the
regularized flow holds in the swept results, malformed configs are rejected naming the field."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from test_sweep import toml_text

from dlnjax import systems as S
from dlnjax.sweep import ConfigError, load, load_config, parse_config, run
from dlnjax.sweep._realization import realization_plan

TASK = {"loss": "realization", "order": 3, "m": 2, "p": 1, "markov": 8, "seed": 1, "margin": 0.3}
TRAIN = {
    "name": "ssm",
    "batch_size": 2,
    "task": TASK,
    "model": {"scale": 0.5, "order": 2},
    "dynamics": {"method": "train", "learning_rate": 0.05, "steps": 40, "kappa": 0.1},
    "record": {"every": 10},
    "grid": {"seed": [4, 5], "learning_rate": [0.05, 20.0]},
}


@jax.jit
def direct_fit(seed, kappa, lr):
    """One run computed with `dlnjax.systems` directly (not through the sweep code)."""
    target = S.random_system(jr.PRNGKey(1), 3, 2, 1, discrete=True, margin=0.3)
    loss = S.MarkovLoss(S.markov_parameters(target, 8))
    sys0 = S.random_system(jr.split(jr.PRNGKey(seed))[0], 2, 2, 1, stable=False)
    sys0 = S.LinearSystem(0.5 * sys0.A, 0.5 * sys0.B, 0.5 * sys0.C)
    return S.fit(loss, sys0, optax.sgd(lr), 40, every=10, kappa=kappa)


def test_swept_runs_equal_direct_fit_and_resume(tmp_path):
    cfg = parse_config(TRAIN)
    ds = run(cfg, tmp_path / "a", progress=False)
    assert ds.attrs["trajectory_dim"] == "step" and list(ds["step"].values) == [0, 10, 20, 30, 40]
    for seed in (4, 5):
        res = direct_fit(seed, 0.1, 0.05)
        at = ds.sel(seed=seed, learning_rate=0.05)
        mu = np.sqrt(np.sum(np.asarray(res.history["moment"]) ** 2, axis=(-1, -2)))
        np.testing.assert_allclose(at["loss"], res.history["loss"], rtol=1e-10)
        np.testing.assert_allclose(at["moment_norm"], mu, rtol=1e-10)
        assert bool(at["success"]) and not bool(at["diverged"]) and int(at["diverged_at"]) == -1
        # learning rate 20 blows up: flagged, NaN from the first bad record on, never passed off as a result
        bad = ds.sel(seed=seed, learning_rate=20.0)
        direct = np.asarray(direct_fit(seed, 0.1, 20.0).history["loss"])
        first = int(np.argmax(~np.isfinite(direct) | (direct > 1e6)))
        assert first > 0 and bool(bad["diverged"]) and not bool(bad["success"])
        assert int(bad["diverged_at"]) == 10 * first
        assert np.all(np.isnan(bad["loss"].values[first:]))
        np.testing.assert_allclose(bad["loss"].values[:first], direct[:first], rtol=1e-10)
    # resume: forget a finished batch, rerun; the results are the uninterrupted ones
    (tmp_path / "a" / "batches" / "000001.done").unlink()
    again = run(cfg, tmp_path / "a", progress=False)
    for q in ("loss", "moment_norm", "diverged_at"):
        np.testing.assert_array_equal(again[q].values, ds[q].values)
    with pytest.raises(ConfigError, match="already holds a different sweep"):
        run(parse_config({**TRAIN, "grid": {"order": [2]}}), tmp_path / "a", progress=False)


def test_one_program_per_model_order():
    cfg = parse_config({**TRAIN, "batch_size": 3, "grid": {"order": [2, 3], "kappa": [0.0, 0.1]}})
    plan = realization_plan(cfg)
    assert [(p.shape, p.runs) for p in plan.programs] == [((2,), (0, 1)), ((3,), (2, 3))]
    assert plan.batch_size == 2 and plan.grid_index.tolist() == [0, 1, 2, 3]
    assert [s["order"] for s in plan.settings] == [2, 2, 3, 3]
    assert [s["kappa"] for s in plan.settings] == [0.0, 0.1, 0.0, 0.1]


def test_flow_moment_law_in_swept_results(tmp_path):
    """The regularized flow of a loss of the transfer function: ``mu(t) = exp(-2 kappa t) mu(0)``, conserved at 0."""
    cfg = {
        "name": "flow",
        "task": TASK,
        "dynamics": {"method": "flow", "t1": 1.0, "rtol": 1e-10, "atol": 1e-12},
        "record": {"saves": 5},
        "grid": {"kappa": [0.0, 0.5]},
    }
    path = tmp_path / "flow.toml"
    path.write_text(toml_text(cfg))
    ds = run(load_config(path), tmp_path / "f", progress=False)
    assert bool(ds["success"].all())
    t = ds["time"].values
    mu = ds["moment_norm"].values
    assert mu[0, 0] > 0.1
    np.testing.assert_allclose(mu[0], mu[0, 0], rtol=1e-7)
    np.testing.assert_allclose(mu[1], np.exp(-2 * 0.5 * t) * mu[1, 0], rtol=1e-7)
    assert np.all(np.diff(ds["loss"].values[0]) < 0)  # the gradient flow decreases the loss
    # the initial state is the direct one: scale 0.5 (the default) times random_system from split(PRNGKey(0))[0]
    sys0 = S.random_system(jr.split(jr.PRNGKey(0))[0], 3, 2, 1, stable=False)
    mu0 = S.moment_map(S.LinearSystem(0.5 * sys0.A, 0.5 * sys0.B, 0.5 * sys0.C))
    np.testing.assert_allclose(mu[:, 0], float(jnp.linalg.norm(mu0)), rtol=1e-12)
    assert load(tmp_path / "f").attrs["task"] == "realization"


BAD = [
    ({"grid": {"width": [2]}}, "grid.width", "unknown grid axis of the realization task"),
    ({"grid": {"order": [2, 2]}}, "grid.order", "distinct values"),
    ({"grid": {"order": [0]}}, "grid.order", "must be positive"),
    ({"model": {"widths": [2, 2]}}, "model.widths", "unknown field"),
    ({"task": {**TASK, "margin": 1.5}}, "task.margin", r"must lie in \(0, 1\)"),
    ({"task": {**TASK, "markov": "8"}}, "task.markov", "expected an integer"),
    ({"dynamics": {"method": "train", "t1": 2.0}}, "dynamics.t1", "is a flow option"),
    ({"dynamics": {"method": "flow"}}, "grid.learning_rate", "sweeps a learning rate"),
    ({"dynamics": {"method": "train", "steps": 35}}, "record.every", "must divide"),
    ({"record": {"quantities": ["sharpness"]}}, "record.quantities", "is not one of"),
    ({"padding": "pad"}, "padding", "unknown field"),
    (
        {
            "dynamics": {"method": "flow", "t1": 2.0},
            "record": {"times": [0.0, 1.0]},
            "grid": {"seed": [0]},
        },
        "record.times",
        "must equal dynamics.t1",
    ),
]


@pytest.mark.parametrize("change,field,message", BAD)
def test_malformed_realization_configs_are_rejected(change, field, message):
    with pytest.raises(ConfigError, match=f"{field}.*{message}"):
        parse_config({**TRAIN, **change})


def test_a_misspelled_task_names_the_realization_task():
    bad = {k: v for k, v in TRAIN.items() if k != "model"}
    with pytest.raises(ConfigError, match="task.loss.*'realisation' is not one of.*'realization'"):
        parse_config({**bad, "task": {**TASK, "loss": "realisation"}})
