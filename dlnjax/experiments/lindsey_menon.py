"""Balancing on a fiber: the regularizing flows of Lindsey & Menon (seed 001).

On the fiber ``F_X = {W : W_N ... W_1 = X}`` of a full-rank ``X`` we integrate, from a batch of
random starting points ``A . C`` (docs/theory.md §2), the two regularizing flows of seed 001:

- the L2 regularizing flow (1.17), ``dW/dt = -1/2 grad_{F_X} ||W||^2 = -Pi_T(W)``
  (`dlnjax.flows.FiberL2`). Theorem 2: the moments scale exactly, ``G(t) = e^{-2t} G(0)`` (1.19);
  the limit is balanced and, by Theorem 1, ``||W||^2 -> N sum_i sigma_i^{2/N}``;
- the Kirwan-Ness flow (1.22), ``dW_k/dt = 2 (W_k G_{k-1} - G_k W_k)`` (`dlnjax.flows.KirwanNess`),
  the gradient flow of ``1/2 ||G||^2``: no closed law for ``G``, but ``1/2 ||G||^2`` decreases and
  the limit is a balanced point of the same fiber (Corollary 1), hence again of norm
  ``N sum_i sigma_i^{2/N}``.

Both keep ``X`` fixed (docs/theory.md §4). We also draw Figure 1.1 of seed 001, the case ``d = 1``,
``N = 2``: the fiber is the hyperbola ``w_2 w_1 = x``, the balanced variety the diagonals
``w_2 = +-w_1``, and both flows slide along the hyperbola to the balanced points ``+-(sqrt x, sqrt x)``.
The summary reports the measured decay rates of ``||G||`` (`rates`) against Theorem 2's 2 and the slowest rate of
Kirwan-Ness linearized at the balanced orbit (docs/theory.md §10).

`run` writes figures, data and a summary of the measured invariant errors; the other functions
are its stages, reused by ``notebooks/lindsey_menon.ipynb``. Everything here expects float64
(``jax.config.update("jax_enable_x64", True)``, done by the ``dlnjax`` CLI).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from matplotlib.figure import Figure

import dlnjax
from dlnjax.flows import FiberL2, KirwanNess

from .._numerics import matmul
from ._common import Session, figure, pick_config, save_figure, start
from ._fiber_posterior import (
    codimension,
    fitted_power,
    hyperbola_exact,
    plot_posterior,
    posterior_chains,
    posterior_stats,
)
from ._fiber_slices import plot_slices, slice_grid, slice_points, slices_closed_form
from ._summary import failed_banner, summary_head, wall_times

__all__ = [
    "Config",
    "DEFAULT",
    "QUICK",
    "FLOWS",
    "Curves",
    "fiber_matrix",
    "fiber_starts",
    "theorem1_minimum",
    "save_times",
    "solve_batch",
    "curves",
    "hyperbola_starts",
    "solve_hyperbola",
    "plot_moment_decay",
    "plot_norm_approach",
    "plot_hyperbola",
    "measure",
    "rates",
    "slice_grid",
    "slice_points",
    "slices_closed_form",
    "plot_slices",
    "codimension",
    "posterior_chains",
    "posterior_stats",
    "hyperbola_exact",
    "fitted_power",
    "plot_posterior",
    "run",
]


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes and tolerances of the experiment.

    ``d``, ``depth``: the fiber of a ``d x d`` matrix ``X`` in a depth-``depth`` network, with
    singular values geometrically spaced from ``sigma_max`` down to ``sigma_min`` (well conditioned).
    ``n_starts`` random points ``A . C`` with ``A_k = I + spread * Gaussian / sqrt(d)``.
    Both flows are integrated on ``[0, t_final]`` and saved at ``n_saves`` equally spaced times.
    ``x`` and ``hyperbola_w1``: Figure 1.1, the fiber ``w_2 w_1 = x`` and the ``w_1`` of its starts.
    ``slice_*``: Figure 1.2, the fiber ``w_3 w_2 w_1 = x`` sliced by ``G``: ``slice_lines`` curves ``G_k = c``,
    ``|c| <= slice_g_max``, of ``slice_points`` points each, and the FiberL2 path from the slice ``slice_g0``.
    ``posterior_*``: `dlnjax.flows.FiberLangevin` chains on the fiber of a ``posterior_d x posterior_d`` matrix at
    depth ``posterior_depth`` (``x`` itself for ``d = 1``), one batch per ``beta kappa``, on ``[0, posterior_t]``
    with step ``posterior_dt``, averaged after ``posterior_burn``.
    """

    d: int = 8
    depth: int = 6
    n_starts: int = 64
    spread: float = 0.5
    sigma_max: float = 2.0
    sigma_min: float = 0.5
    t_final: float = 7.0
    n_saves: int = 71
    rtol: float = 1e-9
    atol: float = 1e-11
    x: float = 1.0
    hyperbola_w1: tuple[float, ...] = (0.25, 0.5, 2.5, 4.0, -0.3, -3.0)
    slice_g_max: float = 1.5
    slice_lines: int = 7
    slice_points: int = 41
    slice_g0: tuple[float, float] = (1.4, -1.0)
    posterior_d: int = 2
    posterior_depth: int = 3
    posterior_chains: int = 32
    posterior_beta_kappa: tuple[float, ...] = (8.0, 32.0, 128.0)
    posterior_t: float = 16.0
    posterior_burn: float = 4.0
    posterior_dt: float = 0.01


DEFAULT = Config()
QUICK = Config(
    d=4,
    depth=4,
    n_starts=8,
    t_final=4.0,
    n_saves=41,
    slice_lines=5,
    slice_points=21,
    posterior_d=1,
    posterior_depth=2,
    posterior_chains=16,
    posterior_beta_kappa=(2.0, 8.0, 32.0),
    posterior_t=20.0,
    posterior_dt=0.02,
)

# The two flows compared, by the names used in files and summaries.
FLOWS: dict[str, dlnjax.flows.AbstractFlow] = {"fiber_l2": FiberL2(), "kirwan_ness": KirwanNess()}
_LABELS = {"fiber_l2": "FiberL2 (1.17)", "kirwan_ness": "Kirwan-Ness (1.22)"}
_COLORS = {"fiber_l2": "C0", "kirwan_ness": "C1"}


