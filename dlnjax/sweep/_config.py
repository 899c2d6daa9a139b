"""Sweep configs: a TOML file, validated field by field before anything runs.

A config has the sections ``[task]`` (the loss and how to draw its data), ``[network]`` (widths,
initialization, activation), ``[dynamics]`` (``method = "train"`` with an Optax optimizer, or
``method = "flow"`` with a flow of `dlnjax.flows` and `dlnjax.simulate` options), ``[record]`` (the
quantities and when to record them) and ``[grid]`` (the swept axes, each a list of values), plus a few
top-level options (``name``, ``dtype``, ``batch_size``, ``padding``). `load_config` checks every field
(unknown names, types, ranges, and the combinations that cannot run) and raises `ConfigError` naming
the field; the CLI turns that into exit code 2. See ``examples/`` for complete configs.

The choices of a config are registries ``{name: factory}``, and validation draws its allowed values
(and the rules that depend on what a choice can do) from them: `TASKS` (the losses and their data
fields), `INITS`, `ACTIVATIONS`, `OPTIMIZERS`, `FLOWS` (each a `FlowChoice`: its factory and
capabilities, e.g. stochastic when it builds a `dlnjax.flows.AbstractStochasticFlow`) and the
recorded `QUANTITIES` (the table shared with `dlnjax.train`).
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

import jax.numpy as jnp
import jax.random as jr

from .. import flows as _flows
from .. import losses as _losses
from .._activations import Activation
from .._errors import ConfigError
from .._init import gaussian, orthogonal, residual
from .._numerics import matmul
from .._quantities import QUANTITIES as _TABLE

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "ConfigError",
    "SweepConfig",
    "load_config",
    "parse_config",
    "GRID_AXES",
    "QUANTITIES",
    "TASKS",
    "INITS",
    "ACTIVATIONS",
    "OPTIMIZERS",
    "FLOWS",
    "FlowChoice",
    "Task",
]

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

# --------------------------------------------------------------------------------------------------
# The registries of choices
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Task:
    """A loss of `dlnjax.losses` for ``[task]``: ``make(task, key, dtype)`` draws it; `fields` are its data fields."""

    make: Callable
    fields: Mapping[str, _Field]


def _factorization(task, key, dtype):
    d_out, d_in = task["shape"]
    ku, kv = jr.split(key)
    M = matmul(
        jr.normal(ku, (d_out, task["rank"]), dtype), jr.normal(kv, (task["rank"], d_in), dtype)
    )
    return _losses.Factorization(task["norm"] * M / jnp.linalg.norm(M))


_SHAPE = _Field("int_list", _REQUIRED, check=_positive)
_RANK = _Field("int", _REQUIRED, check=_positive)
_NORM = _Field("float", 1.0, check=_positive)


def _low_rank_task(loss_class, count: str) -> Task:
    """A task drawn by ``loss_class.random(key, shape, rank, <count>, norm=, dtype=)``: ``count`` observations
    of a random rank-``rank`` matrix of Frobenius norm ``norm``."""
    return Task(
        lambda task, key, dtype: loss_class.random(
            key, task["shape"], task["rank"], task[count], norm=task["norm"], dtype=dtype
        ),
        {
            "shape": _SHAPE,
            "rank": _RANK,
            count: _Field("int", _REQUIRED, check=_positive),
            "norm": _NORM,
        },
    )


TASKS = {
    "regression": Task(
        lambda task, key, dtype: _losses.Regression.random(
            key, task["n"], task["d_in"], task["d_out"], noise=task["noise"], dtype=dtype
        ),
        {
            "n": _Field("int", 50, check=_positive),
            "d_in": _Field("int", 5, check=_positive),
            "d_out": _Field("int", 1, check=_positive),
            "noise": _Field("float", 1.0, check=_nonnegative),
        },
    ),
    "matrix_completion": _low_rank_task(_losses.MatrixCompletion, "n_observed"),
    "matrix_sensing": _low_rank_task(_losses.MatrixSensing, "n_measurements"),
    "factorization": Task(_factorization, {"shape": _SHAPE, "rank": _RANK, "norm": _NORM}),
}
"""The losses of `dlnjax.losses` by config name: how to draw each, and the fields of its data."""

INITS: dict[str, Callable] = {
    "gaussian": lambda key, widths, scale, dtype: gaussian(key, widths, scale, dtype=dtype),
    "orthogonal": lambda key, widths, scale, dtype: orthogonal(key, widths, scale, dtype=dtype),
    "residual": lambda key, widths, scale, dtype: residual(
        key, len(widths) - 1, widths[0], scale, dtype=dtype
    ),
}
"""Initializations ``name -> init(key, widths, scale, dtype) -> DLN``."""

ACTIVATIONS: dict[str, Activation] = {
    name: Activation(name) for name in ("identity", "relu", "leaky_relu", "gelu")
}
"""Activations by config name."""


def _sgd(momentum=None, nesterov=False):
    import optax

    return lambda dyn, lr: optax.sgd(
        lr, momentum=None if momentum is None else dyn["momentum"], nesterov=nesterov
    )


def _optax(name):
    import optax

    return lambda dyn, lr: getattr(optax, name)(lr)


OPTIMIZERS: dict[str, Callable] = {
    "sgd": _sgd(),
    "momentum": _sgd(momentum=True),
    "nesterov": _sgd(momentum=True, nesterov=True),
    **{name: _optax(name) for name in ("adam", "adamw", "rmsprop", "adagrad")},
}
"""Optax optimizers ``name -> make(dynamics, learning_rate)``."""


@dataclasses.dataclass(frozen=True)
class FlowChoice:
    """A flow for ``method = "flow"``: ``make(loss, kappa, beta, depth, dynamics)`` builds it.

    `kinds`: the classes it builds (a stochastic flow, `stochastic`, builds a
    `dlnjax.flows.AbstractStochasticFlow`). `loss`: driven by the loss (with a weight decay ``kappa``);
    ``False`` for the flows on the fiber (``X`` constant). `end_to_end`: evolves the end-to-end matrix,
    not the layers. `entrywise`: its velocity on the live entries of a padded network is the real one
    (padding possible). `full_rank_fibers`: needs every hidden width ``>= min(d_0, d_N)``.
    `positive_kappa`: needs ``kappa > 0``.
    """

    make: Callable
    kinds: tuple[type, ...]
    loss: bool = True
    end_to_end: bool = False
    entrywise: bool = False
    full_rank_fibers: bool = False
    positive_kappa: bool = False

    @property
    def stochastic(self) -> bool:
        return any(issubclass(k, _flows.AbstractStochasticFlow) for k in self.kinds)

    @property
    def needs_linear(self) -> bool:
        """The flow needs the end-to-end matrix of a linear network (fiber flows, the end-to-end flow)."""
        return self.end_to_end or not self.loss


def _no_kappa(kappa):
    return 0.0 if kappa is None else kappa


FLOWS: dict[str, FlowChoice] = {
    "gradient": FlowChoice(
        lambda loss, kappa, beta, depth, dyn: (
            _flows.Gradient(loss) if kappa is None else _flows.Regularized(loss, kappa)
        ),
        (_flows.Gradient, _flows.Regularized),
        entrywise=True,
    ),
    "regularized": FlowChoice(
        lambda loss, kappa, beta, depth, dyn: _flows.Regularized(loss, _no_kappa(kappa)),
        (_flows.Regularized,),
        entrywise=True,
    ),
    "langevin": FlowChoice(
        lambda loss, kappa, beta, depth, dyn: _flows.Langevin(loss, kappa, beta),
        (_flows.Langevin,),
        entrywise=True,
        positive_kappa=True,
    ),
    "fiber_l2": FlowChoice(
        lambda loss, kappa, beta, depth, dyn: _flows.FiberL2(throw=False),
        (_flows.FiberL2,),
        loss=False,
        full_rank_fibers=True,
    ),
    "fiber_schatten": FlowChoice(
        lambda loss, kappa, beta, depth, dyn: _flows.FiberSchatten(dyn["p"], throw=False),
        (_flows.FiberSchatten,),
        loss=False,
        full_rank_fibers=True,
    ),
    "kirwan_ness": FlowChoice(
        lambda loss, kappa, beta, depth, dyn: _flows.KirwanNess(), (_flows.KirwanNess,), loss=False
    ),
    "end_to_end": FlowChoice(
        lambda loss, kappa, beta, depth, dyn: _flows.EndToEnd(loss, depth, _no_kappa(kappa)),
        (_flows.EndToEnd,),
        end_to_end=True,
    ),
}
"""The flows of `dlnjax.flows` by config name, with what each can do."""

_NETWORK = {
    "depth": _Field("int", 2, check=_positive),
    "width": _Field("int", 5, check=_positive),
    "widths": _Field("int_list", None, check=_positive),
    "init": _Field("str", "gaussian", choices=tuple(INITS)),
    "scale": _Field("float", 0.1, check=_nonnegative),
    "activation": _Field("str", "identity", choices=tuple(ACTIVATIONS)),
    "seed": _Field(
        "int", 0, check=_nonnegative
    ),  # the initialization seed when grid.seed is not swept
}

_DYNAMICS = {
    "method": _Field("str", _REQUIRED, choices=("train", "flow")),
    # train
    "optimizer": _Field("str", "sgd", choices=tuple(OPTIMIZERS)),
    "learning_rate": _Field("float", 0.01, check=_positive),
    "momentum": _Field(
        "float", 0.9, check=lambda x: None if 0 <= x < 1 else f"must lie in [0, 1); got {x!r}"
    ),
    "steps": _Field("int", 1000, check=_positive),
    "divergence_threshold": _Field("float", 1e6, check=_positive),
    # flow
    "flow": _Field("str", "gradient", choices=tuple(FLOWS)),
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

QUANTITIES = tuple(_TABLE)
"""The quantities a sweep can record (see `dlnjax.sweep` for their definitions): the table shared with
`dlnjax.train`."""

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
    "init": _Field("str_list", choices=tuple(INITS)),
    "scale": _Field("float_list", check=_nonnegative),
    "learning_rate": _Field("float_list", check=_positive),
    "kappa": _Field("float_list", check=_nonnegative),
    "beta": _Field("float_list", check=_positive),
    "seed": _Field("int_list", check=_nonnegative),
}
"""The axes a grid may sweep, each a non-empty list of values."""


def _config_section(name: str) -> property:
    """A read-only attribute: the section ``name`` of the normalized config ``data`` (a dict)."""
    return property(lambda self: self.data[name], doc=f"The ``[{name}]`` section (a dict).")


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """A validated sweep config.

    **Attributes:** `data` (the normalized config: every section with its defaults filled in; what is
    stored with the results and compared on resume), `source` (the TOML text), and the sections
    `task`, `network`, `dynamics`, `record`, `grid` (an ordered dict ``axis -> values``) as dicts.
    """

    data: dict
    source: str

    task = _config_section("task")
    network = _config_section("network")
    dynamics = _config_section("dynamics")
    record = _config_section("record")
    grid = _config_section("grid")

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
    if isinstance(data.get("task"), dict) and data["task"].get("loss") == "realization":
        from ._realization import parse_realization  # linear state-space models, not networks

        return parse_realization(data, source)
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
        raise ConfigError("task.loss", f"{loss!r} is not one of {list(TASKS) + ['realization']}")
    schema = {
        "loss": _Field("str"),
        "seed": _Field("int", 0, check=_nonnegative),
        **TASKS[loss].fields,
    }
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
    train = cfg.is_train
    for key in raw.get("dynamics", {}):
        if train and key in _FLOW_ONLY:
            raise ConfigError(f"dynamics.{key}", 'is a flow option, but method = "train"')
        if not train and key in _TRAIN_ONLY:
            raise ConfigError(f"dynamics.{key}", 'is a training option, but method = "flow"')
    raw_net = raw.get("network", {})
    if "widths" in raw_net and ("depth" in raw_net or "width" in raw_net):
        raise ConfigError("network.widths", "give either widths or depth/width, not both")
    flow = None if train else cfg.dynamics["flow"]
    choice = None if train else FLOWS[flow]
    _check_axes(cfg, flow, choice)
    _check_widths(cfg, flow, choice)
    _check_recording(cfg, raw, flow, choice)
    _check_quantities(cfg, flow, choice)
    if cfg.data["padding"] == "pad":
        ok, why = padding_possible(cfg)
        if not ok:
            raise ConfigError(
                "padding", f'"pad" is impossible here: {why}; use "auto" or "per-shape"'
            )


def _check_axes(cfg: SweepConfig, flow: str | None, choice: FlowChoice | None) -> None:
    """The swept axes that make sense for these dynamics."""
    grid = cfg.grid
    if "learning_rate" in grid and not cfg.is_train:
        raise ConfigError("grid.learning_rate", 'sweeps a learning rate, but method = "flow"')
    if "beta" in grid and not (choice is not None and choice.stochastic):
        stochastic = [name for name, c in FLOWS.items() if c.stochastic]
        raise ConfigError(
            "grid.beta",
            f"beta is the inverse temperature of the stochastic flows {stochastic} only",
        )
    if "kappa" in grid and choice is not None and not choice.loss:
        raise ConfigError("grid.kappa", f"the {flow} flow has no kappa")


def _check_widths(cfg: SweepConfig, flow: str | None, choice: FlowChoice | None) -> None:
    """Every run's widths must be consistent with the task, the flow and the initialization."""
    net, grid = cfg.network, cfg.grid
    d_in, d_out = task_dims(cfg.task)
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
        if (choice is not None and choice.full_rank_fibers) and min(
            widths[1:-1] or (math.inf,)
        ) < min(d_in, d_out):
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


