"""Learning the initialization scale and ``kappa`` by gradient descent through the flow (issue 6; docs/theory.md §5).

Matrix completion (`dlnjax.losses.MatrixCompletion`, Arora, Cohen, Hu & Luo 2019): a random rank-``rank``
``size x size`` matrix ``M`` with ``||M||_F = norm``, ``n_observed`` entries observed with additive Gaussian noise
of standard deviation ``noise``. A depth-``depth`` network of width ``size`` starts at
``net0 = dlnjax.gaussian(key, widths, scale)`` (a fixed key: ``net0 = scale * base``) and follows the regularized
weight flow ``dW/dt = -grad_W E - kappa W`` (`dlnjax.flows.Regularized`) for a fixed time ``horizon``. The outcome
is the test error ``||X(T) - M||_F / ||M||_F`` of the final end-to-end matrix (``loss.test_error``).

Small initializations bias the flow toward low rank (docs/theory.md §5), but the smaller the scale the longer the
plateau before anything is learned, so at a fixed horizon the best scale is interior; ``kappa`` trades the
noise fitted (and the initialization left on the unobserved entries) against shrinkage. (Without noise the best
``kappa`` here is 0.) The test error is the oracle objective of this experiment, on purpose; in practice it would
be the error on held-out entries.

Two searches over ``theta = (log scale, log kappa)``, each given the same number of solves:

- *gradient descent*: Adam (`optax.adam`, cosine-decayed step) on ``theta`` with ``jax.value_and_grad`` through
  `dlnjax.simulate` (reverse mode, the default ``RecursiveCheckpointAdjoint``). One solve = one value-and-gradient
  evaluation; ``budget`` solves evaluate ``theta_0, ..., theta_{budget-1}``; we report the best evaluated point and
  the last one.
- *grid search*: nested ``k x k`` grids (``k = 2, 3, 5, ..., 2^levels + 1``) of the box ``scale_range x kappa_range``,
  log-spaced; one solve = one forward evaluation (all points of the finest grid in one vmapped program).

A value-and-gradient solve costs several forward solves, so we also report the wall times and the grid matched to
the gradient method's time. The solver is Tsit5 with a constant step ``horizon / steps``: the computed test error is
then a smooth function of ``theta`` whose derivative reverse mode computes exactly (`tests/test_gradients.py`), which
we check against central finite differences; its distance to the exact flow is checked against an adaptive solve.

`run` writes ``landscape.png`` (the test error over the finest grid, the gradient-descent path on it),
``convergence.png`` (best test error against the number of solves and against wall time), the tables ``grid.csv``,
``path.csv``, ``budget.csv``, ``init_scale_tuning.npz`` (also the problem data: observed entries, truth, ``base``)
and ``summary.txt``/``summary.json``. Float64 (the ``dlnjax`` CLI enables it).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import dlnjax
from dlnjax.flows import Regularized

from .._errors import OptionError
from ._common import Session, figure, pick_config, save_figure, start, write_csv
from ._summary import summary_head, wall_times

__all__ = [
    "Config",
    "DEFAULT",
    "QUICK",
    "problem",
    "outcome",
    "value_and_grad",
    "grid_axes",
    "grid_search",
    "gradient_descent",
    "plot_landscape",
    "plot_convergence",
    "run",
]


@dataclasses.dataclass(frozen=True)
class Config:
    # the problem
    size: int = 20
    rank: int = 2
    n_observed: int = 120
    depth: int = 3
    norm: float = 20.0  # ||M||_F: entries of root-mean-square norm / size = 1
    noise: float = 0.1  # standard deviation of the observation noise
    # the flow
    horizon: float = 1000.0
    steps: int = 600  # constant Tsit5 steps on [0, horizon]
    # the searches
    scale_range: tuple[float, float] = (3e-3, 0.3)
    kappa_range: tuple[float, float] = (1e-5, 1e-2)
    levels: int = 4  # finest grid: (2^levels + 1)^2 points; nested grids 2x2, 3x3, 5x5, ...
    budget: int = 25  # solves of each search (gradient descent: value-and-gradient solves)
    start: tuple[float, float] = (0.2, 1e-4)  # (scale, kappa) where gradient descent starts
    learning_rate: float = 0.3  # Adam on (log scale, log kappa), cosine-decayed to a tenth
    momentum: float = 0.5  # Adam's b1 (0.9 overshoots in the flat valley of kappa)
    # checks
    fd_step: float = 1e-4  # central finite differences in log scale and log kappa
    gap_tolerance: float = (
        0.05  # gradient descent's best within 5% of the solve-matched grid's best
    )
    gradient_drop: float = (
        0.1  # |grad| at gradient descent's best <= this times |grad| at the start
    )


DEFAULT = Config()
QUICK = Config(
    size=12,
    n_observed=80,
    norm=12.0,
    horizon=500.0,
    steps=250,
    levels=3,
    budget=9,
    learning_rate=0.5,
)


def _widths(cfg: Config) -> tuple[int, ...]:
    return (cfg.size,) * (cfg.depth + 1)


def problem(key, cfg: Config):
    """``(loss, base)``: the noisy matrix-completion loss (its ``truth`` the noise-free ``M``) and the unit-scale
    Gaussian network ``base = dlnjax.gaussian(key, widths, 1)``, so that ``gaussian(key, widths, s) = s * base``."""
    kl, kz, kn = jr.split(key, 3)
    loss = dlnjax.losses.MatrixCompletion.random(
        kl, (cfg.size, cfg.size), cfg.rank, cfg.n_observed, norm=cfg.norm
    )
    noisy = loss.values + cfg.noise * jr.normal(kz, loss.values.shape, loss.values.dtype)
    loss = eqx.tree_at(lambda l: l.values, loss, noisy)
    return loss, dlnjax.gaussian(kn, _widths(cfg), 1.0)


def _ts(cfg: Config):
    return jnp.array([0.0, cfg.horizon])


def outcome(theta, loss, base, cfg: Config, *, adaptive: bool = False):
    """``(test error, (training loss, success))`` of the flow from ``exp(theta[0]) * base`` with
    ``kappa = exp(theta[1])``: Tsit5 with ``cfg.steps`` constant steps, or adaptive (``rtol = 1e-10``)."""
    log_scale, log_kappa = theta[0], theta[1]
    net0 = jax.tree_util.tree_map(lambda w: jnp.exp(log_scale) * w, base)
    flow = Regularized(loss, jnp.exp(log_kappa))
    if adaptive:
        traj = dlnjax.simulate(flow, net0, _ts(cfg), rtol=1e-10, atol=1e-12)
    else:
        traj = dlnjax.simulate(
            flow,
            net0,
            _ts(cfg),
            solver=dfx.Tsit5(),
            dt0=cfg.horizon / cfg.steps,
            stepsize_controller=dfx.ConstantStepSize(),
            max_steps=cfg.steps + 2,
        )
    X = dlnjax.end_to_end(traj[-1])
    return loss.test_error(X), (loss(X), traj.success)


value_and_grad = jax.jit(jax.value_and_grad(outcome, has_aux=True), static_argnums=3)
"""``((test error, (training loss, success)), d test error / d theta)``; one reverse-mode solve, jitted."""
_forward = jax.jit(outcome, static_argnums=3)
_forward_batch = jax.jit(jax.vmap(outcome, in_axes=(0, None, None, None)), static_argnums=3)
_adaptive_batch = jax.jit(
    jax.vmap(
        lambda th, l, b, c: outcome(th, l, b, c, adaptive=True), in_axes=(0, None, None, None)
    ),
    static_argnums=3,
)


def grid_axes(cfg: Config):
    """``(log scales, log kappas)`` of the finest grid, ``2^levels + 1`` log-spaced points per axis."""
    k = 2**cfg.levels + 1
    return (np.linspace(*np.log(cfg.scale_range), k), np.linspace(*np.log(cfg.kappa_range), k))


def _nested(cfg: Config):
    """Points per axis of the nested grids, coarsest first: 2, 3, 5, ..., 2^levels + 1; and their strides."""
    return [(2**j + 1, 2 ** (cfg.levels - j)) for j in range(cfg.levels + 1)]


def grid_search(loss, base, cfg: Config) -> dict:
    """The test error at every point of the finest grid (one vmapped program) and the wall time it took."""
    ls, lk = grid_axes(cfg)
    thetas = jnp.asarray(np.stack(np.meshgrid(ls, lk, indexing="ij"), axis=-1).reshape(-1, 2))
    compiled = _forward_batch.lower(thetas, loss, base, cfg).compile()
    t0 = time.perf_counter()
    err, (train, ok) = jax.block_until_ready(compiled(thetas, loss, base))
    seconds = time.perf_counter() - t0
    k = ls.size
    return {
        "log_scales": ls,
        "log_kappas": lk,
        "test_error": np.asarray(err).reshape(k, k),
        "train_loss": np.asarray(train).reshape(k, k),
        "success": np.asarray(ok).reshape(k, k),
        "seconds": seconds,
    }


def _grid_best(grid: dict, stride: int):
    """``(i, j, test error)`` of the best point of the nested grid of that stride (indices into the finest grid)."""
    e = grid["test_error"][::stride, ::stride]
    e = np.where(np.isfinite(e), e, np.inf)
    i, j = np.unravel_index(np.argmin(e), e.shape)
    return int(i * stride), int(j * stride), float(e[i, j])


def gradient_descent(loss, base, cfg: Config, say=lambda msg: None) -> dict:
    """Adam on ``theta = (log scale, log kappa)`` from ``cfg.start``: ``cfg.budget`` value-and-gradient solves
    (``theta_0 .. theta_{budget-1}``), each timed (wall clock, after compiling)."""
    theta = jnp.log(jnp.asarray(cfg.start, float))
    jax.block_until_ready(value_and_grad(theta, loss, base, cfg))  # compile
    opt = optax.adam(
        optax.cosine_decay_schedule(cfg.learning_rate, max(cfg.budget - 1, 1), alpha=0.1),
        b1=cfg.momentum,
    )
    state = opt.init(theta)
    rows = {k: [] for k in ("theta", "test_error", "train_loss", "grad", "success", "elapsed")}
    t0 = time.perf_counter()
    for i in range(cfg.budget):
        (err, (train, ok)), g = jax.block_until_ready(value_and_grad(theta, loss, base, cfg))
        rows["elapsed"].append(time.perf_counter() - t0)
        for k, v in zip(
            ("theta", "test_error", "train_loss", "grad", "success"), (theta, err, train, g, ok)
        ):
            rows[k].append(np.asarray(v))
        say(
            f"  solve {i + 1:3d}: scale {math.exp(theta[0]):.4g}, kappa {math.exp(theta[1]):.3g}, test error {float(err):.4f}, "
            f"grad ({float(g[0]):+.2e}, {float(g[1]):+.2e})"
        )
        if i + 1 < cfg.budget:
            g = jnp.where(
                jnp.isfinite(g), g, 0.0
            )  # a failed solve gives no direction (and is reported)
            updates, state = opt.update(g, state)
            theta = optax.apply_updates(theta, updates)
    return {k: np.asarray(v) for k, v in rows.items()}


def _finite_differences(theta, loss, base, cfg: Config):
    """Central differences of the test error in each coordinate of ``theta`` (step ``cfg.fd_step``), and the
    wall time of one forward solve (the mean over the last three of the four calls)."""
    theta = np.asarray(theta, float)
    out, times = [], []
    for c in range(2):
        e = np.zeros(2)
        e[c] = cfg.fd_step
        vals = []
        for sign in (1.0, -1.0):
            t0 = time.perf_counter()
            vals.append(
                float(
                    jax.block_until_ready(_forward(jnp.asarray(theta + sign * e), loss, base, cfg))[
                        0
                    ]
                )
            )
            times.append(time.perf_counter() - t0)
        out.append((vals[0] - vals[1]) / (2 * cfg.fd_step))
    return np.array(out), float(np.mean(times[1:]))


def plot_landscape(grid: dict, path: dict, best: dict):
    """log10 test error over the finest grid (axes log10 scale, log10 kappa), the gradient-descent path on it."""
    fig, ax = figure(6.4, 5.0, 1)
    a = ax[0]
    ls, lk = grid["log_scales"] / np.log(10), grid["log_kappas"] / np.log(10)
    z = np.log10(np.where(np.isfinite(grid["test_error"]), grid["test_error"], np.nan))
    cs = a.contourf(ls, lk, z.T, levels=16, cmap="viridis")
    fig.colorbar(cs, ax=a, label="log10 test error")
    best_err = np.nanmin(grid["test_error"])
    a.contour(
        ls,
        lk,
        grid["test_error"].T,
        levels=[1.05 * best_err],
        colors="white",
        linestyles="--",
        linewidths=1,
    )
    a.plot(
        [], [], "--", color="white", label="within 5% of the grid's best"
    )  # the contour's legend entry
    S, K = np.meshgrid(ls, lk, indexing="ij")
    a.plot(S.ravel(), K.ravel(), ".", color="0.85", ms=3, label="finest grid")
    th = path["theta"] / np.log(10)
    a.plot(th[:, 0], th[:, 1], "-o", color="tab:red", ms=3, lw=1, label="gradient descent")
    a.plot(*th[0], "s", color="tab:red", ms=7, mfc="none", label="start")
    for name, (x, y), m, c in best:
        a.plot(np.log10(x), np.log10(y), m, color=c, ms=11, mfc="none", mew=2, label=name)
    a.set(
        xlabel="log10 init scale",
        ylabel="log10 kappa",
        title="test error after the flow; gradient-descent path",
    )
    a.legend(fontsize=7, loc="lower left", facecolor="0.6", framealpha=0.8)
    return fig


def plot_convergence(budget_rows: list):
    """Best test error found against the number of solves and against wall time, for both searches."""
    fig, ax = figure(10, 3.8, 2)
    for method, style in (("gradient descent", "-"), ("grid", "o--")):
        r = [row for row in budget_rows if row[0] == method]
        n, e, t = (np.array([row[k] for row in r]) for k in (1, 2, 3))
        ax[0].loglog(
            n, e, style, label=method, drawstyle="steps-post" if method != "grid" else "default"
        )
        ax[1].loglog(
            t, e, style, label=method, drawstyle="steps-post" if method != "grid" else "default"
        )
    ax[0].set(
        xlabel="solves (gradient descent: value-and-gradient solves)",
        ylabel="best test error so far",
        title="given the same number of solves",
    )
    ax[1].set(
        xlabel="wall time, s (grid: solves x one forward solve)",
        ylabel="best test error so far",
        title="given the same time",
    )
    for a in ax:
        a.legend(fontsize=8)
    return fig


def _text(s: dict) -> str:
    c = s["config"]
    lines = summary_head(
        s,
        "learn the initialization scale and kappa through the flow (issue 6, docs/theory.md §5)",
    )
    lines += [
        f"matrix completion {c['size']}x{c['size']}, rank {c['rank']}, {c['n_observed']} observed entries (noise std {c['noise']:g}, "
        f"||M||_F = {c['norm']:g}), depth {c['depth']}, seed {s['seed']}",
        f"flow: Regularized(loss, kappa) from gaussian(key, widths, scale) on [0, {c['horizon']:g}], Tsit5, {c['steps']} constant steps",
        f"objective: test error ||X(T) - M||_F / ||M||_F; search box scale {c['scale_range']}, kappa {c['kappa_range']}",
        "",
        "cost: one solve = one forward solve (grid) or one value-and-gradient solve (gradient descent)",
        f"    one forward solve {s['seconds_forward']:.3f} s; one value-and-gradient solve {s['seconds_value_and_grad']:.3f} s "
        f"({s['cost_ratio']:.1f} forward solves); the finest grid, vmapped: {s['seconds_grid_per_point']:.3f} s a point",
        f"    time-matched: gradient descent's {c['budget']} solves took the time of {s['affordable_forward_solves']:.0f} forward solves; "
        "the time-matched grid is the largest nested grid within that (at most the finest)",
        "",
        f"    {'method':<34}{'solves':>7}{'time s':>9}{'scale':>10}{'kappa':>10}{'test error':>12}",
    ]
    for r in s["results"]:
        lines.append(
            f"    {r['method']:<34}{r['solves']:>7}{r['seconds']:>9.2f}{r['scale']:>10.4g}{r['kappa']:>10.3g}{r['test_error']:>12.5f}"
        )
    g = s["gradient"]
    lines += [
        "",
        f"gradient descent: Adam, step {c['learning_rate']:g} (cosine decay to a tenth), from scale {c['start'][0]:g}, kappa {c['start'][1]:g} "
        f"(test error {s['start_test_error']:.4f})",
        f"    gradient (d/dlog scale, d/dlog kappa): at the start ({g['start'][0]:+.3e}, {g['start'][1]:+.3e}); "
        f"at the best point ({g['best'][0]:+.3e}, {g['best'][1]:+.3e}); |grad| ratio {g['ratio']:.3f}",
        f"    finite differences at the start (step {c['fd_step']:g}): ({g['fd'][0]:+.3e}, {g['fd'][1]:+.3e}); "
        f"relative error {g['fd_error']:.1e}",
        f"    best against the solve-matched grid: {s['gap_matched']:+.1%}; against the time-matched grid: {s['gap_time_matched']:+.1%}; "
        f"against the finest grid ({s['finest_solves']} solves): {s['gap_finest']:+.1%}",
        f"discretization: test error with {c['steps']} constant steps vs an adaptive solve (rtol 1e-10): "
        + ", ".join(f"{k} {v:.1e}" for k, v in s["discretization"].items()),
        "",
        wall_times(s),
    ]
    return "\n".join(lines) + "\n"


def run(
    out: str | Path = "results/init-scale-tuning",
    *,
    quick: bool = False,
    seed: int = 0,
    config: Config | None = None,
    log: Callable[[str], None] | None = None,
) -> int:
    """Run both searches, write into ``out``, return 0 (or 1 if a check fails; the summary says which)."""
    cfg = pick_config(config, quick, DEFAULT, QUICK)
    nested = _nested(cfg)
    if cfg.budget not in [k * k for k, _ in nested]:
        raise OptionError(
            f"init-scale-tuning: budget {cfg.budget} must be the size of a nested grid: {[k * k for k, _ in nested]}."
        )
    session = start("init-scale-tuning", out, seed, log)
    loss, base = problem(jr.PRNGKey(seed), cfg)
    grid = _grid_stage(session, loss, base, cfg)
    path = _descent_stage(session, loss, base, cfg)
    with session.timed(
        "checks", "checks: finite differences at the start, adaptive solves at the best points"
    ):
        c = _compare(loss, base, cfg, grid, path, nested)
    _write_arrays(session.out, grid, path, c, loss, base)
    session.say("figures")
    _write_figures(session.out, cfg, grid, path, c)
    results = _results(cfg, grid, path, c)
    return session.finish(
        _problems(cfg, grid, path, c), dataclasses.asdict(cfg), results, _text, total=False
    )


def _grid_stage(session: Session, loss, base, cfg: Config) -> dict:
    """`grid_search` (timed with its compilation), written to ``grid.csv``."""
    with session.timed(
        "grid search (with compiling)",
        f"grid search: {(2**cfg.levels + 1) ** 2} forward solves (vmapped)",
    ):
        grid = grid_search(loss, base, cfg)
    _write_grid(session.out, grid)
    return grid


def _descent_stage(session: Session, loss, base, cfg: Config) -> dict:
    """`gradient_descent` (timed with its compilation) and its best test error so far, written to ``path.csv``."""
    with session.timed(
        "gradient descent (with compiling)",
        f"gradient descent: {cfg.budget} value-and-gradient solves",
    ):
        path = gradient_descent(loss, base, cfg, session.say)
    path["best_so_far"] = np.minimum.accumulate(
        np.where(np.isfinite(path["test_error"]), path["test_error"], np.inf)
    )
    _write_path(session.out, path, cfg)
    return path


def _write_grid(out: Path, grid: dict) -> None:
    """``grid.csv``: every point of the finest grid."""
    ls, lk = grid["log_scales"], grid["log_kappas"]
    write_csv(
        out / "grid.csv",
        ["i_scale", "i_kappa", "scale", "kappa", "test_error", "train_loss", "success"],
        [
            (
                i,
                j,
                float(np.exp(ls[i])),
                float(np.exp(lk[j])),
                float(grid["test_error"][i, j]),
                float(grid["train_loss"][i, j]),
                int(grid["success"][i, j]),
            )
            for i in range(ls.size)
            for j in range(lk.size)
        ],
    )


def _write_path(out: Path, path: dict, cfg: Config) -> None:
    """``path.csv``: every value-and-gradient solve of gradient descent."""
    write_csv(
        out / "path.csv",
        [
            "solve",
            "scale",
            "kappa",
            "test_error",
            "train_loss",
            "grad_log_scale",
            "grad_log_kappa",
            "best_so_far",
            "elapsed_s",
            "success",
        ],
        [
            (
                i + 1,
                float(np.exp(path["theta"][i, 0])),
                float(np.exp(path["theta"][i, 1])),
                float(path["test_error"][i]),
                float(path["train_loss"][i]),
                float(path["grad"][i, 0]),
                float(path["grad"][i, 1]),
                float(path["best_so_far"][i]),
                float(path["elapsed"][i]),
                int(path["success"][i]),
            )
            for i in range(cfg.budget)
        ],
    )


def _compare(loss, base, cfg: Config, grid: dict, path: dict, nested) -> dict:
    """The searches at matched cost (solves, time; ``budget_rows``) and what the checks need: the gradient
    by finite differences at the start, adaptive solves at the best points (``discretization``)."""
    ls, lk = grid["log_scales"], grid["log_kappas"]
    c: dict = {
        "best_i": int(
            np.nanargmin(np.where(np.isfinite(path["test_error"]), path["test_error"], np.inf))
        )
    }
    c["fd"], c["sec_fwd"] = _finite_differences(path["theta"][0], loss, base, cfg)
    c["sec_vg"] = (
        float(np.mean(np.diff(path["elapsed"]))) if cfg.budget > 1 else float(path["elapsed"][0])
    )
    matched_stride = next(s for k, s in nested if k * k == cfg.budget)
    c["matched"], c["finest"] = _grid_best(grid, matched_stride), _grid_best(grid, 1)
    c["gd_seconds"] = float(path["elapsed"][-1])
    c["affordable"] = c["gd_seconds"] / c["sec_fwd"]  # forward solves in gradient descent's time
    c["time_k"], time_stride = max(
        ((k, s) for k, s in nested if k * k <= c["affordable"]), default=nested[0]
    )
    c["time_matched"] = _grid_best(grid, time_stride)
    c["budget_rows"] = [
        ("gradient descent", i + 1, float(path["best_so_far"][i]), float(path["elapsed"][i]))
        for i in range(cfg.budget)
    ]
    c["budget_rows"] += [
        ("grid", k * k, _grid_best(grid, s)[2], k * k * c["sec_fwd"]) for k, s in nested
    ]
    (gi, gj, g_err), (fi, fj, f_err) = c["matched"], c["finest"]
    c["best_theta"] = path["theta"][c["best_i"]]
    pts = jnp.asarray(np.array([c["best_theta"], [ls[gi], lk[gj]], [ls[fi], lk[fj]]]))
    adaptive, (_, c["adaptive_ok"]) = jax.block_until_ready(_adaptive_batch(pts, loss, base, cfg))
    constant = [float(path["test_error"][c["best_i"]]), g_err, f_err]
    c["discretization"] = {
        name: abs(float(a) - v) / v
        for name, a, v in zip(
            ("gradient descent's best", "matched grid's best", "finest grid's best"),
            np.asarray(adaptive),
            constant,
        )
    }
    return c


def _write_arrays(out: Path, grid: dict, path: dict, c: dict, loss, base) -> None:
    """``budget.csv`` (best test error against solves and time, both searches) and ``init_scale_tuning.npz``
    (the grid, the path, the finite differences and the problem data)."""
    write_csv(
        out / "budget.csv", ["method", "solves", "best_test_error", "seconds"], c["budget_rows"]
    )
    np.savez(
        out / "init_scale_tuning.npz",
        log_scales=grid["log_scales"],
        log_kappas=grid["log_kappas"],
        grid_test_error=grid["test_error"],
        grid_train_loss=grid["train_loss"],
        grid_success=grid["success"],
        path_theta=path["theta"],
        path_test_error=path["test_error"],
        path_train_loss=path["train_loss"],
        path_grad=path["grad"],
        path_elapsed=path["elapsed"],
        final_theta=path["theta"][-1],
        best_theta=c["best_theta"],
        fd_gradient=c["fd"],
        rows=np.asarray(loss.rows),
        cols=np.asarray(loss.cols),
        values=np.asarray(loss.values),
        truth=np.asarray(loss.truth),
        base_layers=np.stack([np.asarray(w) for w in base.layers]),
    )


def _write_figures(out: Path, cfg: Config, grid: dict, path: dict, c: dict) -> None:
    """``landscape.png`` (with the best points of both searches) and ``convergence.png``."""
    ls, lk = grid["log_scales"], grid["log_kappas"]
    (gi, gj, _), (fi, fj, _) = c["matched"], c["finest"]
    k_m = int(round(math.sqrt(cfg.budget)))
    best_marks = [
        ("gradient descent's best", np.exp(c["best_theta"]), "*", "tab:red"),
        (f"grid {k_m}x{k_m} best", np.exp([ls[gi], lk[gj]]), "D", "tab:orange"),
        (f"grid {ls.size}x{lk.size} best", np.exp([ls[fi], lk[fj]]), "X", "white"),
    ]
    save_figure(plot_landscape(grid, path, best_marks), out / "landscape.png")
    save_figure(plot_convergence(c["budget_rows"]), out / "convergence.png")


def _result(method: str, solves, seconds, theta, err) -> dict:
    return {
        "method": method,
        "solves": int(solves),
        "seconds": float(seconds),
        "scale": float(np.exp(theta[0])),
        "kappa": float(np.exp(theta[1])),
        "log_scale": float(theta[0]),
        "log_kappa": float(theta[1]),
        "test_error": float(err),
    }


def _gradient_checks(path: dict, c: dict) -> dict:
    """The gradient at the start and at the best point, their norm ratio and the finite-difference error."""
    g0, gb = path["grad"][0], path["grad"][c["best_i"]]
    return {
        "start": g0,
        "best": gb,
        "ratio": float(np.linalg.norm(gb) / np.linalg.norm(g0)),
        "fd": c["fd"],
        "fd_error": float(np.max(np.abs(g0 - c["fd"])) / np.max(np.abs(c["fd"]))),
    }


def _results(cfg: Config, grid: dict, path: dict, c: dict) -> dict:
    """The summary's measurements: the five result rows, the gaps between the searches, the costs."""
    ls, lk = grid["log_scales"], grid["log_kappas"]
    (gi, gj, g_err), (fi, fj, f_err) = c["matched"], c["finest"]
    ti, tj, t_err = c["time_matched"]
    k_m, time_k, sec_fwd = int(round(math.sqrt(cfg.budget))), c["time_k"], c["sec_fwd"]
    gd_best = float(path["test_error"][c["best_i"]])
    rows = [
        _result(
            "gradient descent, best point", cfg.budget, c["gd_seconds"], c["best_theta"], gd_best
        ),
        _result(
            "gradient descent, last point",
            cfg.budget,
            c["gd_seconds"],
            path["theta"][-1],
            path["test_error"][-1],
        ),
        _result(
            f"grid {k_m}x{k_m} (solve-matched)",
            k_m * k_m,
            k_m * k_m * sec_fwd,
            (ls[gi], lk[gj]),
            g_err,
        ),
        _result(
            f"grid {time_k}x{time_k} (time-matched{', capped' if time_k == ls.size else ''})",
            time_k * time_k,
            time_k * time_k * sec_fwd,
            (ls[ti], lk[tj]),
            t_err,
        ),
        _result(
            f"grid {ls.size}x{lk.size} (finest)",
            ls.size * lk.size,
            ls.size * lk.size * sec_fwd,
            (ls[fi], lk[fj]),
            f_err,
        ),
    ]
    return {
        "widths": list(_widths(cfg)),
        "results": rows,
        "start_test_error": float(path["test_error"][0]),
        "gradient": _gradient_checks(path, c),
        "gap_matched": gd_best / g_err - 1,
        "gap_time_matched": gd_best / t_err - 1,
        "gap_finest": gd_best / f_err - 1,
        "finest_solves": int(ls.size * lk.size),
        "affordable_forward_solves": c["affordable"],
        "seconds_forward": sec_fwd,
        "seconds_value_and_grad": c["sec_vg"],
        "cost_ratio": c["sec_vg"] / sec_fwd,
        "seconds_grid_per_point": grid["seconds"] / grid["test_error"].size,
        "discretization": c["discretization"],
    }