# ---------------------------------------------------------------------------------------------
# The fiber and its starting points


def fiber_matrix(key, d: int, sigma_max: float = 2.0, sigma_min: float = 0.5) -> jax.Array:
    """A random ``d x d`` matrix ``X = U diag(sigma) V^T`` with Haar-like ``U``, ``V`` (the singular
    vectors of a Gaussian matrix) and ``sigma`` geometrically spaced in ``[sigma_min, sigma_max]``."""
    u, _, vh = jnp.linalg.svd(jr.normal(key, (d, d)))
    sigma = jnp.geomspace(sigma_max, sigma_min, d)
    return matmul(u * sigma, vh)


@eqx.filter_jit
def fiber_starts(key, X: jax.Array, depth: int, n: int, spread: float) -> dlnjax.DLN:
    """``n`` random points of the fiber of ``X`` (`dlnjax.random_fiber_point`), as one batched DLN."""
    keys = jr.split(key, n)
    return jax.vmap(lambda k: dlnjax.random_fiber_point(k, X, depth, spread))(keys)


def theorem1_minimum(X: jax.Array, depth: int) -> float:
    """``min_{F_X} ||W||^2 = N sum_i sigma_i^{2/N}`` (Theorem 1 of seed 001; docs/theory.md §2)."""
    sigma = np.linalg.svd(np.asarray(X), compute_uv=False)
    return float(depth * np.sum(sigma ** (2.0 / depth)))


def save_times(cfg: Config) -> jax.Array:
    return jnp.linspace(0.0, cfg.t_final, cfg.n_saves)


# ---------------------------------------------------------------------------------------------
# Integration and diagnostics


@eqx.filter_jit
def solve_batch(
    flow, starts: dlnjax.DLN, ts: jax.Array, rtol: float = 1e-9, atol: float = 1e-11
) -> dlnjax.Trajectory:
    """`dlnjax.simulate` of ``flow`` from every start of the batch (``jax.vmap`` over initial conditions).

    The result is a batched `dlnjax.Trajectory`: ``ys`` has axes (start, time, ...), ``success`` one
    flag per start.
    """
    return jax.vmap(lambda y0: dlnjax.simulate(flow, y0, ts, rtol=rtol, atol=atol))(starts)


@dataclasses.dataclass(frozen=True)
class Curves:
    """Diagnostics along a batch of trajectories; every array has shape ``(starts, times)``.

    - ``x_drift``: ``||X(t) - X||_F / ||X||_F`` (zero for every flow here).
    - ``g_norm``: ``||G(t)||_F`` (all moments together).
    - ``g_law``: ``||G(t) - e^{-2t} G(0)||_F / ||G(0)||_F``, the residual of Theorem 2 (zero for FiberL2).
    - ``sq_norm``: ``||W(t)||^2``.
    - ``balancedness``: ``||G||_F / ||W||^2`` (`dlnjax.balancedness`).
    - ``minimum``: ``N sum_i sigma_i(X(t))^{2/N}``, the Theorem-1 minimum of the fiber the state is
      actually on (it differs from that of ``X`` only by the solver's drift of ``X``).
    """

    ts: np.ndarray
    x_drift: np.ndarray
    g_norm: np.ndarray
    g_law: np.ndarray
    sq_norm: np.ndarray
    balancedness: np.ndarray
    minimum: np.ndarray

    @property
    def g_rel(self) -> np.ndarray:
        """``||G(t)||_F / ||G(0)||_F``."""
        return self.g_norm / self.g_norm[:, :1]

    @property
    def half_g_sq(self) -> np.ndarray:
        """``1/2 ||G(t)||^2``, the function the Kirwan-Ness flow decreases."""
        return 0.5 * self.g_norm**2


@jax.jit
def _curves(ys: dlnjax.DLN, ts: jax.Array, X: jax.Array):
    def one(net):
        Xt = dlnjax.end_to_end(net)
        minimum = net.depth * jnp.sum(jnp.linalg.svd(Xt, compute_uv=False) ** (2.0 / net.depth))
        return Xt, dlnjax.moments(net).reshape(-1), dlnjax.squared_norm(net), minimum

    Xt, G, sq, minimum = jax.vmap(jax.vmap(one))(ys)  # (B, T, dN, d0), (B, T, n), (B, T), (B, T)
    x_drift = jnp.linalg.norm(Xt - X, axis=(-2, -1)) / jnp.linalg.norm(X)
    g_norm = jnp.linalg.norm(G, axis=-1)
    g0 = g_norm[:, :1]
    law = jnp.exp(-2.0 * ts)[None, :, None] * G[:, :1]
    g_law = jnp.linalg.norm(G - law, axis=-1) / jnp.where(g0 > 0, g0, 1.0)
    return x_drift, g_norm, g_law, sq, g_norm / sq, minimum


def curves(traj: dlnjax.Trajectory, X: jax.Array) -> Curves:
    """The `Curves` of a batched trajectory (as returned by `solve_batch`) on the fiber of ``X``."""
    ts = np.asarray(traj.ts[0] if traj.ts.ndim == 2 else traj.ts)
    arrays = (np.asarray(a) for a in _curves(traj.ys, jnp.asarray(ts), X))
    return Curves(ts, *arrays)


# ---------------------------------------------------------------------------------------------
# Figure 1.1: d = 1, N = 2


def hyperbola_starts(x: float, w1: Sequence[float]) -> list[dlnjax.DLN]:
    """Points ``(w_1, x / w_1)`` of the hyperbola ``w_2 w_1 = x`` as depth-2 networks of 1 x 1 layers."""
    return [dlnjax.DLN([jnp.full((1, 1), a), jnp.full((1, 1), x / a)]) for a in w1]


@eqx.filter_jit
def _solve_one(flow, y0, ts, rtol, atol, progress):
    return dlnjax.simulate(flow, y0, ts, rtol=rtol, atol=atol, progress=progress)


