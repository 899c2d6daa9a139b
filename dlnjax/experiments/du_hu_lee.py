"""Layers are automatically balanced: Du, Hu & Lee (seed 002; docs/theory.md §6).

Three measurements:

(a) *Gradient flow conserves the layer-norm differences.* For ``f(x) = W_N phi(... phi(W_1 x))``
    with ``phi`` positively homogeneous (identity, ReLU, leaky ReLU), ``||W_{k+1}||^2 - ||W_k||^2``
    and, neuron by neuron, ``||row i of W_k||^2 - ||column i of W_{k+1}||^2`` are constant along the
    gradient flow. We integrate it with `dlnjax.simulate` (`dlnjax.flows.Gradient` of a
    `dlnjax.losses.Regression`) for linear, ReLU and leaky-ReLU networks and report the largest
    change of both against the loss decrease (which shows that the flow really moves).
(b) *Gradient descent changes them by O(eta^2) per step.* Homogeneity gives
    ``<W_k, grad_k E> = <W_{k+1}, grad_{k+1} E>``, so one step ``W -> W - eta grad E`` changes
    ``||W_{k+1}||^2 - ||W_k||^2`` by exactly ``eta^2 (||grad_{k+1}||^2 - ||grad_k||^2)``. We train
    with `dlnjax.train` (``optax.sgd``) at several step sizes, fit the slope of the mean drift per
    step against ``eta`` (expect 2), and check the first step against the exact formula.
(c) *Asymmetric rank-one factorization* ``min 1/2 ||u v^T - M||^2`` (a depth-two network
    ``X = W_2 W_1``, inner width one, `dlnjax.losses.Factorization`): gradient descent with a constant
    step from a small initialization converges linearly; we fit the rate of the tail.

`run` writes the figures ``conservation.png``, ``drift.png``, ``factorization.png``, the tables
``conservation.csv``, ``drift.csv``, ``factorization.csv``, ``du_hu_lee.npz`` and
``summary.txt``/``summary.json``. Float64 (the ``dlnjax`` CLI enables it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import dlnjax
from dlnjax.flows import Gradient

from .._numerics import matmul
from ._common import figure, pick_config, save_figure, start, write_csv
from ._summary import summary_head, wall_times

__all__ = [
    "Config",
    "DEFAULT",
    "QUICK",
    "conservation",
    "drift",
    "factorization",
    "plot_conservation",
    "plot_drift",
    "plot_factorization",
    "run",
]

ACTIVATIONS = ("identity", "relu", "leaky_relu")


@dataclasses.dataclass(frozen=True)
class Config:
    # (a), (b): regression data and network
    n: int = 40
    d_in: int = 6
    d_out: int = 2
    hidden: int = 10
    depth: int = 4
    noise: float = 0.5
    init_std: float = 0.4
    t_final: float = 10.0
    n_saves: int = 41
    rtol: float = 1e-10
    atol: float = 1e-12
    kink_steps: int = 4000  # constant steps of the nonlinear (ReLU) flows
    # (b)
    step_sizes: tuple[float, ...] = (0.0025, 0.005, 0.01, 0.02, 0.04)
    drift_time: float = 0.5
    # (c)
    fact_rows: int = 20
    fact_cols: int = 15
    fact_init: float = 1e-3
    fact_step: float = 0.1
    fact_steps: int = 1000


DEFAULT = Config()
QUICK = Config(
    n=20,
    d_in=4,
    hidden=5,
    depth=3,
    t_final=4.0,
    n_saves=11,
    rtol=1e-9,
    atol=1e-11,
    kink_steps=2000,
    step_sizes=(0.005, 0.01, 0.02),
    drift_time=0.2,
    fact_rows=8,
    fact_cols=6,
    fact_steps=600,
)


def _widths(cfg: Config) -> tuple[int, ...]:
    return (cfg.d_in,) + (cfg.hidden,) * (cfg.depth - 1) + (cfg.d_out,)


def _norms(net: dlnjax.DLN):
    """(layer-norm differences ||W_{k+1}||^2 - ||W_k||^2, neuron balances) of one network (seed 002)."""
    return dlnjax.layer_norm_differences(net), dlnjax.neuron_balance(net)


def conservation(loss, net0: dlnjax.DLN, cfg: Config) -> dict:
    """(a) The gradient flow of ``net0`` (any activation); changes of the conserved quantities along it."""
    ts = jnp.linspace(0.0, cfg.t_final, cfg.n_saves)

    def constant_steps(n):
        return dlnjax.simulate(
            Gradient(loss),
            net0,
            ts,
            dt0=cfg.t_final / n,
            stepsize_controller=diffrax.ConstantStepSize(),
            max_steps=n + 10,
        )

    def change(traj):
        diffs, neurons = jax.vmap(_norms)(traj.ys)
        scale = float(jnp.max(jax.vmap(dlnjax.layer_norms)(traj.ys)))
        return (
            diffs,
            neurons,
            float(jnp.max(jnp.abs(diffs - diffs[0]))) / scale,
            float(jnp.max(jnp.abs(neurons - neurons[0]))) / scale,
        )

    halving = float("nan")
    if net0.activation.is_linear:
        traj = dlnjax.simulate(Gradient(loss), net0, ts, rtol=cfg.rtol, atol=cfg.atol)
    else:
        # The gradient of a ReLU network jumps where a pre-activation changes sign; an adaptive step-size
        # controller stalls on those kinks (and on sliding along them), so constant steps are used. Their error
        # at the kinks is first order in the step: to tell it from a real change, the flow is also solved with
        # half as many steps, and the change must shrink about twofold (`halving`, the ratio of the two).
        traj = constant_steps(cfg.kink_steps)
        coarse = change(constant_steps(cfg.kink_steps // 2))
        fine = change(traj)
        halving = max(coarse[2], coarse[3]) / max(fine[2], fine[3], 1e-300)
    diffs, neurons, change_layers, change_neurons = change(traj)
    losses = jax.vmap(lambda n: dlnjax.network_loss(loss, n))(traj.ys)
    return {
        "ts": np.asarray(ts),
        "loss": np.asarray(losses),
        "differences": np.asarray(diffs),
        "neurons": np.asarray(neurons),
        "max_change_layers": change_layers,
        "max_change_neurons": change_neurons,
        "halving": halving,
        "success": bool(traj.success),
        "num_steps": int(traj.stats["num_steps"]),
    }


def drift(loss, net0: dlnjax.DLN, step_sizes, horizon: float) -> dict:
    """(b) Gradient descent at each step size (one vmapped `dlnjax.train`): the mean drift per step of the
    layer-norm differences over the same stretch of time ``[0, horizon]`` (``horizon / eta`` steps, so
    that every step size covers the same part of the gradient-flow path), and the first step against
    ``eta^2 (||grad_{k+1}||^2 - ||grad_k||^2)``."""
    etas = jnp.asarray(step_sizes)
    counts = [max(1, round(horizon / float(e))) for e in step_sizes]
    fns = {"differences": dlnjax.layer_norm_differences}
    res = jax.vmap(
        lambda eta: dlnjax.train(
            loss, net0, optax.sgd(eta), max(counts), metrics=(), metric_fns=fns
        )
    )(etas)
    d = np.asarray(res.history["differences"])  # (etas, steps + 1, N - 1)
    jumps = np.abs(np.diff(d, axis=1)).max(axis=2)
    per_step = np.array([jumps[i, :c].mean() for i, c in enumerate(counts)])
    g = dlnjax.network_gradient(loss, net0)
    gsq = np.asarray(dlnjax.layer_norms(g))
    predicted_first = np.asarray(etas)[:, None] ** 2 * (gsq[1:] - gsq[:-1])[None, :]
    measured_first = d[:, 1] - d[:, 0]
    slope = float(np.polyfit(np.log(np.asarray(etas)), np.log(per_step), 1)[0])
    # O(eta^2) is a statement as eta -> 0: the local slope between the two smallest step sizes
    order = np.argsort(np.asarray(etas))[:2]
    e2, p2 = np.asarray(etas)[order], per_step[order]
    slope_small = float(np.log(p2[1] / p2[0]) / np.log(e2[1] / e2[0]))
    return {
        "etas": np.asarray(etas),
        "per_step": per_step,
        "slope": slope,
        "slope_small": slope_small,
        "first_step_error": float(
            np.max(np.abs(measured_first - predicted_first)) / np.max(np.abs(predicted_first))
        ),
        "diverged": np.asarray(res.diverged),
    }


def factorization(key, cfg: Config) -> dict:
    """(c) ``min 1/2 ||u v^T - M||^2``, ``M`` rank one with ``||M|| = 1``, by constant-step gradient descent
    from ``u, v ~ N(0, fact_init^2)``; the relative error per step and the fitted linear rate."""
    ku, kv, k0 = jr.split(key, 3)
    u = jr.normal(ku, (cfg.fact_rows, 1))
    v = jr.normal(kv, (1, cfg.fact_cols))
    M = matmul(u, v) / (jnp.linalg.norm(u) * jnp.linalg.norm(v))
    loss = dlnjax.losses.Factorization(M)
    net0 = dlnjax.gaussian(k0, (cfg.fact_cols, 1, cfg.fact_rows), cfg.fact_init)
    res = dlnjax.train(
        loss, net0, optax.sgd(cfg.fact_step), cfg.fact_steps, metrics=("test_error",)
    )
    err = np.asarray(res.history["test_error"])
    steps = np.arange(err.shape[0])
    tail = (err < 1e-3) & (err > 1e-11)
    rate, r2 = float("nan"), float("nan")
    if tail.sum() >= 5:
        coef = np.polyfit(steps[tail], np.log(err[tail]), 1)
        fit = np.polyval(coef, steps[tail])
        rate = float(np.exp(coef[0]))
        r2 = float(
            1
            - np.sum((np.log(err[tail]) - fit) ** 2)
            / np.sum((np.log(err[tail]) - np.log(err[tail]).mean()) ** 2)
        )
    final = dlnjax.layer_norms(res.net)
    return {
        "steps": steps,
        "error": err,
        "rate": rate,
        "r2": r2,
        "final_error": float(err[-1]),
        "final_balance": float(abs(final[1] - final[0])),
        "initial_balance": float(abs(dlnjax.layer_norm_differences(net0)[0])),
        "diverged": bool(res.diverged),
    }


def plot_conservation(cons: dict):
    """(a) The loss and the largest change of the conserved quantities along each gradient flow."""
    fig, ax = figure(12, 3.6, 3)
    for name, c in cons.items():
        ax[0].plot(c["ts"], c["loss"], label=name)
        ch = np.abs(c["differences"] - c["differences"][0]).max(axis=1)
        chn = np.abs(c["neurons"] - c["neurons"][0]).reshape(len(c["ts"]), -1).max(axis=1)
        ax[1].semilogy(c["ts"], np.maximum(ch, 1e-17), label=f"{name}: layers")
        ax[1].semilogy(c["ts"], np.maximum(chn, 1e-17), "--", label=f"{name}: neurons")
        ax[2].plot(c["ts"], c["differences"][:, 0], label=f"{name}")
    ax[0].set(xlabel="t", ylabel="loss", title="(a) gradient flow: the loss decreases")
    ax[1].set(xlabel="t", ylabel="max |change|", title="...while norm differences stay put")
    ax[2].set(xlabel="t", ylabel=r"$\|W_2\|^2-\|W_1\|^2$", title="first layer-norm difference")
    for a in ax:
        a.legend(fontsize=7)
    return fig


def plot_drift(drifts: dict):
    """(b) Mean drift per gradient-descent step against the step size, log-log, with the eta^2 line."""
    fig, ax = figure(5, 3.6, 1)
    for name, d in drifts.items():
        ax[0].loglog(d["etas"], d["per_step"], "o-", label=f"{name} (slope {d['slope']:.2f})")
    e = np.asarray(next(iter(drifts.values()))["etas"])
    ref = next(iter(drifts.values()))["per_step"][0] * (e / e[0]) ** 2
    ax[0].loglog(e, ref, "k:", label=r"$\propto \eta^2$")
    ax[0].set(
        xlabel=r"step size $\eta$",
        ylabel="mean drift per step",
        title="(b) gradient descent: O(η²) per step",
    )
    ax[0].legend(fontsize=7)
    return fig


def plot_factorization(fact: dict, cfg: Config):
    """(c) The relative error of rank-one factorization per gradient-descent step (log scale)."""
    fig, ax = figure(5, 3.6, 1)
    ax[0].semilogy(fact["steps"], fact["error"])
    ax[0].set(
        xlabel="gradient-descent step",
        ylabel=r"$\|uv^T-M\|_F/\|M\|_F$",
        title=f"(c) rank-one factorization, η = {cfg.fact_step:g}: rate {fact['rate']:.4f}/step",
    )
    return fig


def _text(s: dict) -> str:
    c = s["config"]
    lines = summary_head(s, "layers are automatically balanced (Du, Hu & Lee, seed 002)")
    lines += [
        f"regression n = {c['n']}, widths {s['widths']}, noise {c['noise']}, init N(0, {c['init_std']}^2), seed {s['seed']}",
        "",
        f"(a) gradient flow on t in [0, {c['t_final']}] (Tsit5; linear: rtol {c['rtol']:g}; ReLU: {c['kink_steps']} constant steps):",
        "    largest change of the conserved quantities / max_k ||W_k||^2",
        f"    {'activation':<12}{'loss(0)':>10}{'loss(T)':>10}{'layers':>11}{'neurons':>11}{'steps':>7}"
        "   change(N/2 steps) / change(N steps)",
    ]
    for name, a in s["conservation"].items():
        lines.append(
            f"    {name:<12}{a['loss_initial']:>10.4f}{a['loss_final']:>10.4f}{a['max_change_layers']:>11.1e}"
            f"{a['max_change_neurons']:>11.1e}{a['num_steps']:>7}"
            + ("" if a["halving"] is None else f"   {a['halving']:.2f}")
        )
    lines += [
        "",
        f"(b) gradient descent over t in [0, {c['drift_time']}] (t / eta steps): mean drift per step of the layer-norm differences",
    ]
    lines.append("    " + f"{'eta':<12}" + "".join(f"{e:>10g}" for e in c["step_sizes"]))
    for name, d in s["drift"].items():
        lines.append(
            "    "
            + f"{name:<12}"
            + "".join(f"{v:>10.2e}" for v in d["per_step"])
            + f"   slope {d['slope']:.3f} (smallest two: {d['slope_small']:.3f}); "
            f"first step vs eta^2(|g_k+1|^2-|g_k|^2): {d['first_step_error']:.1e}"
        )
    f = s["factorization"]
    lines += [
        "",
        f"(c) rank-one factorization {c['fact_rows']}x{c['fact_cols']}, init N(0, {c['fact_init']:g}^2), step {c['fact_step']:g}, "
        f"{c['fact_steps']} steps:",
        f"    final relative error {f['final_error']:.2e}; linear rate {f['rate']:.5f} per step (R^2 of log-linear fit {f['r2']:.5f})",
        f"    | ||u||^2 - ||v||^2 |: initial {f['initial_balance']:.2e}, final {f['final_balance']:.2e}",
        "",
        wall_times(s),
    ]
    return "\n".join(lines) + "\n"


def run(
    out: str | Path = "results/du-hu-lee",
    *,
    quick: bool = False,
    seed: int = 0,
    config: Config | None = None,
    log: Callable[[str], None] | None = None,
) -> int:
    """Run (a)-(c), write into ``out``, return 0 (or 1 if a measured fact fails; the summary says which)."""
    cfg = pick_config(config, quick, DEFAULT, QUICK)
    session = start("du-hu-lee", out, seed, log)
    kd, kn, kf = jr.split(jr.PRNGKey(seed), 3)
    loss = dlnjax.losses.Regression.random(kd, cfg.n, cfg.d_in, cfg.d_out, noise=cfg.noise)
    base = dlnjax.gaussian(kn, _widths(cfg), cfg.init_std)
    with session.timed("conservation"):
        cons = {}
        for name in ACTIVATIONS:
            session.say(f"(a) gradient flow, {name}")
            cons[name] = conservation(loss, base.with_activation(name), cfg)
    _write_conservation(session.out, cons)
    with session.timed("drift"):
        drifts = {}
        for name in ACTIVATIONS:
            session.say(f"(b) gradient descent at {len(cfg.step_sizes)} step sizes, {name}")
            drifts[name] = drift(loss, base.with_activation(name), cfg.step_sizes, cfg.drift_time)
    _write_drift(session.out, drifts)
    with session.timed("factorization", "(c) asymmetric rank-one factorization"):
        fact = factorization(kf, cfg)
    _write_factorization(session.out, fact)
    _write_arrays_and_figures(session.out, cons, drifts, fact, cfg)
    problems = _problems(cons, drifts, fact)
    results = _results(cfg, cons, drifts, fact)
    return session.finish(problems, dataclasses.asdict(cfg), results, _text, total=False)


def _write_conservation(out: Path, cons: dict) -> None:
    """``conservation.csv``: the loss and the largest change of the conserved quantities at every save."""
    write_csv(
        out / "conservation.csv",
        ["activation", "t", "loss", "max_abs_change_layers", "max_abs_change_neurons"],
        [
            (
                name,
                float(t),
                float(c["loss"][i]),
                float(np.abs(c["differences"][i] - c["differences"][0]).max()),
                float(np.abs(c["neurons"][i] - c["neurons"][0]).max()),
            )
            for name, c in cons.items()
            for i, t in enumerate(c["ts"])
        ],
    )


def _write_drift(out: Path, drifts: dict) -> None:
    """``drift.csv``: the mean drift per step at every step size."""
    write_csv(
        out / "drift.csv",
        ["activation", "eta", "mean_drift_per_step"],
        [
            (name, float(e), float(v))
            for name, d in drifts.items()
            for e, v in zip(d["etas"], d["per_step"])
        ],
    )


def _write_factorization(out: Path, fact: dict) -> None:
    """``factorization.csv``: the relative error at every step."""
    write_csv(
        out / "factorization.csv",
        ["step", "relative_error"],
        zip(fact["steps"].tolist(), fact["error"].tolist()),
    )


def _write_arrays_and_figures(out: Path, cons: dict, drifts: dict, fact: dict, cfg: Config) -> None:
    """``du_hu_lee.npz`` (every array of (a)-(c)) and the three figures."""
    np.savez(
        out / "du_hu_lee.npz",
        **{
            f"{k}_{n}": v
            for n, c in cons.items()
            for k, v in c.items()
            if isinstance(v, np.ndarray)
        },
        **{
            f"drift_{k}_{n}": v
            for n, d in drifts.items()
            for k, v in d.items()
            if isinstance(v, np.ndarray)
        },
        factorization_error=fact["error"],
    )
    save_figure(plot_conservation(cons), out / "conservation.png")
    save_figure(plot_drift(drifts), out / "drift.png")
    save_figure(plot_factorization(fact, cfg), out / "factorization.png")


def _problems(cons: dict, drifts: dict, fact: dict) -> list[str]:
    """The failed checks of (a) conservation, (b) the ``eta^2`` drift, (c) linear convergence."""
    problems = []
    for name, c in cons.items():
        if not c["success"]:
            problems.append(f"(a) {name}: the solve failed")
        worst = max(c["max_change_layers"], c["max_change_neurons"])
        if np.isnan(
            c["halving"]
        ):  # adaptive solve at tight tolerances: conserved to round-off level
            if not worst < 1e-6:
                problems.append(f"(a) {name}: conserved quantities changed by {worst:.1e}")
        elif not (
            worst < 1e-5 and c["halving"] > 1.5
        ):  # constant steps: first-order error at the kinks only
            problems.append(
                f"(a) {name}: conserved quantities changed by {worst:.1e}, shrinking only "
                f"{c['halving']:.2f}-fold when the step is halved"
            )
        if not c["loss"][-1] < c["loss"][0]:
            problems.append(f"(a) {name}: the loss did not decrease")
    for name, d in drifts.items():
        if not abs(d["slope_small"] - 2) < 0.25:
            problems.append(
                f"(b) {name}: drift slope at the smallest steps {d['slope_small']:.2f}, expected 2"
            )
        if not d["first_step_error"] < 1e-6:
            problems.append(
                f"(b) {name}: first step off the eta^2 formula by {d['first_step_error']:.1e}"
            )
    if not (fact["final_error"] < 1e-8 and fact["r2"] > 0.99 and fact["rate"] < 1):
        problems.append(
            f"(c) no linear convergence: final error {fact['final_error']:.1e}, R^2 {fact['r2']:.3f}"
        )
    return problems


def _results(cfg: Config, cons: dict, drifts: dict, fact: dict) -> dict:
    """The summary's measurements (plain numbers)."""
    return {
        "widths": list(_widths(cfg)),
        "conservation": {
            n: {
                "loss_initial": float(c["loss"][0]),
                "loss_final": float(c["loss"][-1]),
                "max_change_layers": c["max_change_layers"],
                "max_change_neurons": c["max_change_neurons"],
                "halving": None if np.isnan(c["halving"]) else c["halving"],
                "success": c["success"],
                "num_steps": c["num_steps"],
            }
            for n, c in cons.items()
        },
        "drift": {
            n: {
                "per_step": d["per_step"].tolist(),
                "slope": d["slope"],
                "slope_small": d["slope_small"],
                "first_step_error": d["first_step_error"],
            }
            for n, d in drifts.items()
        },
        "factorization": {k: v for k, v in fact.items() if not isinstance(v, np.ndarray)},
    }
