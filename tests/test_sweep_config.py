"""Sweep configs: every malformed config is refused before anything runs, naming the field (CLI exit 2)."""

import copy
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tomllib

from dlnjax._cli import main
from dlnjax.sweep import ConfigError, load_config, parse_config, plan

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.toml"))

BASE = {
    "name": "t",
    "task": {"loss": "regression", "n": 10, "d_in": 3, "d_out": 1},
    "network": {"width": 3},
    "dynamics": {"method": "train", "learning_rate": 0.05, "steps": 20},
    "record": {"quantities": ["loss"], "every": 5},
    "grid": {"depth": [2, 3], "seed": [0, 1]},
}


def with_(path: str, value):
    """BASE with the dotted ``path`` set to ``value`` (``...`` deletes it)."""
    data = copy.deepcopy(BASE)
    *head, last = path.split(".")
    node = data
    for key in head:
        node = node.setdefault(key, {})
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return data


BAD = [
    # (description, config, field named)
    ("unknown top-level field", with_("colour", "red"), "colour"),
    ("unknown field in a section", with_("dynamics.lr", 0.1), "dynamics.lr"),
    ("unknown section field in task", with_("task.samples", 5), "task.samples"),
    ("unknown grid axis", with_("grid.temperature", [1.0]), "grid.temperature"),
    ("wrong type: string for an int", with_("dynamics.steps", "100"), "dynamics.steps"),
    ("wrong type: float for an int", with_("dynamics.steps", 10.5), "dynamics.steps"),
    (
        "wrong type: bool for a number",
        with_("dynamics.learning_rate", True),
        "dynamics.learning_rate",
    ),
    ("wrong type in a grid list", with_("grid.depth", [2, "three"]), "grid.depth[1]"),
    ("grid axis not a list", with_("grid.seed", 3), "grid.seed"),
    ("empty grid axis", with_("grid.depth", []), "grid.depth"),
    ("empty grid", with_("grid", {}), "grid"),
    ("no grid", with_("grid", ...), "grid"),
    ("no task", with_("task", ...), "task"),
    ("no loss", with_("task.loss", ...), "task.loss"),
    ("unknown loss", with_("task.loss", "hinge"), "task.loss"),
    ("no dynamics", with_("dynamics", ...), "dynamics"),
    ("unknown method", with_("dynamics.method", "sde"), "dynamics.method"),
    ("negative learning rate", with_("dynamics.learning_rate", -0.1), "dynamics.learning_rate"),
    ("negative grid value", with_("grid.depth", [2, -1]), "grid.depth"),
    ("zero batch size", with_("batch_size", 0), "batch_size"),
    ("unknown dtype", with_("dtype", "float16"), "dtype"),
    ("unknown padding", with_("padding", "sometimes"), "padding"),
    ("unknown quantity", with_("record.quantities", ["loss", "accuracy"]), "record.quantities"),
    ("repeated quantity", with_("record.quantities", ["loss", "loss"]), "record.quantities"),
    ("repeated grid value", with_("grid.seed", [0, 0]), "grid.seed"),
    ("every does not divide steps", with_("record.every", 7), "record.every"),
    ("flow option with train", with_("dynamics.t1", 3.0), "dynamics.t1"),
    (
        "learning rate swept for a flow",
        {
            **with_("dynamics", {"method": "flow"}),
            "record": {"quantities": ["loss"]},
            "grid": {"learning_rate": [0.1]},
        },
        "grid.learning_rate",
    ),
    ("beta without langevin", with_("grid.beta", [1.0, 2.0]), "grid.beta"),
    ("widths that do not fit the task", with_("grid", {"widths": [[3, 4, 2]]}), "grid.widths"),
    ("widths and depth together", with_("grid.widths", [[3, 4, 1]]), "grid.widths"),
    (
        "rank above the shape",
        {
            **BASE,
            "task": {"loss": "matrix_completion", "shape": [4, 3], "rank": 5, "n_observed": 6},
        },
        "task.rank",
    ),
    (
        "too many observed entries",
        {
            **BASE,
            "task": {"loss": "matrix_completion", "shape": [4, 3], "rank": 1, "n_observed": 13},
        },
        "task.n_observed",
    ),
    (
        "test error of a nonlinear net",
        {
            **with_("network.activation", "relu"),
            "record": {"quantities": ["test_error"], "every": 5},
        },
        "record.quantities",
    ),
    (
        "langevin without dt0",
        {
            **with_("dynamics", {"method": "flow", "flow": "langevin", "kappa": 1.0}),
            "record": {"quantities": ["loss"]},
        },
        "dynamics.dt0",
    ),
    (
        "layer quantity of the end-to-end flow",
        {
            **with_("dynamics", {"method": "flow", "flow": "end_to_end"}),
            "record": {"quantities": ["balancedness"]},
        },
        "record.quantities",
    ),
    (
        "padding impossible for a fiber flow",
        {
            **with_("dynamics", {"method": "flow", "flow": "kirwan_ness"}),
            "record": {"quantities": ["balancedness"]},
            "padding": "pad",
        },
        "padding",
    ),
    (
        "times not increasing",
        {
            **with_("dynamics", {"method": "flow"}),
            "record": {"quantities": ["loss"], "times": [0.0, 2.0, 1.0]},
        },
        "record.times",
    ),
    ("residual init of a rectangular net", with_("network.init", "residual"), "network.init"),
]


