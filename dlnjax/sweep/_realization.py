"""The realization task of ``dlnjax sweep``: training linear state-space models ``(A, B, C)`` on the Markov parameters
of a target system (the SSM analogy of §1.3.1 of Lindsey & Menon, seed 001; docs/systems.md, docs/sweeps.md).

A config with ``[task] loss = "realization"`` is validated and run here (`dlnjax.sweep.parse_config` and
`dlnjax.sweep.run` dispatch to it), with the conventions of the network sweeps: every field checked (`ConfigError`
naming it), one compiled ``vmap`` program per model order, batches sharded over the devices, the same resumable
store (`dlnjax.sweep.load` reads it back), per-run failure flags. Its sections:

- ``[task]``: the target, `dlnjax.systems.random_system` drawn from ``PRNGKey(seed)`` with ``order`` states, ``m``
  inputs, ``p`` outputs, discrete-time stable with spectral radius ``1 - margin``; the loss is
  `dlnjax.systems.MarkovLoss` of its first ``markov`` Markov parameters;
- ``[model]``: the fitted realization's ``order`` (default: the target's), its initialization ``scale`` times a
  `dlnjax.systems.random_system` (unstable draw: ``A`` of entry variance ``1/n``, ``B, C`` of variance 1) from the
  first key of ``jr.split(PRNGKey(seed))``, as for networks;
- ``[dynamics]``: ``method = "train"`` (`dlnjax.systems.fit` with an Optax optimizer of the `OPTIMIZERS` registry,
  ``steps`` steps, weight decay ``kappa``) or ``method = "flow"`` (`dlnjax.systems.SystemRegularized`, the
  gradient flow of ``E + kappa/2 ||x||^2``, integrated by `dlnjax.simulate` to ``t1``);
- ``[record]``: the trajectories ``loss`` (the Markov misfit ``E``) and ``moment_norm`` (``||mu||_F`` of
  `dlnjax.systems.moment_map`) every ``every`` steps (train) or at ``times`` (flow);
- ``[grid]``: the axes ``order``, ``scale``, ``learning_rate`` (train), ``kappa``, ``seed``.

Per run: ``success``; for training also ``diverged`` and ``diverged_at`` (the first recorded step whose loss is
non-finite or above ``divergence_threshold``; entries recorded from there on are NaN), for flows ``num_steps``
(a failed solve: NaN from the failure on).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .. import systems as S
from .._simulate import simulate
from ._config import (
    OPTIMIZERS,
    ConfigError,
    SweepConfig,
    config_field,
    config_section,
    dynamics_fields,
    nonnegative,
    positive,
    record_fields,
)
from ._run import Plan, Program, gather, launch, sweep_dtype, to_global
from ._store import load

__all__ = ["REALIZATION", "RealizationConfig", "parse_realization", "run_realization"]

logger = logging.getLogger("dlnjax.sweep")

REALIZATION = "realization"
"""The ``task.loss`` of the realization task."""

F = config_field
_UNIT = lambda x: None if 0 < x < 1 else f"must lie in (0, 1); got {x!r}"  # noqa: E731
_TOP = {
    "name": F("str", "realization"),
    "dtype": F("str", "float64", choices=("float32", "float64")),
    "batch_size": F("int", 64, check=positive),
}
_TASK = {
    "loss": F("str"),
    "seed": F("int", 0, check=nonnegative),
    "order": F("int", 4, check=positive),
    "m": F("int", 2, check=positive),
    "p": F("int", 2, check=positive),
    "markov": F("int", 20, check=positive),
    "margin": F("float", 0.2, check=_UNIT),
}
_MODEL = {
    "order": F("int", None, check=positive),
    "scale": F("float", 0.5, check=nonnegative),
    "seed": F("int", 0, check=nonnegative),
}
_TRAIN_ONLY = ("optimizer", "learning_rate", "momentum", "steps", "divergence_threshold")
_FLOW_ONLY = ("t1", "rtol", "atol", "dt0", "max_steps")
_DYNAMICS = {  # the network sweeps' fields of these names
    k: dynamics_fields[k] for k in ("method", *_TRAIN_ONLY, *_FLOW_ONLY, "kappa")
}
QUANTITIES = ("loss", "moment_norm")
_RECORD = {
    "quantities": F("str_list", list(QUANTITIES), choices=QUANTITIES),
    **{k: record_fields[k] for k in ("every", "times", "saves")},
}
_GRID = {
    "order": F("int_list", check=positive),
    "scale": F("float_list", check=nonnegative),
    "learning_rate": F("float_list", check=positive),
    "kappa": F("float_list", check=nonnegative),
    "seed": F("int_list", check=nonnegative),
}
_SECTIONS = ("task", "model", "dynamics", "record", "grid")


@dataclasses.dataclass(frozen=True)
class RealizationConfig(SweepConfig):
    """A validated realization sweep: a `SweepConfig` with the sections ``task``, ``model``, ``dynamics``,
    ``record`` and ``grid`` (module docstring)."""

    @property
    def model(self) -> dict:
        """The ``[model]`` section (a dict)."""
        return self.data["model"]

    def run_settings(self, point: Mapping) -> dict:
        """One run: the model ``order``, ``scale``, ``seed`` and the dynamics' ``learning_rate`` and ``kappa``."""
        model, dyn = self.model, self.dynamics
        return {
            "order": int(point.get("order", model["order"])),
            "scale": float(point.get("scale", model["scale"])),
            "seed": int(point.get("seed", model["seed"])),
            "learning_rate": float(point.get("learning_rate", dyn["learning_rate"])),
            "kappa": float(point.get("kappa", dyn["kappa"])),
        }