def solve_hyperbola(
    flow,
    starts: Sequence[dlnjax.DLN],
    ts: jax.Array,
    rtol: float = 1e-9,
    atol: float = 1e-11,
    progress: bool = False,
) -> dlnjax.Trajectory:
    """Integrate ``flow`` from each start one at a time (one compilation; ``progress`` shows Diffrax's
    progress bar for each) and stack the results into one batched `dlnjax.Trajectory`."""
    trajs = [_solve_one(flow, y0, ts, rtol, atol, progress) for y0 in starts]
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trajs)


# ---------------------------------------------------------------------------------------------
# Figures (matplotlib Figure objects on the Agg canvas: no pyplot, no global state)


def plot_moment_decay(results: dict[str, Curves]) -> Figure:
    """(a) Theorem 2: ``||G(t)|| / ||G(0)||`` for every start against ``e^{-2t}``, per flow, and the
    Theorem-2 residual of FiberL2."""
    fig, axes = figure(15, 4.4, 3)
    for ax, name in zip(axes[:2], ("fiber_l2", "kirwan_ness")):
        c = results[name]
        for row in c.g_rel:
            ax.semilogy(
                c.ts, row, color=_COLORS[name], lw=2.0 if name == "fiber_l2" else 0.8, alpha=0.45
            )
        ax.semilogy(c.ts, np.exp(-2 * c.ts), "k--", lw=1.0, label=r"$e^{-2t}$ (Theorem 2)")
        ax.plot([], [], color=_COLORS[name], label=f"{_LABELS[name]}, {c.g_rel.shape[0]} starts")
        ax.set_title(rf"{_LABELS[name]}: $\|G(t)\|_F / \|G(0)\|_F$")
        ax.set_xlabel("t")
        ax.legend(loc="lower left")
        ax.grid(True, which="major", alpha=0.3)
    lo = min(np.min(results[n].g_rel[results[n].g_rel > 0]) for n in ("fiber_l2", "kirwan_ness"))
    axes[1].set_ylim(axes[0].get_ylim()[0] if lo >= axes[0].get_ylim()[0] else lo / 2, 2.0)
    axes[0].set_ylim(axes[1].get_ylim())
    c = results["fiber_l2"]
    # t = 0 is left out: the residual vanishes there by construction.
    axes[2].semilogy(
        c.ts[1:], np.maximum(c.g_law[:, 1:].max(axis=0), 1e-18), color="C0", label="max over starts"
    )
    axes[2].semilogy(
        c.ts[1:],
        np.maximum(np.median(c.g_law[:, 1:], axis=0), 1e-18),
        color="C0",
        ls=":",
        label="median",
    )
    axes[2].set_title(r"FiberL2: $\|G(t) - e^{-2t}G(0)\|_F / \|G(0)\|_F$")
    axes[2].set_xlabel("t")
    axes[2].legend()
    axes[2].grid(True, which="major", alpha=0.3)
    return fig


def plot_norm_approach(results: dict[str, Curves], minimum: float) -> Figure:
    """(b) Theorem 1: ``||W(t)||^2`` tends to ``N sum_i sigma_i^{2/N}`` under both flows."""
    fig, axes = figure(12, 4.4, 2)
    for name, c in results.items():
        for row, own in zip(c.sq_norm, c.minimum):
            axes[0].plot(c.ts, row, color=_COLORS[name], lw=0.8, alpha=0.45)
            axes[1].semilogy(
                c.ts,
                np.maximum(np.abs(row - own) / own, 1e-17),
                color=_COLORS[name],
                lw=0.8,
                alpha=0.45,
            )
        for ax in axes:
            ax.plot([], [], color=_COLORS[name], label=_LABELS[name])
    c = results["fiber_l2"]
    mid = len(c.ts) // 2  # anchor mid-way: late times reach the round-off floor
    excess = np.median(np.abs(c.sq_norm[:, mid] - c.minimum[:, mid]) / c.minimum[:, mid])
    ref = excess * np.exp(-4 * (c.ts - c.ts[mid]))
    keep = ref <= 2 * np.max(np.abs(c.sq_norm[:, 0] - c.minimum[:, 0]) / c.minimum[:, 0])
    axes[1].semilogy(
        c.ts[keep],
        ref[keep],
        color="0.4",
        ls=":",
        label=r"$\propto e^{-4t}$ ($\|G\|^2$ under FiberL2)",
    )
    axes[0].axhline(
        minimum,
        color="k",
        ls="--",
        lw=1.6,
        label=rf"Theorem 1: $N\,\Sigma_i\,\sigma_i^{{2/N}} = {minimum:.4f}$",
    )
    axes[0].set_title(r"$\|W(t)\|^2$ on the fiber")
    axes[1].set_title(
        r"$\|W(t)\|^2 / m - 1$,  $m = N\,\Sigma_i\,\sigma_i(X(t))^{2/N}$ (excludes the solver's drift of $X$)",
        fontsize=10,
    )
    for ax in axes:
        ax.set_xlabel("t")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(loc="upper right")
    return fig


def plot_hyperbola(
    x: float, results: dict[str, dlnjax.Trajectory], curves_: dict[str, Curves]
) -> Figure:
    """(c) Figure 1.1 of seed 001: fibers ``w_2 w_1 = c``, the balanced diagonals ``w_2 = +-w_1``,
    and the trajectories of both flows along the fiber ``w_2 w_1 = x`` (markers at equal time
    steps), with ``|G(t)| / |G(0)|`` (``G = w_1^2 - w_2^2``) beside it."""
    fig, axes = figure(13, 6, 2)
    trajs = {
        name: (np.asarray(t.ys.first[:, :, 0, 0]), np.asarray(t.ys.last[:, :, 0, 0]))
        for name, t in results.items()
    }
    lim = 1.15 * max(max(np.abs(w1).max(), np.abs(w2).max()) for w1, w2 in trajs.values())
    _draw_fibers(axes[0], x, lim)
    _draw_hyperbola_paths(axes[0], trajs, float(next(iter(curves_.values())).ts[1]), lim)
    _draw_hyperbola_decay(axes[1], x, curves_)
    return fig


