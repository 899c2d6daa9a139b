"""``run``: execute a sweep config, batched with ``vmap`` and sharded over every device, into a resumable store.

The runs (the Cartesian product of the grid axes) are split into *programs*: runs that share one
compiled function. Without padding, a program is one network shape (``widths``; and the depth, for the
end-to-end flow). With padding, every run is embedded into the largest shape (frozen identity layers
right after the first layer, zero blocks masked; `dlnjax._padding`) and the whole grid is one program.
Each program's runs are cut into batches of ``batch_size`` (the last one filled up by repeating a run,
so one compile serves all), and each batch is one call of ``jit(vmap(run_one))`` whose batch axis is
sharded over a ``jax.sharding.Mesh`` of all devices (``NamedSharding(mesh, P("runs"))``; the loss data is
replicated). Finished batches go to the `Store` as they complete.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._network import DLN, end_to_end
from .._padding import pad
from ..flows import AbstractStochasticFlow
from ._config import (
    ACTIVATIONS,
    FLOWS,
    INITS,
    OPTIMIZERS,
    TASKS,
    ConfigError,
    SweepConfig,
    padding_possible,
)
from ._quantities import quantity_fns, quantity_shape
from ._store import Store

__all__ = ["run", "plan", "Plan", "choose_padding", "COMPILE_WORTH"]

logger = logging.getLogger("dlnjax.sweep")

COMPILE_WORTH = 6e7
"""For ``padding = "auto"``: how much extra padded work one compile saved is worth, in weight-steps (a step of
every run, times the weights it multiplies), fitted to the break-even points measured with
``benchmarks/sweep_shapes.py`` (docs/performance.md; see `choose_padding`)."""


# --------------------------------------------------------------------------------------------------
# Planning: programs, batches, slots
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Program:
    shape: tuple[int, ...]  # the widths every run of this program is computed at (padded or real)
    padded: bool
    runs: tuple[int, ...]  # grid indices, in grid order


@dataclasses.dataclass(frozen=True)
class Plan:
    """How a sweep runs: its programs, the batch size, and the slot -> grid index map of the store."""

    programs: tuple[Program, ...]
    batch_size: int
    padding: str  # "pad" or "per-shape": what was used
    settings: tuple[dict, ...]  # per grid index

    @property
    def batches(self) -> list[tuple[int, int, tuple[int, ...]]]:
        """``(program, first slot, grid indices)`` per batch, in execution order."""
        out, slot = [], 0
        for p, prog in enumerate(self.programs):
            for i in range(0, len(prog.runs), self.batch_size):
                out.append((p, slot, prog.runs[i : i + self.batch_size]))
                slot += self.batch_size
        return out

    @property
    def grid_index(self) -> np.ndarray:
        out = np.full(len(self.batches) * self.batch_size, -1, np.int64)
        for _, start, runs in self.batches:
            out[start : start + len(runs)] = runs
        return out


def _cost(widths) -> int:
    return sum(a * b for a, b in zip(widths, widths[1:]))


def choose_padding(cfg: SweepConfig, shapes: list[tuple[int, ...]]) -> str:
    """``"pad"`` or ``"per-shape"`` for ``padding = "auto"``.

    One shape needs no padding; padding must be possible (`padding_possible`). Then padding saves
    ``S - 1`` compiles (``S`` shapes) and costs, every step, the weights the padded runs multiply beyond
    their real ones: pad iff ``steps * sum_runs (|W_max| - |W_run|) <= COMPILE_WORTH * (S - 1)``, with
    ``|W|`` the number of weights and ``steps`` the training steps (for a flow, ``t1 / dt0``, or 1000 for
    adaptive solves). This is a model fitted to CPU measurements (`COMPILE_WORTH`); set ``padding``
    explicitly where you know better (on a GPU extra work is cheap and compiles are dear: pad).
    """
    distinct = set(shapes)
    if len(distinct) <= 1:
        return "per-shape"
    ok, _ = padding_possible(cfg)
    if not ok:
        return "per-shape"
    big = _cost(_padded_shape(shapes))
    if cfg.is_train:
        steps = cfg.dynamics["steps"]
    else:
        dt0 = cfg.dynamics["dt0"]
        steps = cfg.dynamics["t1"] / dt0 if dt0 > 0 else 1000
    extra = steps * sum(big - _cost(s) for s in shapes)
    return "pad" if extra <= COMPILE_WORTH * (len(distinct) - 1) else "per-shape"


def _padded_shape(shapes) -> tuple[int, ...]:
    depth = max(len(s) - 1 for s in shapes)
    width = max(max(s[1:-1]) for s in shapes)
    return (shapes[0][0],) + (width,) * (depth - 1) + (shapes[0][-1],)


def plan(cfg: SweepConfig, n_devices: int = 1) -> Plan:
    """The programs and batches of ``cfg`` on ``n_devices`` (the batch size is rounded up to a multiple)."""
    settings = tuple(cfg.run_settings(p) for p in cfg.points())
    shapes = [s["widths"] for s in settings]
    mode = cfg.data["padding"]
    if mode == "auto":
        mode = choose_padding(cfg, shapes)
    if mode == "pad":
        big = _padded_shape(shapes)
        programs = (Program(big, True, tuple(range(len(settings)))),)
    else:
        groups: dict[tuple, list[int]] = {}
        for i, s in enumerate(shapes):
            groups.setdefault(s, []).append(i)
        programs = tuple(Program(s, False, tuple(r)) for s, r in groups.items())
    largest = max(
        len(p.runs) for p in programs
    )  # no batch larger than needed: filler runs cost compute
    bs = int(math.ceil(min(cfg.data["batch_size"], largest) / n_devices) * n_devices)
    return Plan(programs, bs, mode, settings)


# --------------------------------------------------------------------------------------------------
# Building one run
# --------------------------------------------------------------------------------------------------


def make_loss(task: dict, dtype):
    """The loss of ``task`` with its data drawn from ``task.seed`` (the `TASKS` registry)."""
    return TASKS[task["loss"]].make(task, jr.PRNGKey(task["seed"]), dtype)


@partial(jax.jit, static_argnames=("widths", "init", "dtype", "activation", "padded_to"))
def _init(key, scale, *, widths, init, dtype, activation, padded_to) -> tuple[DLN, DLN | None]:
    """One run's initial network (and its live mask, padded to the shape ``padded_to``); one compile per shape."""
    net = INITS[init](key, widths, scale, dtype)
    if not ACTIVATIONS[activation].is_linear:
        net = net.with_activation(ACTIVATIONS[activation])
    if padded_to is None:
        return net, None
    return pad(net, len(padded_to) - 1, max(padded_to[1:-1]))