@pytest.mark.parametrize("what, data, field", BAD, ids=[b[0] for b in BAD])
def test_bad_config_is_refused_naming_the_field(what, data, field):
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    assert exc.value.field == field, (what, str(exc.value))
    assert repr(field) in str(exc.value)


def test_good_base_config_and_defaults():
    cfg = parse_config(BASE)
    assert cfg.n_runs == 4 and cfg.grid_shape == (2, 2)
    assert [p for p in cfg.points()] == [
        {"depth": 2, "seed": 0},
        {"depth": 2, "seed": 1},
        {"depth": 3, "seed": 0},
        {"depth": 3, "seed": 1},
    ]
    s = cfg.run_settings({"depth": 3, "seed": 1})
    assert s["widths"] == (3, 3, 3, 1) and s["seed"] == 1 and s["learning_rate"] == 0.05
    assert cfg.data["batch_size"] == 64 and cfg.data["padding"] == "auto"  # defaults filled in


def test_plan_batches_cover_every_run_once():
    cfg = parse_config(
        {
            **BASE,
            "batch_size": 3,
            "padding": "per-shape",
            "grid": {"depth": [2, 3, 4], "seed": [0, 1, 2, 3]},
        }
    )
    p = plan(cfg, n_devices=2)
    assert p.batch_size == 4  # rounded up to a multiple of the device count
    index = p.grid_index
    real = index[index >= 0]
    assert sorted(real.tolist()) == list(range(12))
    for _, _start, runs in p.batches:
        widths = {p.settings[i]["widths"] for i in runs}
        assert len(widths) == 1  # per-shape: one shape per batch