def _draw_fibers(ax, x: float, lim: float) -> None:
    """The fibers ``w_2 w_1 = c`` around ``x``, the level sets of ``G``, the balanced variety and points."""
    grid = np.linspace(-lim, lim, 401)
    a, b = np.meshgrid(grid, grid)
    levels = [
        c
        for c in np.linspace(-3, 3, 13) * abs(x)
        if abs(c) > 1e-12 and abs(abs(c) - abs(x)) > 1e-12
    ]
    ax.contour(a, b, a * b, levels=levels, colors="0.82", linewidths=0.7)  # other fibers
    ax.contour(
        a, b, a**2 - b**2, levels=levels, colors="0.82", linewidths=0.7, linestyles=":"
    )  # level sets of G
    ax.plot(
        [],
        [],
        color="0.75",
        lw=0.7,
        label=r"fibers $w_2 w_1 = c$ $\perp$ level sets of $G$ (dotted)",
    )
    ax.contour(a, b, a * b, levels=[-abs(x)], colors="0.55", linewidths=1.0, linestyles="--")
    ax.contour(a, b, a * b, levels=[x], colors="k", linewidths=1.8)
    ax.plot(grid, grid, color="C2", lw=1.4, label=r"balanced variety $w_2 = \pm w_1$ ($G = 0$)")
    ax.plot(grid, -grid, color="C2", lw=1.4)
    r = math.sqrt(abs(x))
    ax.plot(
        [r, -r, r, -r],
        [r, -r, -r, r],
        "*",
        color="C2",
        ms=14,
        mec="k",
        zorder=5,
        label=r"balanced points $(\pm\sqrt{|x|}, \pm\sqrt{|x|})$",
    )
    ax.plot([], [], "k", lw=1.8, label=rf"fiber $w_2 w_1 = {x:g}$")
    ax.plot([], [], color="0.55", ls="--", label=rf"fiber $w_2 w_1 = {-x:g}$")


def _draw_hyperbola_paths(ax, trajs: dict, dt: float, lim: float) -> None:
    """The saved points ``(w_1(t), w_2(t))`` of each flow (every ``dt``), the starts, and the axes' frame."""
    for name, (w1, w2) in trajs.items():
        marker = "o" if name == "fiber_l2" else "x"
        for i in range(w1.shape[0]):
            ax.plot(
                w1[i],
                w2[i],
                marker,
                color=_COLORS[name],
                ms=5 if marker == "o" else 7,
                mfc="none",
                mew=1.2,
            )
        ax.plot(
            [],
            [],
            marker,
            color=_COLORS[name],
            mfc="none",
            label=rf"{_LABELS[name]}, every $\Delta t = {dt:.3g}$",
        )
    w1, w2 = next(iter(trajs.values()))
    ax.plot(w1[:, 0], w2[:, 0], "ks", ms=6, label="starts")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xlabel("$w_1$")
    ax.set_ylabel("$w_2$")
    ax.set_title(r"Figure 1.1 of seed 001: $d = 1$, $N = 2$, fiber $w_2 w_1 = x$")
    ax.legend(loc="lower right", fontsize=8)


def _draw_hyperbola_decay(ax, x: float, curves_: dict[str, Curves]) -> None:
    """``|G(t)| / |G(0)|`` of both flows against Theorem 2 and the Kirwan-Ness bound."""
    for name, c in curves_.items():
        for row in c.g_rel:
            ax.semilogy(
                c.ts, row, color=_COLORS[name], lw=2.0 if name == "fiber_l2" else 1.0, alpha=0.6
            )
        ax.plot([], [], color=_COLORS[name], label=_LABELS[name])
    ts = next(iter(curves_.values())).ts
    ax.semilogy(ts, np.exp(-2 * ts), "k--", lw=1.0, label=r"$e^{-2t}$ (Theorem 2)")
    ax.semilogy(
        ts,
        np.exp(-8 * abs(x) * ts),
        "k:",
        label=r"$e^{-8|x|t}$ (Kirwan-Ness bound, $\dot G = -4|w|^2 G$)",
    )
    ax.set_ylim(1e-12, 2)
    ax.set_xlabel("t")
    ax.set_title(r"$|G(t)| / |G(0)|$, $G = w_1^2 - w_2^2$")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(True, which="major", alpha=0.3)


# ---------------------------------------------------------------------------------------------
# Measurements


def measure(results: dict[str, Curves], minimum: float) -> dict:
    """The measured invariant errors and convergence of a batch run (all plain floats and bools).

    - ``x_drift_max``: max over starts and times of ``||X(t) - X|| / ||X||``, per flow;
    - ``g_law_max`` (FiberL2): max of ``||G(t) - e^{-2t} G(0)|| / ||G(0)||`` (Theorem 2), and
      ``g_law_pointwise_max``, the same divided by ``e^{-2t}`` (relative to the predicted ``G(t)``);
    - ``theorem1_gap_final``: max over starts of ``| ||W(T)||^2 - min | / min`` (Theorem 1), per flow,
      and ``theorem1_gap_final_own``, the same against the minimum of the fiber of ``X(T)`` (which
      removes the solver's drift of ``X`` from the measurement);
    - ``balancedness_final``: max over starts of ``||G(T)|| / ||W(T)||^2``, per flow;
    - ``kirwan_ness_half_g_sq_monotone``: whether ``1/2 ||G||^2`` never increased between saves
      (beyond ``1e-12`` of its initial value) under Kirwan-Ness, with the largest relative increase.
    """
    out: dict = {
        "x_drift_max": {},
        "theorem1_gap_final": {},
        "theorem1_gap_final_own": {},
        "balancedness_final": {},
        "g_rel_final_max": {},
    }
    for name, c in results.items():
        out["x_drift_max"][name] = float(c.x_drift.max())
        out["theorem1_gap_final"][name] = float(
            np.max(np.abs(c.sq_norm[:, -1] - minimum)) / minimum
        )
        out["theorem1_gap_final_own"][name] = float(
            np.max(np.abs(c.sq_norm[:, -1] - c.minimum[:, -1]) / c.minimum[:, -1])
        )
        out["balancedness_final"][name] = float(c.balancedness[:, -1].max())
        out["g_rel_final_max"][name] = float(c.g_rel[:, -1].max())
    if "fiber_l2" in results:
        c = results["fiber_l2"]
        out["g_law_max"] = float(c.g_law.max())
        out["g_law_pointwise_max"] = float((c.g_law * np.exp(2 * c.ts)[None, :]).max())
    if "kirwan_ness" in results:
        h = results["kirwan_ness"].half_g_sq
        rise = np.max(np.diff(h, axis=1) / h[:, :1])
        out["kirwan_ness_half_g_sq_monotone"] = bool(rise <= 1e-12)
        out["kirwan_ness_half_g_sq_max_relative_increase"] = float(max(rise, 0.0))
    return out