def parse_realization(data: Mapping, source: str = "") -> RealizationConfig:
    """Validate a realization config (a dict, the parsed TOML); raises `ConfigError` naming the field."""
    out = config_section("", {k: v for k, v in data.items() if k not in _SECTIONS}, _TOP)
    out["task"] = config_section("task", data["task"], _TASK)
    out["model"] = config_section("model", data.get("model", {}), _MODEL)
    if out["model"]["order"] is None:
        out["model"]["order"] = out["task"]["order"]
    if "dynamics" not in data:
        raise ConfigError("dynamics", 'missing (required): e.g. [dynamics] method = "train"')
    out["dynamics"] = config_section("dynamics", data["dynamics"], _DYNAMICS)
    out["record"] = config_section("record", data.get("record", {}), _RECORD)
    if "grid" not in data:
        raise ConfigError("grid", "missing (required): e.g. [grid] order = [2, 4]")
    grid = data["grid"]
    if not isinstance(grid, dict) or not grid:
        raise ConfigError("grid", "expected a table with at least one swept axis")
    for axis, values in grid.items():
        if axis not in _GRID:
            raise ConfigError(
                f"grid.{axis}",
                f"unknown grid axis of the realization task; the axes are {list(_GRID)}",
            )
        if values == [] or (isinstance(values, list) and len(set(map(str, values))) < len(values)):
            raise ConfigError(f"grid.{axis}", f"needs distinct values, at least one; got {values}")
    out["grid"] = {a: config_section("grid", {a: v}, {a: _GRID[a]})[a] for a, v in grid.items()}
    cfg = RealizationConfig(data=out, source=source)
    _check_dynamics(cfg, data)
    return cfg