def write(tmp_path, text, name="c.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_malformed_toml_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, "name = \n[task"))
    assert exc.value.field == "config" and "TOML" in str(exc.value)


@pytest.mark.parametrize(
    "text, field",
    [
        (
            "[task]\nloss='regression'\n[dynamics]\nmethod='train'\nsteps='x'\n[grid]\nseed=[0]\n",
            "dynamics.steps",
        ),
        ("[task]\nloss='regression'\n[dynamics]\nmethod='train'\n[grid]\nseed=[]\n", "grid.seed"),
        (
            "[task]\nloss='regression'\nbogus=1\n[dynamics]\nmethod='train'\n[grid]\nseed=[0]\n",
            "task.bogus",
        ),
    ],
    ids=["wrong type", "empty grid", "unknown field"],
)
def test_cli_exits_2_naming_the_field(tmp_path, capsys, text, field):
    code = main(["sweep", str(write(tmp_path, text)), "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert repr(field) in err and "error" in err
    assert not (tmp_path / "out" / "results.zarr").exists()  # nothing ran


def test_cli_missing_config_file_exits_2(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.toml" in capsys.readouterr().err


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_valid(path):
    cfg = load_config(path)
    assert cfg.n_runs >= 1
    assert tomllib.loads(path.read_text())  # and the TOML round-trips


def test_auto_padding_weighs_compiles_against_extra_work():
    from dlnjax.sweep import choose_padding

    grid = {"depth": [2, 3, 4], "width": [3, 4]}
    short = parse_config({**BASE, "grid": grid})
    shapes = [short.run_settings(p)["widths"] for p in short.points()]
    assert choose_padding(short, shapes) == "pad"  # 6 shapes, 20 steps: compiling dominates
    long = parse_config(
        {
            **BASE,
            "grid": grid,
            "dynamics": {"method": "train", "steps": 10**8},
            "record": {"every": 10**7},
        }
    )
    assert choose_padding(long, shapes) == "per-shape"  # the padded work dominates
    one = parse_config({**BASE, "grid": {"seed": [0, 1]}})
    assert choose_padding(one, [one.run_settings(p)["widths"] for p in one.points()]) == "per-shape"
    fiber = parse_config(
        {
            **BASE,
            "dynamics": {"method": "flow", "flow": "kirwan_ness"},
            "record": {"quantities": ["balancedness"]},
            "grid": grid,
        }
    )
    assert choose_padding(fiber, shapes) == "per-shape"  # padding would change the fiber geometry
    assert plan(fiber).padding == "per-shape" and plan(short).padding == "pad"


def test_choices_are_registries_that_validation_draws_from():
    """Every allowed value of a choice field is a key of its registry, and the flow rules follow each entry's
    capabilities (a stochastic flow builds an `AbstractStochasticFlow`), not its name."""
    from dlnjax import flows
    from dlnjax.internal import QUANTITIES as TABLE
    from dlnjax.sweep import _config

    assert set(_config.TASKS) == {
        "regression",
        "matrix_completion",
        "matrix_sensing",
        "factorization",
    }
    assert _config.QUANTITIES == tuple(TABLE)
    assert _config._DYNAMICS["flow"].choices == tuple(_config.FLOWS)
    assert _config._DYNAMICS["optimizer"].choices == tuple(_config.OPTIMIZERS)
    assert _config._NETWORK["init"].choices == tuple(_config.INITS)
    assert _config._NETWORK["activation"].choices == tuple(_config.ACTIVATIONS)
    assert [n for n, c in _config.FLOWS.items() if c.stochastic] == ["langevin"]
    loss = lambda X: jnp.sum(X**2)
    for name, choice in _config.FLOWS.items():
        made = choice.make(loss, 0.5, 2.0, 3, {"p": 1.5})
        assert isinstance(made, choice.kinds)
        assert isinstance(made, flows.AbstractStochasticFlow) == choice.stochastic, name
        if hasattr(made, "throw"):  # a failed fiber solve flags its run, never the batch
            assert made.throw is False, name
    assert {
        n
        for n, c in _config.FLOWS.items()
        if hasattr(c.make(loss, 0.5, 2.0, 3, {"p": 1.5}), "throw")
    } == {
        "fiber_l2",
        "fiber_schatten",
    }
    # a bad choice names its field, for each registry
    for path, bad in (
        ("dynamics.optimizer", "lbfgs"),
        ("network.init", "zeros"),
        ("network.activation", "tanh"),
    ):
        with pytest.raises(ConfigError) as exc:
            parse_config(with_(path, bad))
        assert exc.value.field == path and repr(bad) in str(exc.value)
    flow = copy.deepcopy(BASE)
    flow["dynamics"] = {"method": "flow", "flow": "gradient"}
    flow["record"] = {"quantities": ["loss"]}
    flow["dynamics"]["flow"] = "heat"
    with pytest.raises(ConfigError) as exc:
        parse_config(flow)
    assert exc.value.field == "dynamics.flow"
    # the registry's factories are what a run uses
    cfg = parse_config(with_("dynamics.optimizer", "nesterov"))
    opt = _config.OPTIMIZERS["nesterov"](cfg.dynamics, 0.1)
    params = {"w": jnp.ones(2)}
    ref = optax.sgd(0.1, momentum=cfg.dynamics["momentum"], nesterov=True)
    g = {"w": jnp.asarray([1.0, -2.0])}
    u1, _ = opt.update(g, opt.init(params))
    u2, _ = ref.update(g, ref.init(params))
    np.testing.assert_array_equal(np.asarray(u1["w"]), np.asarray(u2["w"]))