def _initial_state(
    settings: dict, shape, padded: bool, dtype, activation
) -> tuple[DLN, DLN | None]:
    key_init, _ = jr.split(jr.PRNGKey(settings["seed"]))
    return _init(
        key_init,
        settings["scale"],
        widths=settings["widths"],
        init=settings["init"],
        dtype=dtype,
        activation=activation,
        padded_to=tuple(shape) if padded else None,
    )


def _optimizer(dyn: dict, lr):
    return OPTIMIZERS[dyn["optimizer"]](dyn, lr)


def _flow(cfg: SweepConfig, loss, kappa, beta, depth, live):
    """The run's flow; on a padded network (``live`` not None), masked to its live entries."""
    from .. import flows

    flow = FLOWS[cfg.dynamics["flow"]].make(loss, kappa, beta, depth, cfg.dynamics)
    return flow if live is None else flows.Masked(flow, live)


def _quantity_fns(cfg: SweepConfig, loss, kappa, live, n_layers: int, end_to_end_state: bool):
    """The functions of the state that a run records (``cfg.record["quantities"]``)."""
    rec = cfg.record
    return quantity_fns(
        rec["quantities"],
        loss,
        kappa=kappa,
        live=live,
        n_layers=n_layers,
        sharpness_iterations=rec["sharpness_iterations"],
        end_to_end_state=end_to_end_state,
    )


def _recorded(fns: dict, ys) -> dict:
    """Each quantity of ``fns`` at every saved state ``ys``; NaN where not finite (a failed solve: NaN from
    the failure on)."""
    out = {}
    for q, fn in fns.items():
        v = jax.vmap(fn)(ys)
        out[q] = jnp.where(jnp.isfinite(v), v, jnp.nan)
    return out