def _check_dynamics(cfg: RealizationConfig, raw: Mapping) -> None:
    """The options of the other method, the swept learning rate of a flow, the recording times or steps."""
    dyn, rec, train = cfg.dynamics, cfg.record, cfg.is_train
    for key in raw["dynamics"]:
        if train and key in _FLOW_ONLY:
            raise ConfigError(f"dynamics.{key}", 'is a flow option, but method = "train"')
        if not train and key in _TRAIN_ONLY:
            raise ConfigError(f"dynamics.{key}", 'is a training option, but method = "flow"')
    if len(set(rec["quantities"])) != len(rec["quantities"]):
        raise ConfigError("record.quantities", f"lists a quantity twice: {rec['quantities']}")
    if train:
        if rec["times"] is not None:
            raise ConfigError(
                "record.times", "is for flows; training records every record.every steps"
            )
        rec["every"] = rec["every"] or max(1, dyn["steps"] // 20)
        if dyn["steps"] % rec["every"]:
            raise ConfigError(
                "record.every", f"must divide dynamics.steps = {dyn['steps']}; got {rec['every']}"
            )
        return
    if "learning_rate" in cfg.grid:
        raise ConfigError("grid.learning_rate", 'sweeps a learning rate, but method = "flow"')
    if "every" in raw.get("record", {}):
        raise ConfigError("record.every", "is for training; flows record at record.times")
    times = rec["times"] or [dyn["t1"] * i / (rec["saves"] - 1) for i in range(rec["saves"])]
    if len(times) < 2 or any(b <= a for a, b in zip(times, times[1:])):
        raise ConfigError("record.times", f"need at least two increasing times; got {times}")
    if "t1" in raw["dynamics"] and times[-1] != dyn["t1"]:
        raise ConfigError(
            "record.times", f"the last time must equal dynamics.t1 = {dyn['t1']}; got {times[-1]}"
        )
    rec["times"], dyn["t1"] = times, times[-1]


def target_loss(task: Mapping, dtype) -> S.MarkovLoss:
    """The loss of ``task``: `MarkovLoss` of the first ``markov`` Markov parameters of the target system."""
    target = S.random_system(
        jr.PRNGKey(task["seed"]),
        task["order"],
        task["m"],
        task["p"],
        discrete=True,
        margin=task["margin"],
        dtype=dtype,
    )
    return S.MarkovLoss.of(target, task["markov"])


@partial(jax.jit, static_argnames=("n", "m", "p", "dtype"))
def initial_system(seed, scale, *, n: int, m: int, p: int, dtype) -> S.LinearSystem:
    """A run's initial realization: ``scale`` times `random_system` (``stable=False``) from the first key of
    ``jr.split(PRNGKey(seed))``."""
    sys = S.random_system(jr.split(jr.PRNGKey(seed))[0], n, m, p, stable=False, dtype=dtype)
    return jax.tree_util.tree_map(lambda a: scale * a, sys)


def _moment_norm(sys: S.LinearSystem):
    return jnp.sqrt(jnp.sum(jnp.abs(S.moment_map(sys)) ** 2))


def _finite_or_nan(v):
    return jnp.where(jnp.isfinite(v), v, jnp.nan)


def run_one(cfg: RealizationConfig, loss: S.MarkovLoss, inputs: dict) -> dict:
    """One run (traced under ``vmap``): the recorded trajectories and the run's flags."""
    dyn, rec = cfg.dynamics, cfg.record
    sys0, kappa = inputs["sys0"], inputs["kappa"]
    if cfg.is_train:
        opt = OPTIMIZERS[dyn["optimizer"]](dyn, inputs["learning_rate"])
        res = S.fit(loss, sys0, opt, dyn["steps"], every=rec["every"], kappa=kappa)
        values = {
            "loss": res.history["loss"],
            "moment_norm": jnp.sqrt(jnp.sum(jnp.abs(res.history["moment"]) ** 2, axis=(-1, -2))),
        }
        bad = ~jnp.isfinite(values["loss"]) | (values["loss"] > dyn["divergence_threshold"])
        diverged = jnp.any(bad)
        first = jnp.argmax(bad)
        after = diverged & (jnp.arange(bad.shape[0]) >= first)
        out = {q: _finite_or_nan(jnp.where(after, jnp.nan, values[q])) for q in rec["quantities"]}
        out["diverged"] = diverged
        out["diverged_at"] = jnp.where(diverged, res.steps[first], -1).astype(jnp.int32)
        out["success"] = ~diverged
        return out
    traj = simulate(
        S.SystemRegularized(loss, kappa),
        sys0,
        jnp.asarray(rec["times"], jnp.result_type(float)),
        rtol=dyn["rtol"],
        atol=dyn["atol"],
        dt0=dyn["dt0"] or None,
        max_steps=dyn["max_steps"],
    )
    fns = {"loss": loss, "moment_norm": _moment_norm}
    out = {q: _finite_or_nan(jax.vmap(fns[q])(traj.ys)) for q in rec["quantities"]}
    out["success"] = traj.success
    out["num_steps"] = jnp.asarray(traj.stats["num_steps"], jnp.int32)
    return out


def realization_plan(cfg: RealizationConfig, n_devices: int = 1) -> Plan:
    """One program per model order; batches of ``batch_size`` (rounded up to a multiple of ``n_devices``)."""
    settings = tuple(cfg.run_settings(p) for p in cfg.points())
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(settings):
        groups.setdefault(s["order"], []).append(i)
    programs = tuple(Program((n,), False, tuple(r)) for n, r in groups.items())
    largest = max(len(p.runs) for p in programs)
    bs = int(math.ceil(min(cfg.data["batch_size"], largest) / n_devices) * n_devices)
    return Plan(programs, bs, "per-shape", settings)


def _template(cfg: RealizationConfig, plan: Plan, meta: dict):
    import json

    import xarray as xr

    n_slots = len(plan.batches) * plan.batch_size
    if cfg.is_train:
        dim, traj = "step", np.arange(0, cfg.dynamics["steps"] + 1, cfg.record["every"])
        flags = {"diverged": np.zeros(n_slots, bool), "diverged_at": np.full(n_slots, -1, np.int32)}
    else:
        dim, traj = "time", np.asarray(cfg.record["times"], np.float64)
        flags = {"num_steps": np.zeros(n_slots, np.int32)}
    fdtype = np.float32 if cfg.data["dtype"] == "float32" else np.float64
    variables = {"grid_index": (("slot",), plan.grid_index)}
    for q in cfg.record["quantities"]:
        variables[q] = (("slot", dim), np.full((n_slots, len(traj)), np.nan, fdtype))
    variables["success"] = (("slot",), np.zeros(n_slots, bool))
    variables.update({k: (("slot",), v) for k, v in flags.items()})
    attrs = {
        "name": cfg.data["name"],
        "task": REALIZATION,
        "config_toml": cfg.source,
        "config": cfg.to_json(),
        "grid": json.dumps([[a, v] for a, v in cfg.grid.items()]),
        "grid_axes": json.dumps(list(cfg.grid)),
        "quantities": json.dumps(cfg.record["quantities"]),
        "trajectory_dim": dim,
        "padding": plan.padding,
        "batch_size": plan.batch_size,
        "versions": json.dumps(meta["versions"], sort_keys=True),
        "git_commit": meta["git_commit"],
        "platform": meta["platform"],
    }
    return xr.Dataset(variables, coords={dim: traj}, attrs=attrs)


def _inputs(cfg: RealizationConfig, plan: Plan, runs, dtype) -> dict:
    runs = list(runs) + [runs[-1]] * (plan.batch_size - len(runs))
    task, real = cfg.task, jnp.zeros((), dtype).real.dtype
    settings = [plan.settings[i] for i in runs]
    systems = [
        initial_system(s["seed"], s["scale"], n=s["order"], m=task["m"], p=task["p"], dtype=dtype)
        for s in settings
    ]
    return {
        "sys0": jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *systems),
        "learning_rate": jnp.asarray([s["learning_rate"] for s in settings], real),
        "kappa": jnp.asarray([s["kappa"] for s in settings], real),
    }


