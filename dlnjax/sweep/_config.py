"""Sweep configs: a TOML file, validated field by field before anything runs.

A config has the sections ``[task]`` (the loss and how to draw its data), ``[network]`` (widths,
initialization, activation), ``[dynamics]`` (``method = "train"`` with an Optax optimizer, or
``method = "flow"`` with a flow of `dlnjax.flows` and `dlnjax.simulate` options), ``[record]`` (the
quantities and when to record them) and ``[grid]`` (the swept axes, each a list of values), plus a few
top-level options (``name``, ``dtype``, ``batch_size``, ``padding``). `load_config` checks every field
(unknown names, types, ranges, and the combinations that cannot run) and raises `ConfigError` naming
the field; the CLI turns that into exit code 2. See ``examples/`` for complete configs.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["ConfigError", "SweepConfig", "load_config", "parse_config", "GRID_AXES", "QUANTITIES"]


class ConfigError(ValueError):
    """A sweep config that cannot run; ``field`` names the offending entry (e.g. ``"grid.depth"``)."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"config field {field!r}: {message}")


_REQUIRED = object()


@dataclasses.dataclass(frozen=True)
class _Field:
    kind: str  # "int", "float", "str", "bool", "int_list", "int_pair"
    default: Any = _REQUIRED
    choices: tuple | None = None
    check: Callable[[Any], str | None] | None = None  # returns an error message or None


def _positive(x):
    return None if x > 0 else f"must be positive; got {x!r}"


def _nonnegative(x):
    return None if x >= 0 else f"must be >= 0; got {x!r}"


def _at_least(n):
    return lambda x: None if x >= n else f"must be >= {n}; got {x!r}"


def _typename(value) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "float",
        str: "string",
        list: "array",
        dict: "table",
    }.get(type(value), type(value).__name__)