def _solve(cfg: SweepConfig, field, y0, **options):
    """`simulate` of ``field`` from ``y0``, saved at the recorded times, with the sweep's ``max_steps`` and
    ``progress`` and the given ``options``."""
    from .._simulate import simulate

    dyn, times = cfg.dynamics, cfg.record["times"]
    return simulate(
        field,
        y0,
        jnp.asarray(times, jnp.result_type(float)),
        max_steps=dyn["max_steps"],
        progress=dyn["progress"],
        **options,
    )


def _run_one(
    cfg: SweepConfig, n_layers: int, depth: int, uses_kappa: bool, loss, inputs: dict
) -> dict:
    """One run (traced under vmap): the recorded quantities and the run's flags."""
    from .._train import train

    dyn, rec = cfg.dynamics, cfg.record
    net0, live = inputs["net0"], inputs.get("live")
    kappa = inputs["kappa"] if uses_kappa else None
    e2e = not cfg.is_train and FLOWS[dyn["flow"]].end_to_end
    fns = _quantity_fns(cfg, loss, kappa, live, n_layers, e2e)
    if cfg.is_train:
        res = train(
            loss,
            net0,
            _optimizer(dyn, inputs["learning_rate"]),
            dyn["steps"],
            every=rec["every"],
            metrics=(),
            metric_fns=fns,
            kappa=kappa,
            divergence_threshold=dyn["divergence_threshold"],
            **({} if live is None else {"mask": live}),
        )
        out = {q: res.history[q] for q in rec["quantities"]}
        out["diverged"], out["diverged_at"] = res.diverged, res.diverged_at
        return out
    flow = _flow(cfg, loss, kappa, inputs["beta"], depth, live)
    y0 = end_to_end(net0) if e2e else net0
    stochastic = isinstance(flow, AbstractStochasticFlow)
    traj = _solve(
        cfg,
        flow,
        y0,
        rtol=dyn["rtol"],
        atol=dyn["atol"],
        dt0=dyn["dt0"] or None,
        key=inputs["noise_key"] if stochastic else None,
    )
    out = _recorded(fns, traj.ys)  # a failed solve: NaN from the failure on, success False
    out["success"] = traj.success
    out["num_steps"] = jnp.asarray(traj.stats["num_steps"], jnp.int32)
    return out


def shared_steps(cfg: SweepConfig) -> bool:
    """Whether every run of a batch takes the same solver steps: a deterministic flow with a constant step ``dt0``."""
    return (
        not cfg.is_train and not FLOWS[cfg.dynamics["flow"]].stochastic and cfg.dynamics["dt0"] > 0
    )


def _run_batch(
    cfg: SweepConfig, n_layers: int, depth: int, uses_kappa: bool, loss, inputs: dict
) -> dict:
    """One batch: ``vmap`` of `_run_one`, or, when the runs share their steps (`shared_steps`), one solve of
    the whole batch as a single ODE whose vector field is the ``vmap`` of the runs' fields.

    The two give the same numbers (each run's arithmetic is unchanged), but ``vmap`` of a Diffrax solve turns
    its while loop into a masked loop over the batch, which on a CPU costs ~3x more per step than the solve
    itself (`benchmarks/sweep_throughput.py`); one loop with an unbatched step counter avoids that.
    """
    one = partial(_run_one, cfg, n_layers, depth, uses_kappa, loss)
    if not shared_steps(cfg):
        return jax.vmap(one)(inputs)
    e2e = FLOWS[cfg.dynamics["flow"]].end_to_end
    live = inputs.get("live")
    per_run = {"kappa": inputs["kappa"], "beta": inputs["beta"], "live": live}

    def field(t, y, args):
        def f(y1, p):
            kappa = p["kappa"] if uses_kappa else None
            return _flow(cfg, loss, kappa, p["beta"], depth, p["live"])(t, y1)

        return jax.vmap(f)(y, per_run)

    y0 = jax.vmap(end_to_end)(inputs["net0"]) if e2e else inputs["net0"]
    traj = _solve(cfg, field, y0, dt0=cfg.dynamics["dt0"])
    ys = jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1), traj.ys)  # (run, time, ...)

    def record(y, p):
        kappa = p["kappa"] if uses_kappa else None
        out = _recorded(_quantity_fns(cfg, loss, kappa, p["live"], n_layers, e2e), y)
        finite = jnp.all(
            jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(y)])
        )
        # a run that blew up fails alone (the batch's own flag would fail them all); the others are unaffected
        out["success"] = (traj.result == dfx.RESULTS.successful) & finite
        out["num_steps"] = jnp.asarray(traj.stats["num_steps"], jnp.int32)
        return out

    return jax.vmap(record)(ys, per_run)