def rates(results: dict[str, Curves], X: jax.Array, depth: int) -> dict:
    """The decay rates of ``||G||``: measured (median over starts of the slope of ``log ||G||`` over the last quarter
    of the saves) against the predictions, 2 for FiberL2 (Theorem 2) and, for Kirwan-Ness, the slowest rate of the
    flow linearized at the balanced orbit, ``8 sigma_min^(2/N) (1 - cos(pi/N))`` (`dlnjax.kirwan_ness_rates`,
    docs/theory.md §10; the slowest mode dominates only once the faster ones have died out)."""
    s = jnp.linalg.svd(X, compute_uv=False)
    out = {
        "fiber_l2_theorem_2": 2.0,
        "kirwan_ness_linearized_min": float(jnp.min(dlnjax.kirwan_ness_rates(s, depth))),
    }
    for name, c in results.items():
        k = max(2, (3 * len(c.ts)) // 4)
        slope = -(np.log(c.g_norm[:, -1]) - np.log(c.g_norm[:, k])) / (c.ts[-1] - c.ts[k])
        out[f"{name}_measured"] = float(np.median(slope))
    return out


def _steps(traj: dlnjax.Trajectory) -> dict:
    n = np.asarray(traj.stats["num_steps"])
    return {"min": int(n.min()), "max": int(n.max()), "mean": float(n.mean())}


# ---------------------------------------------------------------------------------------------
# Writing


def _save_curves(out: Path, name: str, c: Curves, extra: dict):
    np.savez(
        out / f"{name}.npz",
        ts=c.ts,
        x_drift=c.x_drift,
        g_norm=c.g_norm,
        g_law=c.g_law,
        sq_norm=c.sq_norm,
        balancedness=c.balancedness,
        minimum=c.minimum,
        **extra,
    )
    with open(out / f"{name}_curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "start",
                "t",
                "G_norm",
                "G_rel",
                "G_law_residual",
                "W_sq_norm",
                "X_drift",
                "balancedness",
            ]
        )
        for i in range(c.g_norm.shape[0]):
            for j, t in enumerate(c.ts):
                w.writerow(
                    [i, f"{t:.6g}"]
                    + [
                        f"{a[i, j]:.17g}"
                        for a in (c.g_norm, c.g_rel, c.g_law, c.sq_norm, c.x_drift, c.balancedness)
                    ]
                )