def run_realization(
    cfg: RealizationConfig,
    out: str | Path,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    devices=None,
):
    """Run the realization sweep ``cfg`` into ``out`` and return its Dataset (as `dlnjax.sweep.run`: resumable,
    batches sharded over ``devices``, failed runs counted in the log and flagged in the store)."""
    say = log or (lambda msg: logger.info(msg))
    out = Path(out)
    go = launch(cfg, out, realization_plan, _template, devices)
    n_batches = len(go.plan.batches)
    say(
        f"sweep {cfg.data['name']!r} (realization): {cfg.n_runs} runs in {n_batches} batches of "
        f"{go.plan.batch_size} ({len(go.plan.programs)} program(s)) on {len(go.devices)} x "
        f"{go.meta['device_kind']}; {n_batches - len(go.todo)} batches already done"
    )
    dtype = sweep_dtype(cfg)
    arrays, static = eqx.partition(target_loss(cfg.task, dtype), eqx.is_array)
    arrays = to_global(arrays, go.replicated)
    one = lambda a, inputs: jax.vmap(partial(run_one, cfg, eqx.combine(a, static)))(inputs)  # noqa: E731
    program = jax.jit(one, in_shardings=(go.replicated, go.batched), out_shardings=go.batched)
    bar, n_bad = go.progress_bar(cfg, progress), 0
    try:
        for b in go.todo:
            runs, t0 = go.plan.batches[b][2], time.perf_counter()
            inputs = to_global(_inputs(cfg, go.plan, runs, dtype), go.batched)
            result = gather(program(arrays, inputs))
            n_bad += int(np.sum(~np.asarray(result["success"])[: len(runs)]))
            go.write(b, result, t0)
            bar.update(1)
    finally:
        bar.close()
    say(f"sweep {cfg.data['name']!r} finished: {out}; {n_bad} run(s) failed in this session")
    return load(out)