def _check_recording(cfg: SweepConfig, raw: Mapping, flow: str | None, choice) -> None:
    """When to record (steps or times; normalized in place) and the step rules of the dynamics."""
    dyn, rec, grid = cfg.dynamics, cfg.record, cfg.grid
    raw_dyn = raw.get("dynamics", {})
    if cfg.is_train:
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
        if choice.stochastic and dyn["dt0"] <= 0:
            raise ConfigError(
                "dynamics.dt0", f"the {flow} flow is stochastic: it needs a fixed step dt0 > 0"
            )
        if choice.positive_kappa and "kappa" not in grid and dyn["kappa"] <= 0:
            raise ConfigError("dynamics.kappa", f"the {flow} flow needs kappa > 0")
        if choice.positive_kappa and "kappa" in grid and min(grid["kappa"]) <= 0:
            raise ConfigError("grid.kappa", f"the {flow} flow needs kappa > 0")


def _check_quantities(cfg: SweepConfig, flow: str | None, choice: FlowChoice | None) -> None:
    """The recorded quantities must exist for this state (layers or ``X``) and network (linear or not)."""
    net, dyn = cfg.network, cfg.dynamics
    quantities = cfg.record["quantities"]
    if len(set(quantities)) != len(quantities):
        raise ConfigError("record.quantities", f"lists a quantity twice: {quantities}")
    linear = ACTIVATIONS[net["activation"]].is_linear
    for q in quantities:
        where = "record.quantities"
        if choice is not None and choice.end_to_end and _TABLE[q].layers:
            raise ConfigError(
                where,
                f"{q!r} needs the layers, but the {flow} flow evolves only the end-to-end matrix",
            )
        if not linear and _TABLE[q].linear:
            raise ConfigError(
                where,
                f"{q!r} needs the end-to-end matrix of a linear network; network.activation = {net['activation']!r}",
            )
    if not linear:
        if choice is not None and choice.needs_linear:
            raise ConfigError(
                "network.activation",
                f'the {flow} flow needs a linear network (activation = "identity")',
            )
    if (
        cfg.data["dtype"] == "float32"
        and not cfg.is_train
        and not choice.loss
        and dyn["rtol"] < 1e-5
    ):
        raise ConfigError(
            "dynamics.rtol",
            f'float32 cannot meet rtol = {dyn["rtol"]}; use >= 1e-5 or dtype = "float64"',
        )


def padding_possible(cfg: SweepConfig) -> tuple[bool, str]:
    """Whether the runs of ``cfg`` can share one padded program (frozen identity layers, masked blocks)."""
    if not cfg.is_train and not FLOWS[cfg.dynamics["flow"]].entrywise:
        return (
            False,
            f"the {cfg.dynamics['flow']} flow depends on the geometry of the whole network (frozen layers would change it)",
        )
    if not ACTIVATIONS[cfg.network["activation"]].is_linear:
        return False, "frozen identity layers change a nonlinear network's function"
    depths = {len(cfg.run_settings(p)["widths"]) - 1 for p in cfg.points()}
    if min(depths) < 2:
        return False, "depth-1 networks have no hidden layer to pad"
    return True, ""


# the schema helpers under plain names, shared with the realization task (``_realization.py``)
config_field, config_section, positive, nonnegative = _Field, _section, _positive, _nonnegative
dynamics_fields, record_fields = _DYNAMICS, _RECORD


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
