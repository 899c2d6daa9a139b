"""Linear systems theory on the footing of the network (§1.3 of Lindsey & Menon, seed 001; docs/theory.md §13).

Four measurements on random realizations ``(A, B, C)``:

(a) *Balancing flows.* ``||mu(t)||`` along the regularizing flow on the orbit (`dlnjax.systems.OrbitL2`, induced
    metric: ``mu(t) = exp(-2t) mu(0)`` exactly), the Kirwan-Ness flow and the Helmke-Moore flow (normal metric), with
    the transfer function checked constant along each.
(b) *Hankel singular values against the norm-balanced realization*: the Hankel singular values ``sigma_i`` and the
    state weights ``sqrt(lambda_i((B B^* + C^* C)/2))`` of the norm-balanced realization.
(c) *Truncation errors*: over many random stable systems, the H2 and H-infinity errors of Gramian-balanced and
    norm-balanced truncation to each order ``r``; the Glover bound checked.
(d) *A trained state-space model*: ``(A, B, C)`` fitted to the Markov parameters of a target by the gradient flow
    (``mu`` conserved), the regularized flow (``mu(t) = exp(-2 kappa t) mu(0)``, a norm-balanced limit), gradient
    descent (``mu`` drifts by ``eta^2 mu(grad)`` a step) and Langevin dynamics.

`run` writes ``mu_decay.png``, ``hsv.png``, ``truncation.png``, ``training.png``, the tables ``mu_decay.csv``,
``hsv.csv``, ``truncation.csv``, ``training.csv``, ``linear_systems.npz`` and ``summary.txt``/``summary.json``.
Float64 (the ``dlnjax`` CLI enables it).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import dlnjax
from dlnjax import systems as S

from ._common import figure, pick_config, save_figure, start, write_csv
from ._summary import summary_head, wall_times

__all__ = [
    "Config",
    "DEFAULT",
    "QUICK",
    "balancing_flows",
    "hankel_vs_norm",
    "truncation_errors",
    "training",
    "run",
]

FLOWS = ("OrbitL2", "OrbitKirwanNess", "HelmkeMoore")


@dataclasses.dataclass(frozen=True)
class Config:
    n: int = 8
    m: int = 2
    p: int = 2
    t_final: float = 4.0
    n_saves: int = 41
    n_systems: int = 200  # (c)
    trunc_n: int = 10
    train_n: int = 4
    markov: int = 20
    train_time: float = 40.0
    kappa: float = 0.05
    eta: float = 0.002  # gradient descent runs train_time / eta steps
    beta: float = 1e4
    langevin_dt: float = 0.002


DEFAULT = Config()
QUICK = Config(n=4, t_final=2.0, n_saves=11, n_systems=16, trunc_n=5, markov=10, train_time=10.0)

ZS = jnp.array([0.3 + 1.0j, -0.5 + 2.0j, 2.0, 5.0j])


def _mu_norm(sys):
    return jnp.sqrt(jnp.sum(jnp.abs(S.moment_map(sys)) ** 2))


def balancing_flows(cfg: Config, key) -> dict:
    """(a) ``||mu(t)||`` along the three balancing flows, and the drift of ``H`` along them."""
    sys = S.random_system(key, cfg.n, cfg.m, cfg.p)
    ts = jnp.linspace(0.0, cfg.t_final, cfg.n_saves)
    out = {"ts": np.asarray(ts)}
    for name in FLOWS:
        traj = dlnjax.simulate(getattr(S, name)(), sys, ts, rtol=1e-10, atol=1e-12)
        H = jax.vmap(lambda x: S.transfer_function(x, ZS))(traj.ys)
        out[name] = np.asarray(jax.vmap(_mu_norm)(traj.ys))
        out[f"{name}_h_drift"] = float(jnp.max(jnp.abs(H - H[0])) / jnp.max(jnp.abs(H[0])))
        out[f"{name}_success"] = bool(traj.success)
        if name == "OrbitL2":
            mus = jax.vmap(S.moment_map)(traj.ys)
            law = jnp.exp(-2 * ts)[:, None, None] * mus[0]
            out["law_error"] = float(jnp.max(jnp.abs(mus - law)) / jnp.max(jnp.abs(mus[0])))
    return out


def hankel_vs_norm(cfg: Config, key) -> dict:
    """(b) Hankel singular values and the state weights of the norm-balanced realization of one system."""
    sys = S.random_system(key, cfg.n, cfg.m, cfg.p)
    t = S.norm_balanced_truncation(sys, cfg.n)
    bal = S.norm_balancing(sys)
    return {
        "hsv": np.asarray(S.hankel_singular_values(sys)),
        "weights": np.asarray(t.weights),
        "moment": float(bal.moment),
        "steps": int(bal.steps),
        "success": bool(bal.success),
    }


def _padded_truncation(x: S.LinearSystem, r) -> S.LinearSystem:
    """The first ``r`` states of ``x`` (``r`` may be traced), padded back to ``n`` states by ``-I`` blocks with zero
    input and output maps: the same transfer function as ``truncate(x, r)``, one shape for every order."""
    keep = jnp.arange(x.n) < r
    both = keep[:, None] & keep[None, :]
    A = jnp.where(both, x.A, -jnp.eye(x.n, dtype=x.A.dtype))
    return S.LinearSystem(A, x.B * keep[:, None], x.C * keep[None, :])


def truncation_errors(cfg: Config, key) -> dict:
    """(c) H2 and H-infinity errors (relative to ``||H||_oo``) of both truncations, every order, every system.

    Truncating the Gramian-balanced realization (``P = Q = diag(sigma)``) to its first ``r`` states is square-root
    balanced truncation; the norm-balanced realization is ordered by `norm_balanced_truncation`'s weights."""
    n = cfg.trunc_n
    systems = jax.vmap(lambda k: S.random_system(k, n, cfg.m, cfg.p))(jr.split(key, cfg.n_systems))
    orders = jnp.arange(1, n)
    full = jax.jit(
        jax.vmap(lambda s: (S.balanced_truncation(s, n), S.norm_balanced_truncation(s, n)))
    )
    g, b = full(systems)
    h = jax.jit(jax.vmap(S.hinf_norm))(systems)
    # one small program per quantity (a single program of all of them compiled and ran far slower)
    per_order = lambda f: jax.jit(
        jax.vmap(lambda s, x: jax.vmap(lambda r: f(s, _padded_truncation(x, r)))(orders))
    )
    h2 = per_order(lambda s, x: S.h2_norm(S.difference(s, x)))
    hinf = per_order(lambda s, x: S.hinf_norm(S.difference(s, x)))
    abscissa = per_order(lambda s, x: jnp.max(jnp.real(jnp.linalg.eigvals(x.A))))
    bound = 2 * jnp.sum(
        jnp.where(jnp.arange(n)[None, None] >= orders[None, :, None], g.weights[:, None], 0.0), -1
    )
    cols = [
        h2(systems, g.system) / h[:, None],
        hinf(systems, g.system) / h[:, None],
        bound / h[:, None],
        h2(systems, b.system) / h[:, None],
        hinf(systems, b.system) / h[:, None],
        (abscissa(systems, b.system) < 0).astype(float),
    ]
    table = np.stack([np.asarray(c) for c in cols], axis=-1).swapaxes(0, 1)
    # an unstable truncation has no H2 / Hoo norm
    table[..., 3:5] = np.where(table[..., 5:6] > 0, table[..., 3:5], np.nan)
    return {"orders": np.asarray(orders), "errors": table}  # (orders, systems, 6)