# --------------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------------


def provenance(devices=None) -> dict:
    """Package versions, the git commit of dlnjax's source tree, and the devices (default: ``jax.devices()``)."""
    import importlib.metadata as md

    versions = {"python": sys.version.split()[0]}
    for pkg in (
        "dlnjax",
        "jax",
        "jaxlib",
        "diffrax",
        "equinox",
        "lineax",
        "optax",
        "numpy",
        "xarray",
        "zarr",
    ):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = "not installed"
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=Path(__file__).resolve().parent,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    devices = jax.devices() if devices is None else devices
    return {
        "versions": versions,
        "git_commit": commit,
        "device_kind": devices[0].device_kind,
        "platform": devices[0].platform,
        "n_devices": len(devices),
        "n_processes": jax.process_count(),
    }


# --------------------------------------------------------------------------------------------------
# The template of the store
# --------------------------------------------------------------------------------------------------


def _dims(cfg: SweepConfig, plan: Plan) -> dict:
    n_layers = max(len(s["widths"]) - 1 for s in plan.settings)
    widths = plan.settings[0]["widths"]
    n_singular = min(widths[0], widths[-1])
    if cfg.is_train:
        traj_dim, traj = (
            "step",
            np.arange(0, cfg.dynamics["steps"] + 1, cfg.record["every"], dtype=np.int64),
        )
    else:
        traj_dim, traj = "time", np.asarray(cfg.record["times"], np.float64)
    return {"n_layers": n_layers, "n_singular": n_singular, "traj_dim": traj_dim, "traj": traj}


def _template(cfg: SweepConfig, plan: Plan, meta: dict):
    import xarray as xr

    dims = _dims(cfg, plan)
    n_slots = len(plan.batches) * plan.batch_size
    T = len(dims["traj"])
    fdtype = np.float32 if cfg.data["dtype"] == "float32" else np.float64
    variables = {"grid_index": (("slot",), plan.grid_index)}
    for q in cfg.record["quantities"]:
        extra_dims, extra = quantity_shape(q, dims["n_layers"], dims["n_singular"])
        variables[q] = (
            ("slot", dims["traj_dim"]) + extra_dims,
            np.full((n_slots, T) + extra, np.nan, fdtype),
        )
    if cfg.is_train:
        variables["diverged"] = (("slot",), np.zeros(n_slots, bool))
        variables["diverged_at"] = (("slot",), np.full(n_slots, -1, np.int32))
    else:
        variables["success"] = (("slot",), np.zeros(n_slots, bool))
        variables["num_steps"] = (("slot",), np.zeros(n_slots, np.int32))
    coords = {dims["traj_dim"]: dims["traj"]}
    if "layer_norms" in cfg.record["quantities"]:
        coords["layer"] = np.arange(1, dims["n_layers"] + 1)
    if "singular_values" in cfg.record["quantities"]:
        coords["index"] = np.arange(1, dims["n_singular"] + 1)
    attrs = {
        "name": cfg.data["name"],
        "config_toml": cfg.source,
        "config": cfg.to_json(),
        "grid": json.dumps([[a, v] for a, v in cfg.grid.items()]),
        "grid_axes": json.dumps(list(cfg.grid)),
        "quantities": json.dumps(cfg.record["quantities"]),
        "trajectory_dim": dims["traj_dim"],
        "padding": plan.padding,
        "batch_size": plan.batch_size,
        "versions": json.dumps(meta["versions"], sort_keys=True),
        "git_commit": meta["git_commit"],
        "platform": meta["platform"],
    }
    return xr.Dataset(variables, coords=coords, attrs=attrs)


# --------------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------------


def _first_difference(a, b, prefix="") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k, "<absent>") != b.get(k, "<absent>"):
                return _first_difference(
                    a.get(k, "<absent>"), b.get(k, "<absent>"), f"{prefix}.{k}" if prefix else k
                )
    return f"{prefix}: {a!r} (stored) != {b!r} (given)"