def _coerce(field: str, kind: str, value):
    """Check the TOML type of ``value`` (ints are accepted where floats are)."""
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(field, f"expected an integer, got {_typename(value)} {value!r}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(field, f"expected a number, got {_typename(value)} {value!r}")
        if not math.isfinite(value):
            raise ConfigError(field, f"must be finite; got {value!r}")
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(field, f"expected a string, got {_typename(value)} {value!r}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(field, f"expected true or false, got {_typename(value)} {value!r}")
        return value
    if kind == "int_list":
        if not isinstance(value, list) or not value:
            raise ConfigError(
                field, f"expected a non-empty array of integers, got {_typename(value)} {value!r}"
            )
        return [_coerce(f"{field}[{i}]", "int", v) for i, v in enumerate(value)]
    if kind == "float_list":
        if not isinstance(value, list) or not value:
            raise ConfigError(
                field, f"expected a non-empty array of numbers, got {_typename(value)} {value!r}"
            )
        return [_coerce(f"{field}[{i}]", "float", v) for i, v in enumerate(value)]
    if kind == "str_list":
        if not isinstance(value, list) or not value:
            raise ConfigError(
                field, f"expected a non-empty array of strings, got {_typename(value)} {value!r}"
            )
        return [_coerce(f"{field}[{i}]", "str", v) for i, v in enumerate(value)]
    raise AssertionError(kind)


def _section(name: str, table, schema: Mapping[str, _Field]) -> dict:
    if not isinstance(table, dict):
        raise ConfigError(name, f"expected a table, got {_typename(table)}")
    for key in table:
        if key not in schema:
            raise ConfigError(
                f"{name}.{key}" if name else key,
                f"unknown field; the fields of [{name or 'top level'}] are {sorted(schema)}",
            )
    out = {}
    for key, spec in schema.items():
        where = f"{name}.{key}" if name else key
        if key not in table:
            if spec.default is _REQUIRED:
                raise ConfigError(where, "missing (required)")
            out[key] = copy.deepcopy(spec.default)
            continue
        value = _coerce(where, spec.kind, table[key])
        if spec.choices is not None:
            items = value if isinstance(value, list) else [value]
            for v in items:
                if v not in spec.choices:
                    raise ConfigError(where, f"{v!r} is not one of {list(spec.choices)}")
        if spec.check is not None:
            items = value if spec.kind.endswith("_list") else [value]
            for v in items:
                msg = spec.check(v)
                if msg:
                    raise ConfigError(where, msg)
        out[key] = value
    return out


# --------------------------------------------------------------------------------------------------
# The schema
# --------------------------------------------------------------------------------------------------

_TOP = {
    "name": _Field("str", "sweep"),
    "dtype": _Field("str", "float64", choices=("float32", "float64")),
    "batch_size": _Field("int", 64, check=_positive),
    "padding": _Field("str", "auto", choices=("auto", "pad", "per-shape")),
}

_SHAPE = _Field("int_list", _REQUIRED, check=_positive)
TASKS = {
    "regression": {
        "n": _Field("int", 50, check=_positive),
        "d_in": _Field("int", 5, check=_positive),
        "d_out": _Field("int", 1, check=_positive),
        "noise": _Field("float", 1.0, check=_nonnegative),
    },
    "matrix_completion": {
        "shape": _SHAPE,
        "rank": _Field("int", _REQUIRED, check=_positive),
        "n_observed": _Field("int", _REQUIRED, check=_positive),
        "norm": _Field("float", 1.0, check=_positive),
    },
    "matrix_sensing": {
        "shape": _SHAPE,
        "rank": _Field("int", _REQUIRED, check=_positive),
        "n_measurements": _Field("int", _REQUIRED, check=_positive),
        "norm": _Field("float", 1.0, check=_positive),
    },
    "factorization": {
        "shape": _SHAPE,
        "rank": _Field("int", _REQUIRED, check=_positive),
        "norm": _Field("float", 1.0, check=_positive),
    },
}
"""The losses of `dlnjax.losses` by config name, with the fields of their ``.random`` data."""

INITS = ("gaussian", "orthogonal", "residual")
_NETWORK = {
    "depth": _Field("int", 2, check=_positive),
    "width": _Field("int", 5, check=_positive),
    "widths": _Field("int_list", None, check=_positive),
    "init": _Field("str", "gaussian", choices=INITS),
    "scale": _Field("float", 0.1, check=_nonnegative),
    "activation": _Field("str", "identity", choices=("identity", "relu", "leaky_relu", "gelu")),
    "seed": _Field(
        "int", 0, check=_nonnegative
    ),  # the initialization seed when grid.seed is not swept
}

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad")
FLOWS = (
    "gradient",
    "regularized",
    "langevin",
    "fiber_l2",
    "fiber_schatten",
    "kirwan_ness",
    "end_to_end",
)
_DYNAMICS = {
    "method": _Field("str", _REQUIRED, choices=("train", "flow")),
    # train
    "optimizer": _Field("str", "sgd", choices=OPTIMIZERS),
    "learning_rate": _Field("float", 0.01, check=_positive),
    "momentum": _Field(
        "float", 0.9, check=lambda x: None if 0 <= x < 1 else f"must lie in [0, 1); got {x!r}"
    ),
    "steps": _Field("int", 1000, check=_positive),
    "divergence_threshold": _Field("float", 1e6, check=_positive),
    # flow
    "flow": _Field("str", "gradient", choices=FLOWS),
    "t1": _Field("float", 10.0, check=_positive),
    "rtol": _Field("float", 1e-6, check=_positive),
    "atol": _Field("float", 1e-8, check=_positive),
    "dt0": _Field(
        "float", 0.0, check=_nonnegative
    ),  # 0: adaptive (deterministic flows); required for langevin
    "max_steps": _Field("int", 65536, check=_positive),
    "p": _Field("float", 1.0, check=_positive),  # Schatten exponent
    "progress": _Field("bool", False),
    # both
    "kappa": _Field("float", 0.0, check=_nonnegative),
    "beta": _Field("float", 1.0, check=_positive),
}
_TRAIN_ONLY = ("optimizer", "learning_rate", "momentum", "steps", "divergence_threshold")
_FLOW_ONLY = ("flow", "t1", "rtol", "atol", "dt0", "max_steps", "p", "progress", "beta")

QUANTITIES = (
    "loss",
    "objective",
    "test_error",
    "balancedness",
    "squared_norm",
    "layer_norms",
    "grad_norm",
    "sharpness",
    "effective_rank",
    "numerical_rank",
    "singular_values",
)
"""The quantities a sweep can record (see `dlnjax.sweep` for their definitions)."""

_RECORD = {
    "quantities": _Field("str_list", ["loss"], choices=QUANTITIES),
    "every": _Field(
        "int", 0, check=_nonnegative
    ),  # train: record every this many steps (0: 20 records)
    "times": _Field(
        "float_list", None, check=_nonnegative
    ),  # flow: save times (default: `saves` points)
    "saves": _Field("int", 21, check=_at_least(2)),
    "sharpness_iterations": _Field("int", 20, check=_positive),
}

GRID_AXES = {
    "depth": _Field("int_list", check=_positive),
    "width": _Field("int_list", check=_positive),
    "widths": None,  # a list of int lists, checked by hand
    "init": _Field("str_list", choices=INITS),
    "scale": _Field("float_list", check=_nonnegative),
    "learning_rate": _Field("float_list", check=_positive),
    "kappa": _Field("float_list", check=_nonnegative),
    "beta": _Field("float_list", check=_positive),
    "seed": _Field("int_list", check=_nonnegative),
}
"""The axes a grid may sweep, each a non-empty list of values."""

_LOSSLESS_FLOWS = (
    "fiber_l2",
    "fiber_schatten",
    "kirwan_ness",
)  # flows on the fiber: no loss, X constant
_LAYER_QUANTITIES = ("balancedness", "squared_norm", "layer_norms")
_LOSS_QUANTITIES = ("loss", "objective", "test_error", "grad_norm", "sharpness")


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """A validated sweep config.

    **Attributes:** `data` (the normalized config: every section with its defaults filled in; what is
    stored with the results and compared on resume), `source` (the TOML text), and the sections
    `task`, `network`, `dynamics`, `record`, `grid` (an ordered dict ``axis -> values``) as dicts.
    """

    data: dict
    source: str

    @property
    def task(self) -> dict:
        return self.data["task"]

    @property
    def network(self) -> dict:
        return self.data["network"]

    @property
    def dynamics(self) -> dict:
        return self.data["dynamics"]

    @property
    def record(self) -> dict:
        return self.data["record"]

    @property
    def grid(self) -> dict:
        return self.data["grid"]

    @property
    def is_train(self) -> bool:
        return self.dynamics["method"] == "train"

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.grid.values())

    @property
    def n_runs(self) -> int:
        return math.prod(self.grid_shape)

    def points(self):
        """The grid points in C order (the last axis fastest): dicts ``axis -> value``, defaults filled in."""
        axes = list(self.grid)
        for values in itertools.product(*self.grid.values()):
            yield dict(zip(axes, values))

    def run_settings(self, point: Mapping) -> dict:
        """Everything that defines one run: network widths, init, scale, seed and the dynamics' scalars."""
        net, dyn = self.network, self.dynamics
        d_in, d_out = task_dims(self.task)
        if "widths" in point:
            widths = tuple(point["widths"])
        elif net["widths"] is not None and "depth" not in point and "width" not in point:
            widths = tuple(net["widths"])
        else:
            depth = point.get("depth", net["depth"])
            width = point.get("width", net["width"])
            widths = (d_in,) + (width,) * (depth - 1) + (d_out,)
        return {
            "widths": widths,
            "init": point.get("init", net["init"]),
            "scale": float(point.get("scale", net["scale"])),
            "seed": int(point.get("seed", net["seed"])),
            "learning_rate": float(point.get("learning_rate", dyn["learning_rate"])),
            "kappa": float(point.get("kappa", dyn["kappa"])),
            "beta": float(point.get("beta", dyn["beta"])),
        }

    def to_json(self) -> str:
        return json.dumps(self.data, sort_keys=True)


def task_dims(task: Mapping) -> tuple[int, int]:
    """``(d_0, d_N)``: the input and output dimensions that the task fixes."""
    if task["loss"] == "regression":
        return task["d_in"], task["d_out"]
    d_out, d_in = task["shape"]
    return d_in, d_out


def _check_grid(grid) -> dict:
    if not isinstance(grid, dict):
        raise ConfigError("grid", f"expected a table, got {_typename(grid)}")
    out = {}
    for axis, values in grid.items():
        where = f"grid.{axis}"
        if axis not in GRID_AXES:
            raise ConfigError(where, f"unknown grid axis; the axes are {list(GRID_AXES)}")
        if axis == "widths":
            if not isinstance(values, list) or not values:
                raise ConfigError(
                    where,
                    f"expected a non-empty array of width lists, got {_typename(values)} {values!r}",
                )
            values = [_coerce(f"{where}[{i}]", "int_list", v) for i, v in enumerate(values)]
            for i, v in enumerate(values):
                if len(v) < 2 or min(v) < 1:
                    raise ConfigError(
                        f"{where}[{i}]",
                        f"a widths list needs >= 2 positive entries (d_0, ..., d_N); got {v}",
                    )
        else:
            spec = GRID_AXES[axis]
            if isinstance(values, list) and not values:
                raise ConfigError(where, "empty list: a grid axis needs at least one value")
            values = _section(
                "grid", {axis: values}, {axis: dataclasses.replace(spec, default=_REQUIRED)}
            )[axis]
        if len({json.dumps(v) for v in values}) != len(values):
            raise ConfigError(where, f"repeats a value: {values}")
        out[axis] = values
    if "widths" in out and ("depth" in out or "width" in out):
        raise ConfigError(
            "grid.widths",
            "cannot be swept together with grid.depth or grid.width (widths fixes both)",
        )
    return out


def parse_config(data: Mapping, source: str = "") -> SweepConfig:
    """Validate a config given as a dict (the parsed TOML); raises `ConfigError` naming the field."""
    if not isinstance(data, Mapping):
        raise ConfigError("config", f"expected a table, got {_typename(data)}")
    sections = ("task", "network", "dynamics", "record", "grid")
    top = {k: v for k, v in data.items() if k not in sections}
    out = _section("", top, _TOP)

    task = data.get("task")
    if task is None:
        raise ConfigError("task", 'missing (required): the loss, e.g. [task] loss = "regression"')
    if not isinstance(task, dict):
        raise ConfigError("task", f"expected a table, got {_typename(task)}")
    if "loss" not in task:
        raise ConfigError("task.loss", f"missing (required): one of {list(TASKS)}")
    loss = _coerce("task.loss", "str", task["loss"])
    if loss not in TASKS:
        raise ConfigError("task.loss", f"{loss!r} is not one of {list(TASKS)}")
    schema = {"loss": _Field("str"), "seed": _Field("int", 0, check=_nonnegative), **TASKS[loss]}
    out["task"] = _section("task", task, schema)
    if loss != "regression":
        shape = out["task"]["shape"]
        if len(shape) != 2:
            raise ConfigError("task.shape", f"expected [d_out, d_in]; got {shape}")
        if out["task"]["rank"] > min(shape):
            raise ConfigError(
                "task.rank", f"must be <= min(shape) = {min(shape)}; got {out['task']['rank']}"
            )
    if loss == "matrix_completion" and out["task"]["n_observed"] > shape[0] * shape[1]:
        raise ConfigError(
            "task.n_observed", f"must be <= {shape[0] * shape[1]} (the number of entries)"
        )

    out["network"] = _section("network", data.get("network", {}), _NETWORK)
    if "dynamics" not in data:
        raise ConfigError("dynamics", 'missing (required): e.g. [dynamics] method = "train"')
    out["dynamics"] = _section("dynamics", data["dynamics"], _DYNAMICS)
    out["record"] = _section("record", data.get("record", {}), _RECORD)
    if "grid" not in data:
        raise ConfigError(
            "grid", "missing (required): at least one swept axis, e.g. [grid] seed = [0, 1, 2]"
        )
    out["grid"] = _check_grid(data["grid"])
    if not out["grid"]:
        raise ConfigError("grid", "empty: give at least one axis with a non-empty list of values")

    cfg = SweepConfig(data=out, source=source)
    _check_combinations(cfg, data)
    return cfg


def _check_combinations(cfg: SweepConfig, raw: Mapping) -> None:
    """The cross-field rules: everything that would fail at run time is caught here."""
    net, dyn, rec, grid = cfg.network, cfg.dynamics, cfg.record, cfg.grid
    raw_dyn = raw.get("dynamics", {})
    train = cfg.is_train
    for key in raw_dyn:
        if train and key in _FLOW_ONLY:
            raise ConfigError(f"dynamics.{key}", 'is a flow option, but method = "train"')
        if not train and key in _TRAIN_ONLY:
            raise ConfigError(f"dynamics.{key}", 'is a training option, but method = "flow"')
    flow = None if train else dyn["flow"]
    raw_net = raw.get("network", {})
    if "widths" in raw_net and ("depth" in raw_net or "width" in raw_net):
        raise ConfigError("network.widths", "give either widths or depth/width, not both")
    d_in, d_out = task_dims(cfg.task)

    # The axes that make sense for these dynamics.
    if "learning_rate" in grid and not train:
        raise ConfigError("grid.learning_rate", 'sweeps a learning rate, but method = "flow"')
    if "beta" in grid and flow != "langevin":
        raise ConfigError("grid.beta", "beta is the inverse temperature of the langevin flow only")
    if "kappa" in grid and flow in _LOSSLESS_FLOWS:
        raise ConfigError("grid.kappa", f"the {flow} flow has no kappa")

    # Every run's widths must be consistent with the task.
    seen = set()
    for point in cfg.points():
        s = cfg.run_settings(point)
        widths = s["widths"]
        if widths in seen:
            continue
        seen.add(widths)
        where = (
            "grid.widths"
            if "widths" in grid
            else ("network.widths" if net["widths"] is not None else "network.depth")
        )
        if widths[0] != d_in or widths[-1] != d_out:
            raise ConfigError(
                where,
                f"widths {list(widths)} must start with d_0 = {d_in} and end with d_N = {d_out} (the task's dimensions)",
            )
        if flow in ("fiber_l2", "fiber_schatten") and min(widths[1:-1] or (math.inf,)) < min(
            d_in, d_out
        ):
            raise ConfigError(
                where,
                f"the {flow} flow needs every hidden width >= min(d_0, d_N) = {min(d_in, d_out)} (full-rank fibers); got {list(widths)}",
            )
    inits = grid.get("init", [net["init"]])
    if "residual" in inits:
        for widths in seen:
            if len(set(widths)) != 1:
                raise ConfigError(
                    "network.init" if "init" not in grid else "grid.init",
                    f"residual initialization needs square layers (all widths equal); got {list(widths)}",
                )

    # Dynamics.
    if train:
        every = rec["every"] or max(1, dyn["steps"] // 20)
        if dyn["steps"] % every:
            raise ConfigError(
                "record.every", f"must divide dynamics.steps = {dyn['steps']}; got {every}"
            )
        rec["every"] = every
        if rec["times"] is not None:
            raise ConfigError(
                "record.times", "is for flows; training records every record.every steps"
            )
    else:
        if "every" in raw.get("record", {}):
            raise ConfigError(
                "record.every", "is for training; flows record at record.times (or record.saves)"
            )
        if rec["times"] is None:
            rec["times"] = [dyn["t1"] * i / (rec["saves"] - 1) for i in range(rec["saves"])]
        else:
            times = rec["times"]
            if len(times) < 2 or any(b <= a for a, b in zip(times, times[1:])):
                raise ConfigError(
                    "record.times", f"need at least two strictly increasing times; got {times}"
                )
            if "t1" in raw_dyn and times[-1] != dyn["t1"]:
                raise ConfigError(
                    "record.times",
                    f"the last time must equal dynamics.t1 = {dyn['t1']}; got {times[-1]}",
                )
        dyn["t1"] = rec["times"][-1]
        if flow == "langevin" and dyn["dt0"] <= 0:
            raise ConfigError("dynamics.dt0", "the langevin flow needs a fixed step dt0 > 0")
        if flow == "langevin" and "kappa" not in grid and dyn["kappa"] <= 0:
            raise ConfigError("dynamics.kappa", "the langevin flow needs kappa > 0")
        if flow == "langevin" and "kappa" in grid and min(grid["kappa"]) <= 0:
            raise ConfigError("grid.kappa", "the langevin flow needs kappa > 0")

    # Quantities.
    quantities = rec["quantities"]
    if len(set(quantities)) != len(quantities):
        raise ConfigError("record.quantities", f"lists a quantity twice: {quantities}")
    linear = net["activation"] == "identity"
    for q in quantities:
        where = "record.quantities"
        if flow == "end_to_end" and q in _LAYER_QUANTITIES + (
            "objective",
            "grad_norm",
            "sharpness",
        ):
            raise ConfigError(
                where,
                f"{q!r} needs the layers, but the end_to_end flow evolves only the end-to-end matrix",
            )
        if not linear and q in (
            "test_error",
            "effective_rank",
            "numerical_rank",
            "singular_values",
        ):
            raise ConfigError(
                where,
                f"{q!r} needs the end-to-end matrix of a linear network; network.activation = {net['activation']!r}",
            )
    if not linear:
        if flow in _LOSSLESS_FLOWS + ("end_to_end",):
            raise ConfigError(
                "network.activation",
                f'the {flow} flow needs a linear network (activation = "identity")',
            )
    if (
        cfg.data["dtype"] == "float32"
        and not train
        and flow in _LOSSLESS_FLOWS
        and dyn["rtol"] < 1e-5
    ):
        raise ConfigError(
            "dynamics.rtol",
            f'float32 cannot meet rtol = {dyn["rtol"]}; use >= 1e-5 or dtype = "float64"',
        )

    # Padding.
    if cfg.data["padding"] == "pad":
        ok, why = padding_possible(cfg)
        if not ok:
            raise ConfigError(
                "padding", f'"pad" is impossible here: {why}; use "auto" or "per-shape"'
            )


def padding_possible(cfg: SweepConfig) -> tuple[bool, str]:
    """Whether the runs of ``cfg`` can share one padded program (frozen identity layers, masked blocks)."""
    if not cfg.is_train and cfg.dynamics["flow"] not in ("gradient", "regularized", "langevin"):
        return (
            False,
            f"the {cfg.dynamics['flow']} flow depends on the geometry of the whole network (frozen layers would change it)",
        )
    if cfg.network["activation"] != "identity":
        return False, "frozen identity layers change a nonlinear network's function"
    depths = {len(cfg.run_settings(p)["widths"]) - 1 for p in cfg.points()}
    if min(depths) < 2:
        return False, "depth-1 networks have no hidden layer to pad"
    return True, ""


def load_config(path: str | Path) -> SweepConfig:
    """Read and validate a TOML sweep config; raises `ConfigError` (malformed TOML included) naming the field."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError("config", f"cannot read {path}: {e.strerror or e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("config", f"{path} is not valid TOML: {e}") from None
    return parse_config(data, text)