def _save_hyperbola(out: Path, cfg: Config, ts: np.ndarray, htrajs: dict) -> None:
    """``figure_1_1.npz`` (the paths ``w_1(t)``, ``w_2(t)`` of each flow) and ``figure_1_1_curves.csv``."""
    hdata = {}
    for name, t in htrajs.items():
        hdata[f"{name}_w1"] = np.asarray(t.ys.first[:, :, 0, 0])
        hdata[f"{name}_w2"] = np.asarray(t.ys.last[:, :, 0, 0])
    np.savez(
        out / "figure_1_1.npz",
        ts=ts,
        x=cfg.x,
        w1_starts=np.asarray(cfg.hyperbola_w1),
        **hdata,
    )
    with open(out / "figure_1_1_curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["flow", "start", "t", "w1", "w2", "G"])
        for name in htrajs:
            w1, w2 = hdata[f"{name}_w1"], hdata[f"{name}_w2"]
            for i in range(w1.shape[0]):
                for j, t in enumerate(ts):
                    w.writerow(
                        [
                            name,
                            i,
                            f"{t:.6g}",
                            f"{w1[i, j]:.17g}",
                            f"{w2[i, j]:.17g}",
                            f"{w1[i, j] ** 2 - w2[i, j] ** 2:.17g}",
                        ]
                    )


def _summary_text(s: dict) -> str:
    m, h, r = s["measured"], s["figure_1_1"]["measured"], s["rates"]
    c = s["config"]
    lines = summary_head(s, "balancing on a fiber (Lindsey & Menon, seed 001)")
    lines += [
        f"fiber: d = {c['d']}, N = {c['depth']}, X = U diag(sigma) V^T, sigma in [{c['sigma_min']}, {c['sigma_max']}], "
        f"{c['n_starts']} random starts (spread {c['spread']}), t in [0, {c['t_final']}], {c['n_saves']} saves, "
        f"Tsit5 rtol {c['rtol']:g} atol {c['atol']:g}, float64, seed {s['seed']}",
        f"Theorem 1 minimum N sum sigma_i^(2/N) = {s['theorem1_minimum']:.12g}",
        "",
        f"{'measured (max over starts)':<52}{'FiberL2 (1.17)':>14}{'Kirwan-Ness':>14}",
    ]

    def row(label, key, fmt=".2e"):
        vals = m[key]
        lines.append(f"{label:<52}{vals['fiber_l2']:>14{fmt}}{vals['kirwan_ness']:>14{fmt}}")

    row("X drift  max_t |X(t) - X| / |X|", "x_drift_max")
    row("Theorem 1 gap at T  |‖W‖² - min| / min", "theorem1_gap_final")
    row("  same, min of the fiber of X(T) (no X drift)", "theorem1_gap_final_own")
    row("balancedness at T  ‖G‖ / ‖W‖²", "balancedness_final")
    row("‖G(T)‖ / ‖G(0)‖", "g_rel_final_max")
    lines += [
        f"  (e^(-2T) = {math.exp(-2 * c['t_final']):.2e})",
        "",
        f"Theorem 2 under FiberL2: max |G(t) - e^(-2t) G(0)| / |G(0)|       = {m['g_law_max']:.2e}",
        f"                         max |G(t) - e^(-2t) G(0)| / |e^(-2t) G(0)| = {m['g_law_pointwise_max']:.2e}",
        f"Kirwan-Ness: 1/2 ‖G‖² monotone non-increasing: {m['kirwan_ness_half_g_sq_monotone']} "
        f"(largest relative increase between saves {m['kirwan_ness_half_g_sq_max_relative_increase']:.1e})",
        f"decay rate of ‖G‖ over the last quarter (median over starts): FiberL2 {r['fiber_l2_measured']:.4f} "
        f"(Theorem 2: 2), Kirwan-Ness {r['kirwan_ness_measured']:.4f} (linearized at the balanced orbit, slowest: "
        f"{r['kirwan_ness_linearized_min']:.4f})",
        "",
        f"Figure 1.1 (d = 1, N = 2, fiber w2 w1 = {s['figure_1_1']['x']:g}, {len(s['figure_1_1']['w1_starts'])} starts):",
        f"  max |w2 w1 - x| / |x|: FiberL2 {h['x_drift_max']['fiber_l2']:.2e}, Kirwan-Ness {h['x_drift_max']['kirwan_ness']:.2e}",
        f"  Theorem 2 residual under FiberL2: {h['g_law_max']:.2e};  |G(T)|/|G(0)| max: "
        f"FiberL2 {h['g_rel_final_max']['fiber_l2']:.2e}, Kirwan-Ness {h['g_rel_final_max']['kirwan_ness']:.2e}",
        "",
        "solver success (all runs): " + ", ".join(f"{k} {v}" for k, v in s["success"].items()),
        "solver steps: " + ", ".join(f"{k} {v['min']}-{v['max']}" for k, v in s["steps"].items()),
        *_posterior_lines(s),
        wall_times(s),
    ]
    if s["problems"]:
        lines += ["", *failed_banner(s)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# The experiment


def run(
    out: str | Path = "results/lindsey-menon",
    *,
    quick: bool = False,
    seed: int = 0,
    config: Config | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> int:
    """Run the experiment, writing into ``out`` (created), and return an exit code.

    Figures ``moment_decay.png`` (a), ``theorem1_norm.png`` (b), ``figure_1_1.png`` (c), ``figure_1_2.png`` (d, the
    slices ``F_X ∩ M_G``), ``posterior.png`` (e, the posterior's concentration on ``O_X``); data ``fiber_l2.npz``,
    ``kirwan_ness.npz``, ``figure_1_1.npz``, ``figure_1_2.npz``, the matching ``*_curves.csv`` and ``posterior.csv``;
    ``summary.txt`` and ``summary.json``. Each file is written as soon as it is complete.
    Returns 0, or 1 if a solve failed or an exact invariant (``X`` constant, Theorem 2, the
    Kirwan-Ness flow decreasing ``1/2 ||G||^2``, the slices against their closed form) is violated beyond
    round-off, or the posterior's rescaled excess misses its limit (`_new_problems`); the summary then
    says so in capitals. ``config`` overrides ``quick``; ``progress`` shows Diffrax's progress for
    the Figure 1.1 solves (a bar on a terminal, lines in a log: `dlnjax._progress`).
    """
    cfg = pick_config(config, quick, DEFAULT, QUICK)
    session = start("lindsey-menon", out, seed, log)
    X, starts, minimum = _fiber(session, cfg, seed)
    ts = save_times(cfg)
    results, success, steps = {}, {}, {}
    for name, flow in FLOWS.items():
        results[name], success[name], steps[name] = _fiber_flow(
            session, cfg, name, flow, X, starts, minimum, ts
        )
    session.say("figures (a) moment decay and (b) Theorem-1 norm")
    save_figure(plot_moment_decay(results), session.out / "moment_decay.png")
    save_figure(plot_norm_approach(results, minimum), session.out / "theorem1_norm.png")
    measured = measure(results, minimum)
    hmeasured, hsuccess, hsteps = _figure_1_1(session, cfg, ts, progress)
    slices, post = _figure_1_2(session, cfg), _posterior(session, cfg, seed)
    success.update(hsuccess, posterior=all(st["success"] for st in post["stats"]))
    steps.update(hsteps)
    body = {
        "theorem1_minimum": minimum,
        "singular_values": [float(s) for s in np.linalg.svd(np.asarray(X), compute_uv=False)],
        "measured": measured,
        "rates": rates(results, X, cfg.depth),
        "figure_1_1": {"x": cfg.x, "w1_starts": list(cfg.hyperbola_w1), "measured": hmeasured},
        "figure_1_2": slices,
        "posterior": post,
        "success": success,
        "steps": steps,
    }
    problems = _problems(success, measured, hmeasured) + _new_problems(slices, post)
    return session.finish(problems, dataclasses.asdict(cfg), body, _summary_text)


def _fiber(session: Session, cfg: Config, seed: int) -> tuple[jax.Array, dlnjax.DLN, float]:
    """The matrix ``X`` of the seed, the batch of starts on its fiber, and the Theorem-1 minimum."""
    session.say(
        f"fiber of a {cfg.d}x{cfg.d} matrix X at depth N = {cfg.depth}; {cfg.n_starts} random starts (seed {seed})"
    )
    kx, ks = jr.split(jr.PRNGKey(seed))
    X = fiber_matrix(kx, cfg.d, cfg.sigma_max, cfg.sigma_min)
    starts = fiber_starts(ks, X, cfg.depth, cfg.n_starts, cfg.spread)
    return X, starts, theorem1_minimum(X, cfg.depth)


def _fiber_flow(
    session: Session, cfg: Config, name: str, flow, X, starts, minimum: float, ts
) -> tuple[Curves, bool, dict]:
    """One flow from every start of the fiber (timed as ``name``): its curves, written to ``name.npz`` and
    ``name_curves.csv``; returns the curves, whether every solve succeeded and the step counts."""
    with session.timed(
        name,
        f"{_LABELS[name]}: integrating {cfg.n_starts} starts on t in [0, {cfg.t_final}] (vmap; compiling first)...",
    ):
        traj = solve_batch(flow, starts, ts, cfg.rtol, cfg.atol)
        jax.block_until_ready(traj.ys)
    ok, steps = bool(np.all(np.asarray(traj.success))), _steps(traj)
    c = curves(traj, X)
    final = jax.tree_util.tree_map(lambda y: np.asarray(y[:, -1]), traj.ys)
    extra = {
        "X": np.asarray(X),
        "theorem1_minimum": minimum,
        "success": np.asarray(traj.success),
        "num_steps": np.asarray(traj.stats["num_steps"]),
        "final_layers": np.asarray(jnp.stack(final.layers, axis=1)),
    }
    _save_curves(session.out, name, c, extra)
    session.say(
        f"  done in {session.timings[name]:.1f} s: success {ok}, steps {steps['min']}-{steps['max']}, "
        f"max X drift {c.x_drift.max():.1e}, max ||G(T)||/||G(0)|| {c.g_rel[:, -1].max():.1e}"
    )
    return c, ok, steps


def _figure_1_1(session: Session, cfg: Config, ts, progress: bool) -> tuple[dict, dict, dict]:
    """(c) both flows on the hyperbola (timed as ``figure_1_1``), written to ``figure_1_1.npz``, ``.csv``
    and ``.png``; returns the `measure` of their curves, the success flags and the step counts."""
    session.say(
        f"Figure 1.1: d = 1, N = 2, fiber w2 w1 = {cfg.x:g}, {len(cfg.hyperbola_w1)} starts per flow"
    )
    htrajs: dict[str, dlnjax.Trajectory] = {}
    hcurves: dict[str, Curves] = {}
    with session.timed("figure_1_1"):
        hstarts = hyperbola_starts(cfg.x, cfg.hyperbola_w1)
        for name, flow in FLOWS.items():
            session.say(f"  {_LABELS[name]}")
            htrajs[name] = solve_hyperbola(flow, hstarts, ts, cfg.rtol, cfg.atol, progress=progress)
            hcurves[name] = curves(htrajs[name], jnp.full((1, 1), cfg.x))
    _save_hyperbola(session.out, cfg, np.asarray(ts), htrajs)
    save_figure(plot_hyperbola(cfg.x, htrajs, hcurves), session.out / "figure_1_1.png")
    success = {f"figure_1_1_{n}": bool(np.all(np.asarray(t.success))) for n, t in htrajs.items()}
    steps = {f"figure_1_1_{n}": _steps(t) for n, t in htrajs.items()}
    return measure(hcurves, 2 * abs(cfg.x)), success, steps


def _problems(success: dict, measured: dict, hmeasured: dict) -> list[str]:
    """The failed checks: a solve, the monotone ``1/2 ||G||^2`` of Kirwan-Ness, ``X`` constant, Theorem 2."""
    problems = [f"solve {k} did not succeed" for k, v in success.items() if not v]
    if not measured["kirwan_ness_half_g_sq_monotone"]:
        problems.append("1/2 ||G||^2 increased under Kirwan-Ness")
    for where, m in (("", measured), ("Figure 1.1 ", hmeasured)):
        for name, v in m["x_drift_max"].items():
            if not v < 1e-6:
                problems.append(f"{where}{name}: X drifted by {v:.1e}")
        if not m["g_law_max"] < 1e-6:
            problems.append(f"{where}FiberL2 breaks Theorem 2 by {m['g_law_max']:.1e}")
    return problems


def _figure_1_2(session: Session, cfg: Config) -> dict:
    """(d) Figure 1.2 (timed as ``figure_1_2``): the slices of the fiber ``w_3 w_2 w_1 = x``, written to
    ``figure_1_2.npz`` and ``.png``; returns their largest errors against the closed form, ``X`` and ``G``."""
    session.say(
        f"Figure 1.2: d = 1, N = 3, fiber w3 w2 w1 = {cfg.x:g} sliced by G: 2 x {cfg.slice_lines} curves "
        f"of {cfg.slice_points} points (fiber_point_with_moments)"
    )
    G, t = slice_grid(cfg.slice_g_max, cfg.slice_lines, cfg.slice_points, cfg.slice_g0, 13)
    with session.timed("figure_1_2"):
        w, h = slice_points(cfg.x, G)
    exact = slices_closed_form(cfg.x, G)
    np.savez(
        session.out / "figure_1_2.npz", G=G, w=w, log_A=h, closed_form=exact, path_t=t, x=cfg.x
    )
    fig = plot_slices(cfg.x, w, h, cfg.slice_lines, cfg.slice_points, cfg.slice_g_max)
    save_figure(fig, session.out / "figure_1_2.png")
    moments_ = np.stack([w[:, 0] ** 2 - w[:, 1] ** 2, w[:, 1] ** 2 - w[:, 2] ** 2], -1)
    return {
        "n_slices": len(G),
        "closed_form_max": float(np.max(np.abs(w - exact))),
        "x_error_max": float(np.max(np.abs(np.prod(w, axis=1) - cfg.x)) / abs(cfg.x)),
        "moments_error_max": float(np.max(np.abs(moments_ - G))),
    }


def _posterior_fiber(cfg: Config, seed: int) -> tuple[jax.Array, float]:
    """The ``X`` of the posterior runs (``[[x]]`` for ``d = 1``) and its Theorem-1 minimum."""
    d, N = cfg.posterior_d, cfg.posterior_depth
    if d == 1:
        X = jnp.full((1, 1), cfg.x)
    else:
        X = fiber_matrix(jr.PRNGKey(seed + 1), d, cfg.sigma_max, cfg.sigma_min)
    return X, theorem1_minimum(X, N)


def _posterior(session: Session, cfg: Config, seed: int) -> dict:
    """(e) FiberLangevin at each ``beta kappa`` (timed as ``posterior``), written to ``posterior.csv`` and
    ``posterior.png``; returns the statistics, the fitted powers and, for ``d = 1``, ``N = 2``, the quadrature."""
    d, N = cfg.posterior_d, cfg.posterior_depth
    X, minimum = _posterior_fiber(cfg, seed)
    m, n_steps = codimension(d, N), int(round(cfg.posterior_t / cfg.posterior_dt))
    ts = jnp.arange(0, n_steps + 1, max(1, int(round(0.5 / cfg.posterior_dt)))) * cfg.posterior_dt
    burn = int(np.searchsorted(np.asarray(ts), cfg.posterior_burn))
    session.say(
        f"posterior on the fiber: d = {d}, N = {N} (m = {m}), {cfg.posterior_chains} FiberLangevin chains per "
        f"beta kappa in {list(cfg.posterior_beta_kappa)}, t in [0, {cfg.posterior_t:g}], dt {cfg.posterior_dt:g}"
    )
    stats = []
    with session.timed("posterior"):
        for i, bk in enumerate(cfg.posterior_beta_kappa):
            start = dlnjax.fiber_center(X, N)
            key = jr.fold_in(jr.PRNGKey(seed), i)
            traj = posterior_chains(
                key,
                start,
                jnp.asarray(bk),
                cfg.posterior_chains,
                ts,
                cfg.posterior_dt,
                n_steps + 16,
            )
            stats.append(posterior_stats(traj, X, minimum, bk, burn))
            st = stats[-1]
            session.say(
                f"  beta kappa {bk:g}: (E|W|^2 - min) beta kappa = {st['scaled_excess']:.3f} "
                f"+- {st['scaled_excess_err']:.3f} (m = {m}), E|G| = {st['g_norm']:.3e}"
            )
    exact = None
    if d == 1 and N == 2:
        exact = [hyperbola_exact(cfg.x, bk) for bk in cfg.posterior_beta_kappa]
    _save_posterior(session.out, stats, exact)
    save_figure(plot_posterior(stats, m, exact, minimum), session.out / "posterior.png")
    return {
        "d": d,
        "depth": N,
        "m": m,
        "minimum": minimum,
        "stats": stats,
        "exact": exact,
        "excess_power": fitted_power(stats, "excess"),
        "g_power": fitted_power(stats, "g_norm"),
    }


def _save_posterior(out: Path, stats: list[dict], exact: list[dict] | None) -> None:
    keys = (
        "beta_kappa",
        "sq_norm",
        "sq_norm_err",
        "excess",
        "scaled_excess",
        "g_norm",
        "x_drift_max",
    )
    with open(out / "posterior.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(keys) + ["sq_norm_quadrature", "g_norm_quadrature"])
        for i, st in enumerate(stats):
            ex = ["", ""] if exact is None else [exact[i]["sq_norm"], exact[i]["g_norm"]]
            w.writerow(
                [f"{st[k]:.10g}" for k in keys] + [f"{v:.10g}" if v != "" else v for v in ex]
            )


def _new_problems(slices: dict, post: dict) -> list[str]:
    """The checks of Figure 1.2 (the slices against their closed form, on the fiber, with the prescribed ``G``) and of
    the posterior: ``X`` kept, the rescaled excess at the largest ``beta kappa`` within ``5`` standard errors plus
    ``20 %`` of ``m`` (the ``O(1/(beta kappa))`` correction), the fitted power of the excess within ``0.25`` of ``-1``,
    and, for ``d = 1``, ``N = 2``, every ``E ||W||^2`` within 5 standard errors of the quadrature."""
    problems = []
    for key in ("closed_form_max", "x_error_max", "moments_error_max"):
        if not slices[key] < 1e-8:
            problems.append(f"Figure 1.2: slices off by {slices[key]:.1e} ({key})")
    stats, m = post["stats"], post["m"]
    if not max(st["x_drift_max"] for st in stats) < 1e-8:
        problems.append("posterior: X drifted under FiberLangevin")
    last = stats[-1]
    if not abs(last["scaled_excess"] - m) <= 5 * last["scaled_excess_err"] + 0.2 * m:
        problems.append(f"posterior: rescaled excess {last['scaled_excess']:.3f} misses m = {m}")
    if not abs(post["excess_power"] + 1) <= 0.25:
        problems.append(
            f"posterior: excess falls like (beta kappa)^{post['excess_power']:.2f}, not ^-1"
        )
    for st, ex in zip(stats, post["exact"] or []):
        if not abs(st["sq_norm"] - ex["sq_norm"]) <= 5 * st["sq_norm_err"]:
            problems.append(
                f"posterior: E|W|^2 at beta kappa {st['beta_kappa']:g} misses the quadrature"
            )
    return problems


def _posterior_lines(s: dict) -> list[str]:
    """The summary's lines for Figure 1.2 and the posterior table."""
    sl, p = s["figure_1_2"], s["posterior"]
    lines = [
        "",
        f"Figure 1.2 (d = 1, N = 3, {sl['n_slices']} slices F_X ∩ M_G): max |w - closed form| "
        f"{sl['closed_form_max']:.1e}, max |X - x|/|x| {sl['x_error_max']:.1e}, max |G - target| "
        f"{sl['moments_error_max']:.1e}",
        "",
        f"posterior on the fiber (FiberLangevin; d = {p['d']}, N = {p['depth']}, m = {p['m']}, "
        f"min = N sum sigma^(2/N) = {p['minimum']:.6g}):",
        f"{'beta kappa':>12}{'E|W|^2':>12}{'(E|W|^2-min) bk':>20}{'E|G|':>12}{'max X drift':>13}"
        + ("" if p["exact"] is None else f"{'quadrature':>24}"),
    ]
    for i, st in enumerate(p["stats"]):
        scaled = f"{st['scaled_excess']:.3f} +- {st['scaled_excess_err']:.3f}"
        row = f"{st['beta_kappa']:>12g}{st['sq_norm']:>12.5f}{scaled:>20}{st['g_norm']:>12.4f}{st['x_drift_max']:>13.1e}"
        if p["exact"] is not None:
            ex = p["exact"][i]
            row += (
                f"{(ex['sq_norm'] - p['minimum']) * st['beta_kappa']:>12.3f}{ex['g_norm']:>12.4f}"
            )
        lines.append(row)
    lines.append(
        f"fitted powers of beta kappa: excess {p['excess_power']:.3f} (theory -1), E|G| {p['g_power']:.3f} "
        "(theory -1/2)"
    )
    return lines