def run(
    cfg: SweepConfig,
    out: str | Path,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    devices=None,
):
    """Run the sweep ``cfg`` into the directory ``out`` and return its Dataset (`dlnjax.load`).

    ``devices``: the devices whose mesh the batch axis is sharded over (default: ``jax.devices()``, all
    devices of the default backend; e.g. ``jax.devices("cpu")`` to run on the host of a GPU machine).

    Resumes when ``out`` already holds this sweep: finished batches are kept, the others run. Raises
    `ConfigError` (field ``"out"``) if ``out`` holds a different sweep. Runs that diverge (training) or
    whose solve fails (flows) are flagged in ``diverged`` / ``success`` with NaN after the failure; they
    are counted in the log, never hidden. A realization config (``task.loss = "realization"``) runs its fits of
    linear state-space models instead (`dlnjax.sweep._realization`), with the same store and conventions.
    """
    from ._store import load

    if cfg.task["loss"] == "realization":  # linear state-space models (`_realization.py`)
        from ._realization import run_realization

        return run_realization(cfg, out, progress=progress, log=log, devices=devices)
    say = log or (lambda msg: logger.info(msg))
    out = Path(out)
    go = launch(cfg, out, plan, _template, devices)
    the_plan, devices, meta, todo = go.plan, go.devices, go.meta, go.todo
    batched, replicated, batches = go.batched, go.replicated, the_plan.batches
    say(
        f"sweep {cfg.data['name']!r}: {cfg.n_runs} runs in {len(batches)} batches of {the_plan.batch_size} "
        f"({len(the_plan.programs)} program(s), padding: {the_plan.padding}) on {len(devices)} x {meta['device_kind']}; "
        f"{len(batches) - len(todo)} batches already done"
    )

    dtype = _dtype(cfg)
    loss_arrays, loss_static = eqx.partition(make_loss(cfg.task, dtype), eqx.is_array)
    loss_arrays = _to_global(loss_arrays, replicated)
    dims = _dims(cfg, the_plan)
    uses_kappa = "kappa" in cfg.grid or cfg.dynamics["kappa"] > 0
    compiled: dict[int, Callable] = {}

    bar = go.progress_bar(cfg, progress)
    n_bad = 0
    try:
        for b in todo:
            p, start, runs = batches[b]
            prog = the_plan.programs[p]
            t0 = time.perf_counter()
            if p not in compiled:
                compiled[p] = _program(
                    cfg, dims, prog, uses_kappa, loss_static, replicated, batched
                )
            inputs = _batch_inputs(cfg, the_plan, prog, runs, dtype)
            result = _gather(compiled[p](loss_arrays, _to_global(inputs, batched)))
            flag = result["diverged"] if "diverged" in result else ~result["success"]
            n_bad += int(np.sum(flag[: len(runs)]))
            go.write(b, result, t0)
            bar.update(1)
    finally:
        bar.close()
    what = "diverged" if cfg.is_train else "failed (solver)"
    say(
        f"sweep {cfg.data['name']!r} finished: {out}; {n_bad} run(s) {what} in this session"
        if todo
        else f"sweep {cfg.data['name']!r}: nothing to do, all batches were done"
    )
    return load(out)