def training(cfg: Config, key) -> dict:
    """(d) Fit ``(A, B, C)`` to the Markov parameters of a target with four dynamics."""
    k1, k2, k3 = jr.split(key, 3)
    target = S.random_system(k1, cfg.train_n, 1, 1, discrete=True, margin=0.2)
    loss = S.MarkovLoss.of(target, cfg.markov)
    sys0 = jax.tree_util.tree_map(
        lambda a: 0.5 * a, S.random_system(k2, cfg.train_n, 1, 1, discrete=True)
    )
    ts = jnp.linspace(0.0, cfg.train_time, 41)
    out = {"ts": np.asarray(ts)}
    flows = {
        "gradient flow": S.SystemGradient(loss),
        "regularized flow": S.SystemRegularized(loss, cfg.kappa),
    }
    for name, flow in flows.items():
        traj = dlnjax.simulate(flow, sys0, ts, rtol=1e-9, atol=1e-11)
        mus = jax.vmap(S.moment_map)(traj.ys)
        out[name] = {
            "loss": np.asarray(jax.vmap(loss)(traj.ys)),
            "mu": np.asarray(mus),
            "success": bool(traj.success),
        }
    lang = dlnjax.simulate(
        S.SystemLangevin(loss, cfg.kappa, cfg.beta), sys0, ts, key=k3, dt0=cfg.langevin_dt
    )
    out["Langevin"] = {
        "loss": np.asarray(jax.vmap(loss)(lang.ys)),
        "mu": np.asarray(jax.vmap(S.moment_map)(lang.ys)),
        "success": bool(lang.success),
    }
    steps = 40 * round(cfg.train_time / cfg.eta / 40)
    gd = S.fit(loss, sys0, optax.sgd(cfg.eta), steps, every=steps // 40)
    out["gradient descent"] = {
        "loss": np.asarray(gd.history["loss"]),
        "mu": np.asarray(gd.history["moment"]),
        "success": bool(np.all(np.isfinite(gd.history["loss"]))),
    }
    out["gd_times"] = np.asarray(gd.steps) * cfg.eta
    out["target_loss0"] = float(loss(sys0))
    return out


def _checks(a: dict, b: dict, c: dict, d: dict, cfg: Config) -> list[str]:
    problems = []
    if not a["law_error"] < 1e-7:
        problems.append(f"(a) OrbitL2 off mu(t) = exp(-2t) mu(0) by {a['law_error']:.1e}")
    for name in FLOWS:
        if not (
            a[f"{name}_success"] and a[f"{name}_h_drift"] < 1e-7 and a[name][-1] < 0.2 * a[name][0]
        ):
            problems.append(
                f"(a) {name}: H drifted by {a[f'{name}_h_drift']:.1e} or mu did not decay"
            )
    if not b["success"]:
        problems.append("(b) norm balancing did not converge")
    e = c["errors"]
    if not np.all(e[..., 1] <= e[..., 2] * (1 + 1e-8)):
        problems.append("(c) a Gramian-balanced truncation exceeds the Glover bound")
    g, r = d["gradient flow"], d["regularized flow"]
    if not (g["success"] and g["loss"][-1] < 1e-2 * g["loss"][0]):
        problems.append(f"(d) the gradient flow did not fit: loss {g['loss'][-1]:.2e}")
    if not np.max(np.abs(g["mu"] - g["mu"][0])) < 1e-7 * np.max(np.abs(g["mu"][0])):
        problems.append("(d) mu not conserved by the gradient flow")
    law = np.exp(-2 * cfg.kappa * d["ts"])[:, None, None] * r["mu"][0]
    if not np.max(np.abs(r["mu"] - law)) < 1e-7 * np.max(np.abs(r["mu"][0])):
        problems.append("(d) the regularized flow is off mu(t) = exp(-2 kappa t) mu(0)")
    return problems


def _plot(out: Path, a: dict, b: dict, c: dict, d: dict) -> None:
    fig, ax = figure(5, 3.6, 1)
    for name in FLOWS:
        ax[0].semilogy(a["ts"], a[name] / a[name][0], label=name)
    ax[0].semilogy(a["ts"], np.exp(-2 * a["ts"]), "k:", label="exp(-2t)")
    ax[0].set(xlabel="t", ylabel="||mu(t)|| / ||mu(0)||", title="(a) balancing flows")
    ax[0].legend()
    save_figure(fig, out / "mu_decay.png")
    fig, ax = figure(5, 3.6, 1)
    i = np.arange(1, b["hsv"].size + 1)
    ax[0].semilogy(i, b["hsv"], "o-", label="Hankel singular values")
    ax[0].semilogy(i, b["weights"], "s--", label="norm-balanced weights")
    ax[0].set(xlabel="i", title="(b) Gramian vs norm balancing")
    ax[0].legend()
    save_figure(fig, out / "hsv.png")
    fig, ax = figure(9, 3.6, 2)
    med = np.nanmedian(c["errors"], axis=1)
    for j, (lab, k) in enumerate((("H2", (0, 3)), ("Hoo", (1, 4)))):
        ax[j].semilogy(c["orders"], med[:, k[0]], "o-", label="Gramian-balanced")
        ax[j].semilogy(c["orders"], med[:, k[1]], "s-", label="norm-balanced")
        if lab == "Hoo":
            ax[j].semilogy(c["orders"], med[:, 2], "k:", label="2 sum sigma (bound)")
        ax[j].set(xlabel="order r", ylabel=f"median {lab} error / ||H||oo", title=f"(c) {lab}")
        ax[j].legend()
    save_figure(fig, out / "truncation.png")
    fig, ax = figure(9, 3.6, 2)
    for name in ("gradient flow", "regularized flow", "Langevin", "gradient descent"):
        t = d["gd_times"] if name == "gradient descent" else d["ts"]
        ax[0].semilogy(t, d[name]["loss"], label=name)
        ax[1].semilogy(t, np.abs(d[name]["mu"]).max(axis=(1, 2)) + 1e-300, label=name)
    ax[0].set(xlabel="t (GD: steps x eta)", ylabel="Markov loss", title="(d) training an SSM")
    ax[1].set(xlabel="t", ylabel="max |mu_ij|", title="(d) moment map")
    ax[0].legend()
    save_figure(fig, out / "training.png")


def _write(out: Path, a: dict, b: dict, c: dict, d: dict) -> None:
    write_csv(
        out / "mu_decay.csv", ["t", *FLOWS], zip(a["ts"].tolist(), *(a[k].tolist() for k in FLOWS))
    )
    write_csv(
        out / "hsv.csv",
        ["i", "hankel_sv", "norm_balanced_weight"],
        zip(range(1, b["hsv"].size + 1), b["hsv"].tolist(), b["weights"].tolist()),
    )
    med = np.nanmedian(c["errors"], axis=1)
    write_csv(
        out / "truncation.csv",
        [
            "order",
            "gramian_h2",
            "gramian_hinf",
            "bound",
            "norm_h2",
            "norm_hinf",
            "norm_stable_fraction",
        ],
        [(int(r), *map(float, row)) for r, row in zip(c["orders"], med)],
    )
    names = ("gradient flow", "regularized flow", "Langevin")
    write_csv(
        out / "training.csv",
        ["t", *(f"loss_{n.replace(' ', '_')}" for n in names)],
        zip(d["ts"].tolist(), *(d[n]["loss"].tolist() for n in names)),
    )
    np.savez(
        out / "linear_systems.npz",
        truncation_errors=c["errors"],
        orders=c["orders"],
        hsv=b["hsv"],
        weights=b["weights"],
        ts=a["ts"],
        **{f"mu_{k}": a[k] for k in FLOWS},
        **{f"train_mu_{n.replace(' ', '_')}": d[n]["mu"] for n in (*names, "gradient descent")},
    )
    _plot(out, a, b, c, d)


def _results(a: dict, b: dict, c: dict, d: dict) -> dict:
    med = np.nanmedian(c["errors"], axis=1)
    return {
        "balancing": {k: float(a[k][-1] / a[k][0]) for k in FLOWS} | {"law_error": a["law_error"]},
        "norm_balancing": {
            "steps": b["steps"],
            "moment": b["moment"],
            "hsv": b["hsv"].tolist(),
            "weights": b["weights"].tolist(),
        },
        "truncation_median": {
            int(r): {
                "gramian_hinf": float(row[1]),
                "norm_hinf": float(row[4]),
                "gramian_h2": float(row[0]),
                "norm_h2": float(row[3]),
            }
            for r, row in zip(c["orders"], med)
        },
        "training": {
            n: {
                "loss_final": float(d[n]["loss"][-1]),
                "mu_change": float(np.max(np.abs(d[n]["mu"] - d[n]["mu"][0]))),
            }
            for n in ("gradient flow", "regularized flow", "Langevin", "gradient descent")
        },
    }


def _text(s: dict) -> str:
    r = s["balancing"]
    lines = [
        *summary_head(s, "balancing and model reduction of linear systems"),
        "(a) ||mu(T)||/||mu(0)||: "
        + ", ".join(f"{k} {r[k]:.2e}" for k in FLOWS)
        + f"; OrbitL2 off exp(-2t) by {r['law_error']:.1e}",
        f"(b) norm balancing: {s['norm_balancing']['steps']} Newton steps, ||mu||/||x||^2 = "
        f"{s['norm_balancing']['moment']:.1e}",
        "(c) median Hoo error / ||H||oo by order (Gramian | norm): "
        + ", ".join(
            f"r={k} {v['gramian_hinf']:.2e} | {v['norm_hinf']:.2e}"
            for k, v in s["truncation_median"].items()
        ),
        "(d) final Markov loss: "
        + ", ".join(f"{k} {v['loss_final']:.2e}" for k, v in s["training"].items()),
        wall_times(s),
        "",
    ]
    return "\n".join(lines)


def run(out, *, quick: bool = False, seed: int = 0, config: Config | None = None, log=None) -> int:
    """``dlnjax reproduce linear-systems``: (a)-(d) of the module docstring; returns the exit code."""
    cfg = pick_config(config, quick, DEFAULT, QUICK)
    session = start("linear-systems", out, seed, log)
    ka, kb, kc, kd = jr.split(jr.PRNGKey(seed), 4)
    with session.timed("balancing_flows", "(a) balancing flows"):
        a = balancing_flows(cfg, ka)
    with session.timed("hankel", "(b) Hankel singular values vs norm balancing"):
        b = hankel_vs_norm(cfg, kb)
    with session.timed("truncation", f"(c) truncation errors over {cfg.n_systems} systems"):
        c = truncation_errors(cfg, kc)
    with session.timed("training", "(d) training a state-space model"):
        d = training(cfg, kd)
    with session.timed("write", "writing figures and tables"):
        _write(session.out, a, b, c, d)
    problems = _checks(a, b, c, d, cfg)
    return session.finish(problems, dataclasses.asdict(cfg), _results(a, b, c, d), _text)