def _problems(cfg: Config, grid: dict, path: dict, c: dict) -> list[str]:
    """The failed checks: a solve, gradient descent's progress and its gap to the grid, the gradient's
    drop and its agreement with finite differences, the discretization error."""
    gd_best, g_err = float(path["test_error"][c["best_i"]]), c["matched"][2]
    grad = _gradient_checks(path, c)
    ratio, fd_error, discretization = grad["ratio"], grad["fd_error"], c["discretization"]
    problems = []
    if not (
        grid["success"].all()
        and path["success"].all()
        and bool(np.all(np.asarray(c["adaptive_ok"])))
    ):
        problems.append("a solve failed")
    if not gd_best < float(path["test_error"][0]):
        problems.append(
            f"gradient descent did not improve on its start ({gd_best:.4f} vs {float(path['test_error'][0]):.4f})"
        )
    if not gd_best <= (1 + cfg.gap_tolerance) * g_err:
        problems.append(
            f"gradient descent's best {gd_best:.4f} is more than {cfg.gap_tolerance:.0%} above the solve-matched grid's {g_err:.4f}"
        )
    if not ratio <= cfg.gradient_drop:
        problems.append(
            f"the gradient at gradient descent's best is {ratio:.2f} of the starting one (want <= {cfg.gradient_drop})"
        )
    if not fd_error < 1e-5:
        problems.append(f"the gradient differs from finite differences by {fd_error:.1e}")
    if not max(discretization.values()) < 1e-2:
        problems.append(
            f"the constant-step test errors differ from adaptive solves by {max(discretization.values()):.1e}"
        )
    return problems