@dataclasses.dataclass
class Launch:
    """A sweep being run (`launch`): its store, plan, devices and their shardings (batch axis, replicated),
    provenance, whether this process writes, and the batches still to run."""

    store: Store
    plan: Plan
    devices: list
    batched: jax.sharding.NamedSharding
    replicated: jax.sharding.NamedSharding
    meta: dict
    writer: bool
    todo: list[int]

    def progress_bar(self, cfg: SweepConfig, progress: bool):
        """A bar over the batches on a terminal; elsewhere (a log, CI, Jupyter) a line every few seconds."""
        from .._progress import progress_bar

        n = len(self.plan.batches)
        return progress_bar(
            n, initial=n - len(self.todo), unit="batch", desc=cfg.data["name"], disable=not progress
        )

    def write(self, b: int, result: dict, t0: float) -> None:
        """Write batch ``b``'s ``result`` (host arrays) and its marker (started at ``t0``); process 0 only."""
        if not self.writer:
            return
        _, start, _ = self.plan.batches[b]
        marker = {
            "device_kind": self.meta["device_kind"],
            "n_devices": len(self.devices),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        data = {k: np.asarray(v) for k, v in result.items()}
        self.store.write_batch(b, start, start + self.plan.batch_size, data, marker)


def launch(cfg: SweepConfig, out: Path, make_plan, make_template, devices=None) -> Launch:
    """Open (or create, from ``make_template(cfg, plan, meta)``) the store of ``cfg`` at ``out``, the mesh over
    ``devices`` (default: all) and ``make_plan(cfg, n_devices)``; `ConfigError` if ``out`` holds another sweep."""
    store, stored = _open_store(cfg, out)
    devices = list(jax.devices() if devices is None else devices)
    mesh = jax.sharding.Mesh(np.asarray(devices), ("runs",))
    batched = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("runs"))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    the_plan = make_plan(cfg, len(devices))
    meta = provenance(devices)
    writer = jax.process_index() == 0
    if stored is None and writer:
        store.create(
            make_template(cfg, the_plan, meta), cfg.to_json(), cfg.source, the_plan.batch_size
        )
    done = store.done()
    todo = [b for b in range(len(the_plan.batches)) if b not in done]
    return Launch(store, the_plan, devices, batched, replicated, meta, writer, todo)


def _open_store(cfg: SweepConfig, out: Path):
    """The store at ``out`` and the config it holds (``None``: new); `ConfigError` if it holds another sweep."""
    store = Store(out)
    stored = store.stored_config()
    if stored is not None and stored != cfg.data:
        raise ConfigError(
            "out",
            f"{out} already holds a different sweep ({_first_difference(stored, cfg.data)}); use another --out or delete it",
        )
    return store, stored


def _dtype(cfg: SweepConfig):
    dtype = jnp.float32 if cfg.data["dtype"] == "float32" else jnp.float64
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise ConfigError(
            "dtype",
            'float64 needs jax_enable_x64 (the dlnjax CLI enables it); call jax.config.update("jax_enable_x64", True) first',
        )
    return dtype


def _program(cfg: SweepConfig, dims, prog: Program, uses_kappa, loss_static, replicated, batched):
    """The compiled function of one program: loss arrays and a batch of inputs -> the batch's results."""
    batch_fn = partial(_run_batch, cfg, dims["n_layers"], len(prog.shape) - 1, uses_kappa)
    fn = lambda arrays, inputs: batch_fn(eqx.combine(arrays, loss_static), inputs)
    return jax.jit(fn, in_shardings=(replicated, batched), out_shardings=batched)


def _to_global(tree, sharding):
    """Host arrays -> global arrays with ``sharding``; each process supplies its own devices' shards (multi-host safe)."""

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree_util.tree_map(put, tree)


def _gather(tree):
    """Global arrays -> host numpy arrays on every process."""
    if jax.process_count() > 1:  # pragma: no cover - multi-host only
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


# under plain names, shared with the realization task (``_realization.py``)
to_global, gather, sweep_dtype = _to_global, _gather, _dtype


def _batch_inputs(cfg: SweepConfig, the_plan: Plan, prog: Program, runs, dtype) -> dict:
    """The stacked per-run inputs of one batch (filled up to the batch size by repeating the last run)."""
    runs = list(runs) + [runs[-1]] * (the_plan.batch_size - len(runs))
    nets, lives = [], []
    for i in runs:
        s = the_plan.settings[i]
        net, live = _initial_state(s, prog.shape, prog.padded, dtype, cfg.network["activation"])
        nets.append(net)
        lives.append(live)
    stack = lambda trees: jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)
    real = jnp.zeros((), dtype).real.dtype
    inputs = {
        "net0": stack(nets),
        "learning_rate": jnp.asarray([the_plan.settings[i]["learning_rate"] for i in runs], real),
        "kappa": jnp.asarray([the_plan.settings[i]["kappa"] for i in runs], real),
        "beta": jnp.asarray([the_plan.settings[i]["beta"] for i in runs], real),
        "noise_key": jnp.stack(
            [jr.split(jr.PRNGKey(the_plan.settings[i]["seed"]))[1] for i in runs]
        ),
    }
    if prog.padded:
        inputs["live"] = stack(lives)
    return inputs
