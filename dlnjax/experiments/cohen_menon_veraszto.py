"""Deep linear networks for matrix completion, and the infinite-depth limit: Cohen, Menon & Veraszto (seed 003).

The end-to-end matrix of a balanced network trained by gradient flow follows ``dX/dt = -A_N(X)[grad E(X)]``
(docs/theory.md §5; `dlnjax.flows.EndToEnd`), and ``depth = inf`` is its limit in the rescaled time ``tau = N t``.
Every run starts at ``X0 = scale * Q`` with ``Q`` a fixed Gaussian matrix normalized to ``||Q||_F = 1``: the
**initialization scale is that of the end-to-end matrix** (``||X0||_F = scale``), the same ``X0`` for every depth.
For finite ``N`` this is the end-to-end matrix of the balanced network ``dlnjax.fiber_center(X0, N)`` (weights of
size ``~ scale^(1/N)``), whose weight flow the end-to-end flow reproduces exactly; for ``N = inf`` there is no
network, only the limit flow. (Arora, Cohen, Hu & Luo 2019 quote the standard deviation ``s`` of each weight
instead, which for ``n x n`` layers gives ``||X0||_F ~ (s sqrt(n))^N sqrt(n)``.) The loss is
`dlnjax.losses.MatrixCompletion`, ``E(X) = (1/|Omega|) sum_Omega (X_ij - M_ij)^2``. A run stops when
``E(X) <= loss_target * E(0)``: the vector field is switched off there (`UntilConverged`), so the state saved at the
final time is the first point of the trajectory below the target (a positive time change does not alter the path).

Three measurements:

(a) *The 2 x 2 completion* with ``X_11 = X_22 = 1`` observed. The minimizers are ``[[1, a], [b, 1]]``; the rank-one
    ones lie on the hyperbola ``ab = 1``. Trajectories for ``N`` in ``toy_depths`` from ``toy_starts`` random
    directions ``Q`` at each scale of ``toy_scales``, drawn in the ``(a, b) = (X_12, X_21)`` plane, and the distance
    of the limit to the rank-one set, ``|ab - 1|`` (with the limit's own diagonal: ``|det X|``) and ``sigma_min``,
    against ``N`` and the scale. ``N = 1`` (plain gradient flow) leaves the off-diagonal entries at their initial
    values, so ``ab ~ scale^2`` and the distance stays ~1; depth and small scale push the limit onto ``ab = 1``.
(b) *Matrix completion as in Arora, Cohen, Hu & Luo (2019)*: an ``n x n`` matrix of rank ``rank`` with
    ``||M||_F = 1``, ``observed`` entries, depths ``depths`` and scales ``scales``: the recovery error
    ``||X - M||_F / ||M||_F`` and the (entropy) effective rank of the limit, beside the minimum-nuclear-norm
    completion ``min ||X||_* s.t. X_Omega = M_Omega`` (`nuclear_norm_completion`: accelerated proximal gradient
    with singular value thresholding by ``eigh`` of ``X^T X``, continuation on the penalty; its optimality is
    certified by the duality gap of `nuclear_norm_certificate`).
(c) *The volume density along the trajectories* of (a) and (b), ``log rho_N(X(t))`` (`dlnjax._metric.
    log_volume_density`, ``N >= 2``; it is 0 at ``N = 1``), to examine the proposal of seed 003 that small
    initialization biases training toward regions of high volume: for each trajectory the change from start to
    limit and whether it is monotone. (From a small start the density is largest at the start, where every
    singular value is small; see the summary for what is measured.)

Default sizes. The published grid of (b) is ``n = 100``, rank 5, 2000 and 5000 entries, depths 1-4 and inf,
scales 1e-3 ... 1e-6. `DEFAULT` keeps the sizes, observation counts and depths but **reduces the scales to
1e-4 and 1e-6 and stops at ``E <= 1e-4 E(0)``** (the recovery error of the deep runs changes by a few percent
between ``1e-4 E(0)`` and ``1e-6 E(0)``): the tail of the flow is stiff (small singular values move slowly while
the large ones limit the explicit step; measured run times: docs/performance.md, "Lab notes").
``Config(scales=(1e-3, 1e-4, 1e-5, 1e-6))`` restores
the published grid. `QUICK` (CI) is a small instance of everything.

At ``N = inf`` a small start is slow to leave the origin: in the rescaled time, a singular value grows like
``ds/dtau = s^(2 - 2/N) g`` at depth ``N`` (``s^2 g`` at ``N = inf``), so the escape time from ``s_0`` grows like
``s_0^-(1 - 2/N)``, i.e. ``1/s_0`` at ``N = inf`` against ``s_0^(-1/2)`` at ``N = 4``. Hence ``inf_max_steps``
(131 072) beside ``max_steps`` (8192) for the finite depths: at ``N = inf`` Tsit5 needs tens of thousands of steps
from scale 1e-4, and from 1e-6 it does not reach the target within ``inf_max_steps`` (the measured step counts and
run times of the default run are on the docs' performance page, docs/performance.md, "Lab notes"). The cause is
stiffness, not accuracy: once the first singular values have escaped and settled, they limit the explicit step to ``O(1)``
(their curvature ``a_inf ~ sigma_1^2``), while the remaining ones still escape on the time scale ``1/s_0``; so the
step count grows like ``1/s_0`` (``benchmarks/inf_depth_steps.py``, figures in ``benchmarks/README.md``): ~100x
more steps at 1e-6 than at 1e-4. `DEFAULT` therefore runs N = inf only at the scales of ``inf_scales`` (1e-4); the
other cells of the table read "not run". ``Config(inf_scales=None)`` runs every scale at N = inf (with a larger
``inf_max_steps``); `dlnjax.Stiff` is the implicit alternative (docs/simulate.md).

At ``N = inf`` small singular values matter: ``a_inf(x, y) = (x - y)/ln(x/y)`` vanishes only logarithmically
as ``y -> 0``; `dlnjax._metric` takes them from an SVD of ``X``, resolved down to ``~ d eps ||X||_2`` (an earlier
Gram-eigenvalue version zeroed them below ``~ sqrt(d eps) ||X||_2`` and froze runs from the smallest scales).

`run` writes ``toy_paths.png``, ``toy_distance.png``, ``completion.png``, ``volume.png``, the tables ``toy.csv``,
``completion.csv``, ``volume.csv``, the arrays ``toy.npz``, ``completion.npz`` and ``summary.txt``/``summary.json``.
Float64 (the ``dlnjax`` CLI enables it, and ``OPENBLAS_NUM_THREADS=1``: on a small CPU the LAPACK thread pool
makes every SVD hundreds of times slower).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import dlnjax
from dlnjax._metric import log_volume_density
from dlnjax.flows._end_to_end import EndToEnd

from .._numerics import matmul
from ._common import figure, pick_config, save_figure, start, write_csv
from ._summary import failed_banner, summary_head, wall_times

__all__ = [
    "Config",
    "DEFAULT",
    "QUICK",
    "UntilConverged",
    "toy_loss",
    "random_directions",
    "save_times",
    "solve",
    "path_diagnostics",
    "rank_one_distance",
    "svt",
    "nuclear_norm_completion",
    "nuclear_norm_certificate",
    "volume_trend",
    "toy",
    "completion",
    "run",
]

INF = math.inf


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes and tolerances (see the module docstring). Scales are ``||X0||_F``; times are in units of
    ``1 / ||grad E(0)||_2`` and saved at ``0`` and ``n_saves`` log-spaced times in ``[t_first, t_last]``."""

    # (a) the 2 x 2 completion
    toy_depths: tuple = (1, 2, 3, 8, INF)
    toy_scales: tuple[float, ...] = (1e-1, 1e-2, 1e-3)
    toy_starts: int = 8
    toy_target: float = 1e-12  # E <= toy_target * E(0)
    toy_max_steps: int = 16384
    toy_rtol: float = 1e-10
    toy_atol: float = 1e-14
    # (b) completion
    n: int = 100
    rank: int = 5
    observed: tuple[int, ...] = (2000, 5000)
    depths: tuple = (1, 2, 3, 4, INF)
    scales: tuple[float, ...] = (1e-4, 1e-6)
    loss_target: float = 1e-4  # E <= loss_target * E(0)
    max_steps: int = 8192
    inf_max_steps: int = (
        131072  # N = inf escapes from a small start in time ~ 1/scale: ~33 000 steps at 1e-4
    )
    inf_scales: tuple[float, ...] | None = (
        1e-4,
    )  # the scales run at N = inf (None: all); its cost grows like 1/scale
    # nuclear-norm baseline (ADMM)
    nn_max_iter: int = 20000
    nn_tol: float = 1e-9
    # integration
    t_first: float = 1e-2
    t_last: float = 1e13
    n_saves: int = 121
    rtol: float = 1e-6
    atol: float = 1e-12


DEFAULT = Config()
QUICK = Config(
    toy_depths=(1, 3, INF),
    toy_scales=(1e-1, 1e-3),
    toy_starts=4,
    n=12,
    rank=1,
    observed=(60,),
    depths=(1, 2, INF),
    scales=(1e-1, 1e-2),
    inf_scales=None,
    max_steps=8192,
    n_saves=61,
)


def depth_label(depth) -> str:
    return "inf" if depth == INF else str(int(depth))


# ---------------------------------------------------------------------------------------------
# Problems and starting points


def toy_loss() -> dlnjax.losses.MatrixCompletion:
    """The 2 x 2 completion with ``X_11 = X_22 = 1`` observed: ``E(X) = ((X_11 - 1)^2 + (X_22 - 1)^2) / 2``."""
    return dlnjax.losses.MatrixCompletion(
        jnp.array([0, 1]), jnp.array([0, 1]), jnp.array([1.0, 1.0]), (2, 2)
    )


def random_directions(key, n: int, shape) -> jax.Array:
    """``n`` Gaussian matrices of the given shape, each normalized to ``||Q||_F = 1`` (axes ``(n, *shape)``)."""
    Q = jr.normal(key, (n, *shape))
    return Q / jnp.linalg.norm(Q, axis=(-2, -1), keepdims=True)


def save_times(cfg: Config, unit: float) -> jax.Array:
    """``0`` and ``n_saves`` log-spaced times in ``unit * [t_first, t_last]``."""
    return jnp.concatenate(
        [jnp.zeros(1), unit * jnp.geomspace(cfg.t_first, cfg.t_last, cfg.n_saves)]
    )


def time_unit(loss) -> float:
    """``1 / ||grad E(0)||_2``: the time scale on which a small start begins to move (``N = 1``)."""
    g = jax.grad(loss)(jnp.zeros(loss.shape))
    return float(1.0 / np.linalg.norm(np.asarray(g), 2))


# ---------------------------------------------------------------------------------------------
# Integration


class UntilConverged(eqx.Module):
    """``flow`` until ``E(X) <= target``, then 0: the trajectory stops at the first point below the target.

    The adaptive controller then takes ever longer steps to the final time, so a far horizon costs nothing; the
    solver meets the switch with a few rejected steps.
    """

    flow: Callable
    loss: Callable
    target: float | jax.Array

    def __call__(self, t, X, args=None):
        v = self.flow(t, X, args)
        return jnp.where(self.loss(X) > self.target, v, jnp.zeros_like(v))

    def stiff_preconditioner(self, t, X, args, gamma):
        """That of ``flow`` (`dlnjax.Stiff`); past the target the field is 0 and any preconditioner is harmless."""
        return self.flow.stiff_preconditioner(t, X, args, gamma)

    def stiff_error_scale(self, X, rtol, atol):
        return self.flow.stiff_error_scale(X, rtol, atol)


@eqx.filter_jit
def solve(
    loss, depth, X0s: jax.Array, ts: jax.Array, target, rtol: float, atol: float, max_steps: int
) -> dlnjax.Trajectory:
    """`dlnjax.simulate` of ``UntilConverged(EndToEnd(loss, depth), loss, target)`` from each of ``X0s`` (``jax.vmap``).

    ``ys`` has axes ``(start, time, d_N, d_0)``; ``success`` is one flag per start (False also when ``max_steps``
    ran out before the final time).
    """
    flow = UntilConverged(EndToEnd(loss, depth), loss, target)
    return jax.vmap(
        lambda X0: dlnjax.simulate(flow, X0, ts, rtol=rtol, atol=atol, max_steps=max_steps)
    )(X0s)


@eqx.filter_jit
def path_diagnostics(loss, depth, ys: jax.Array) -> dict:
    """Loss, recovery error (if ``loss.truth``), effective rank, singular values and ``log rho_N`` at every saved state.

    ``ys`` has axes ``(..., d_N, d_0)``; so has every output bar the last two axes (singular values: one).
    """
    flat = ys.reshape(-1, *ys.shape[-2:])
    out = {
        "loss": jax.vmap(loss)(flat),
        "effective_rank": dlnjax.effective_rank(flat),
        "singular_values": jnp.linalg.svd(flat, compute_uv=False),
        "log_density": jax.vmap(lambda X: log_volume_density(X, depth))(flat),
    }
    if loss.truth is not None:
        out["test_error"] = jax.vmap(loss.test_error)(flat)
    lead = ys.shape[:-2]
    return {k: v.reshape(*lead, *v.shape[1:]) for k, v in out.items()}


def rank_one_distance(X) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For 2 x 2 matrices (leading axes allowed): ``|ab - 1|`` with ``a = X_12``, ``b = X_21``; ``|det X|``; ``sigma_min``."""
    X = np.asarray(X)
    a, b = X[..., 0, 1], X[..., 1, 0]
    det = X[..., 0, 0] * X[..., 1, 1] - a * b
    return np.abs(a * b - 1.0), np.abs(det), np.linalg.svd(X, compute_uv=False)[..., -1]


def _converged_index(loss_path: np.ndarray, target: float) -> int:
    """The first save index at which the (stopped) trajectory is below the target; the last index otherwise."""
    below = np.nonzero(loss_path <= target)[0]
    return int(below[0]) if below.size else loss_path.shape[0] - 1


# ---------------------------------------------------------------------------------------------
# Nuclear-norm minimization


def svt(G: jax.Array, tau) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Singular value thresholding ``U diag((s - tau)_+) V^T`` of ``G``, via ``eigh(G^T G)`` (no SVD).

    ``G^T G = V diag(s^2) V^T`` gives ``SVT(G) = G V diag((1 - tau/s)_+) V^T``. Returns the result, its nuclear
    norm ``sum (s - tau)_+`` and its rank (the number of ``s > tau``). Singular values of ``G`` below
    ``~sqrt(eps) ||G||`` are inaccurate, which only matters if ``tau`` is that small.
    """
    mu, V = jnp.linalg.eigh(matmul(G.T, G))
    s = jnp.sqrt(jnp.maximum(mu, 0.0))
    keep = s > tau
    f = jnp.where(keep, 1.0 - tau / jnp.where(keep, s, 1.0), 0.0)
    return matmul(matmul(G, V) * f, V.T), jnp.sum(jnp.where(keep, s - tau, 0.0)), jnp.sum(keep)


@eqx.filter_jit
def nuclear_norm_completion(
    loss, rho: float | None = None, max_iter: int = 20000, tol: float = 1e-9
) -> dict:
    """``min ||X||_*`` subject to ``X_ij = M_ij`` on the observed entries of ``loss`` (a `MatrixCompletion`).

    ADMM on ``min ||X||_* s.t. X = Z, P_Omega(Z) = P_Omega(M)`` (scaled form, Boyd et al. 2011, §3.1):
    ``X <- SVT_{1/rho}(Z - U)`` (`svt`), ``Z <- X + U`` with the observed entries reset to ``M``,
    ``U <- U + X - Z``; ``U`` stays supported on ``Omega`` and ``Y = -rho U`` tends to a subgradient of ``||X||_*``
    at the solution (the dual certificate of `nuclear_norm_certificate`). ``rho`` starts at ``1 / ||P_Omega(M)||_2``
    (default) and is rebalanced every 10 iterations (factor 2 when one residual exceeds 10 times the other).
    Stops when the primal residual ``||X - Z||_F`` and the dual residual ``rho ||Z - Z_prev||_F`` are both below
    ``tol ||P_Omega(M)||_F``, or after ``max_iter``. Returns ``X``, ``Y``, ``iterations``, ``rank``, ``converged``.
    """
    mask = loss.mask()
    B = jnp.zeros(loss.shape).at[loss.rows, loss.cols].set(loss.values)
    scale = jnp.linalg.norm(B)
    rho0 = 1.0 / jnp.linalg.norm(B, 2) if rho is None else jnp.asarray(rho, float)

    def cond(c):
        k, X, Z, U, r, rp, rd, rank = c
        return (k < max_iter) & ((rp > tol * scale) | (rd > tol * scale))

    def body(c):
        k, X, Z, U, r, _, _, _ = c
        Xn, _, rank = svt(Z - U, 1.0 / r)
        Zn = jnp.where(mask > 0, B, Xn + U)
        Un = U + Xn - Zn
        rp = jnp.linalg.norm(Xn - Zn)
        rd = r * jnp.linalg.norm(Zn - Z)
        adapt = (k % 10) == 9
        factor = jnp.where(adapt & (rp > 10 * rd), 2.0, jnp.where(adapt & (rd > 10 * rp), 0.5, 1.0))
        return k + 1, Xn, Zn, Un / factor, r * factor, rp, rd, rank

    zero = jnp.zeros(loss.shape)
    init = (0, zero, B, zero, rho0, jnp.full((), jnp.inf), jnp.full((), jnp.inf), 0)
    k, X, Z, U, r, rp, rd, rank = jax.lax.while_loop(cond, body, init)
    converged = (rp <= tol * scale) & (rd <= tol * scale)
    return {"X": X, "Y": -r * U, "iterations": k, "rank": rank, "rho": r, "converged": converged}


def nuclear_norm_certificate(X, Y, rows, cols, values) -> dict:
    """Duality check (numpy) for ``min ||Z||_*`` s.t. ``Z_Omega = values``: every ``Y`` supported on ``Omega`` gives
    the lower bound ``<values, Y_Omega> / ||Y||_2`` (weak duality: ``<M, Y> = <Z, Y> <= ||Z||_* ||Y||_2`` for every
    feasible ``Z``). ``Y`` is restricted to ``Omega`` here. Returns ``||X||_*``, the bound, the relative gap, and
    the relative residual ``||P_Omega(X) - values|| / ||values||``."""
    X, Y = np.asarray(X), np.asarray(Y)
    rows, cols, values = np.asarray(rows), np.asarray(cols), np.asarray(values)
    R = np.zeros_like(X)
    R[rows, cols] = values - X[rows, cols]
    Yo = np.zeros_like(Y)
    Yo[rows, cols] = Y[rows, cols]
    nuc = float(np.linalg.svd(X, compute_uv=False).sum())
    yn = float(np.linalg.norm(Yo, 2))
    bound = float(np.sum(values * Yo[rows, cols]) / yn) if yn > 0 else float("nan")
    return {
        "nuclear_norm": nuc,
        "dual_bound": bound,
        "relative_gap": (nuc - bound) / nuc,
        "relative_residual": float(np.linalg.norm(R[rows, cols]) / np.linalg.norm(values)),
    }


# ---------------------------------------------------------------------------------------------
# The volume density along trajectories


def volume_trend(log_density: np.ndarray, stop: np.ndarray, rtol: float = 1e-9) -> dict:
    """Per trajectory (rows of ``log_density``, saved values up to index ``stop[i]``): the change from start to
    the limit, its minimum along the way, and whether it is monotone (non-increasing / non-decreasing up to
    ``rtol`` of its largest magnitude). Non-finite values (an exactly singular ``A_N``) make the row unusable."""
    rows = []
    for lp, s in zip(np.asarray(log_density), np.asarray(stop)):
        lp = lp[: int(s) + 1]
        if not np.all(np.isfinite(lp)) or lp.size < 2:
            rows.append(
                {
                    "finite": False,
                    "change": float("nan"),
                    "increasing": False,
                    "decreasing": False,
                    "min_index": -1,
                    "late_change": float("nan"),
                }
            )
            continue
        d = np.diff(lp)
        slack = rtol * np.max(np.abs(lp))
        i = int(np.argmin(lp))
        rows.append(
            {
                "finite": True,
                "change": float(lp[-1] - lp[0]),
                "increasing": bool(np.all(d >= -slack)),
                "decreasing": bool(np.all(d <= slack)),
                "min_index": i,
                "late_change": float(
                    lp[-1] - lp[i]
                ),  # the rise after the lowest point (0 if it never turns up)
            }
        )
    return rows


def _trend_stats(rows: list[dict]) -> dict:
    ok = [r for r in rows if r["finite"]]
    n = len(ok)
    if not n:
        return {"n": 0, "n_nonfinite": len(rows)}
    change = np.array([r["change"] for r in ok])
    late = np.array([r["late_change"] for r in ok])
    return {
        "n": n,
        "n_nonfinite": len(rows) - n,
        "fraction_increasing": sum(r["increasing"] for r in ok) / n,
        "fraction_decreasing": sum(r["decreasing"] for r in ok) / n,
        "fraction_end_above_start": float(np.mean(change > 0)),
        "change_median": float(np.median(change)),
        "change_min": float(change.min()),
        "change_max": float(change.max()),
        "fraction_rising_after_minimum": float(np.mean(late > 1e-9 * (1 + np.abs(change)))),
        "late_rise_median": float(np.median(late)),
    }


# ---------------------------------------------------------------------------------------------
# (a) the 2 x 2 completion


def toy(key, cfg: Config, say=print) -> dict:
    """(a): every depth of ``toy_depths`` from ``toy_starts`` directions at every scale (one vmapped solve per depth)."""
    loss = toy_loss()
    Q = random_directions(key, cfg.toy_starts, (2, 2))
    scales = np.asarray(cfg.toy_scales, float)
    X0s = (scales[:, None, None, None] * np.asarray(Q)[None]).reshape(
        -1, 2, 2
    )  # (scale, start) flattened
    ts = save_times(cfg, time_unit(loss))
    target = cfg.toy_target * float(loss(jnp.zeros((2, 2))))
    res = {
        "ts": np.asarray(ts),
        "Q": np.asarray(Q),
        "scales": scales,
        "target": target,
        "depths": list(cfg.toy_depths),
    }
    paths, limits, success, steps, logd, losses, stops = [], [], [], [], [], [], []
    for depth in cfg.toy_depths:
        traj = solve(
            loss, depth, jnp.asarray(X0s), ts, target, cfg.toy_rtol, cfg.toy_atol, cfg.toy_max_steps
        )
        diag = path_diagnostics(loss, depth, traj.ys)
        L = np.asarray(diag["loss"])
        stop = np.array([_converged_index(row, target) for row in L])
        ys = np.asarray(traj.ys)
        paths.append(ys)
        limits.append(ys[np.arange(ys.shape[0]), stop])
        success.append(np.asarray(traj.success) & (L[np.arange(L.shape[0]), stop] <= target))
        steps.append(np.asarray(traj.stats["num_steps"]))
        logd.append(np.asarray(diag["log_density"]))
        losses.append(L)
        stops.append(stop)
        say(
            f"(a) N = {depth_label(depth)}: {int(success[-1].sum())}/{len(stop)} converged, steps {steps[-1].min()}-{steps[-1].max()}"
        )
    shape = (len(cfg.toy_depths), len(scales), cfg.toy_starts)
    limits = np.stack(limits).reshape(*shape, 2, 2)
    ab, det, smin = rank_one_distance(limits)
    res.update(
        paths=np.stack(paths).reshape(*shape, len(ts), 2, 2),
        limits=limits,
        ab_distance=ab,
        det=det,
        sigma_min=smin,
        success=np.stack(success).reshape(shape),
        steps=np.stack(steps).reshape(shape),
        log_density=np.stack(logd).reshape(*shape, len(ts)),
        loss=np.stack(losses).reshape(*shape, len(ts)),
        stop=np.stack(stops).reshape(shape),
    )
    return res


# ---------------------------------------------------------------------------------------------
# (b) matrix completion


def _selected_scales(cfg: Config, depth) -> np.ndarray:
    """Which of ``cfg.scales`` are run at ``depth``: all of them at finite depth, those in ``cfg.inf_scales`` at N = inf."""
    scales = np.asarray(cfg.scales, float)
    if depth != INF or cfg.inf_scales is None:
        return np.ones(scales.shape, bool)
    chosen = np.asarray(cfg.inf_scales, float)
    return np.array(
        [bool(np.any(np.isclose(s, chosen, rtol=1e-9, atol=0.0))) for s in scales], bool
    )


def completion(key, cfg: Config, say=print) -> dict:
    """(b): for each observation count, the nuclear-norm baseline and the flow at every depth and scale
    (one vmapped solve over the scales per depth). Returns a dict of arrays with axes (observed, depth, scale)."""
    kq, kp = jr.split(key)
    Q = random_directions(kq, 1, (cfg.n, cfg.n))[0]
    scales = np.asarray(cfg.scales, float)
    X0s = jnp.asarray(scales[:, None, None] * np.asarray(Q)[None])
    nO, nD, nS = len(cfg.observed), len(cfg.depths), len(scales)
    shape = (nO, nD, nS)
    out = {
        k: np.full(shape, np.nan)
        for k in (
            "test_error",
            "effective_rank",
            "final_loss",
            "convergence_time",
            "log_density_start",
            "log_density_end",
        )
    }
    out.update(
        run=np.ones(shape, bool),
        success=np.zeros(shape, bool),
        steps=np.zeros(shape, int),
        sigma_limit=np.zeros((*shape, cfg.n)),
        limits=np.zeros((*shape, cfg.n, cfg.n)),
    )
    out["loss_at_zero"] = np.zeros(nO)
    out["targets"] = np.zeros(nO)
    out["nuclear"] = []
    out["truth"] = []
    out["observations"] = []
    out["trends"] = {}
    out["log_density_paths"] = {}
    keys = jr.split(kp, nO)
    for i, m in enumerate(cfg.observed):
        loss = dlnjax.losses.MatrixCompletion.random(keys[i], (cfg.n, cfg.n), cfg.rank, m)
        l0 = float(loss(jnp.zeros(loss.shape)))
        out["loss_at_zero"][i], out["targets"][i] = l0, cfg.loss_target * l0
        out["truth"].append(np.asarray(loss.truth))
        out["observations"].append(
            (np.asarray(loss.rows), np.asarray(loss.cols), np.asarray(loss.values))
        )
        out["nuclear"].append(_nuclear_baseline(loss, cfg, m, say))
        ts = save_times(cfg, time_unit(loss))
        out["ts"] = np.asarray(ts)
        for j, depth in enumerate(cfg.depths):
            _completion_runs(out, (i, j), loss, cfg, depth, X0s, ts, say)
    out["scales"] = scales
    return out


def _nuclear_baseline(loss, cfg: Config, m: int, say) -> dict:
    """The minimum-nuclear-norm completion of ``loss`` (`nuclear_norm_completion`) with its certificate."""
    t0 = time.perf_counter()
    nn = nuclear_norm_completion(loss, None, cfg.nn_max_iter, cfg.nn_tol)
    Xn = np.asarray(nn["X"])
    cert = nuclear_norm_certificate(Xn, nn["Y"], loss.rows, loss.cols, loss.values)
    nuc = {
        "X": Xn,
        "test_error": float(loss.test_error(nn["X"])),
        "effective_rank": float(dlnjax.effective_rank(nn["X"])),
        "rank": int(nn["rank"]),
        "iterations": int(nn["iterations"]),
        "converged": bool(nn["converged"]),
        "Y": np.asarray(nn["Y"]),
        **{f"certificate_{k}": v for k, v in cert.items()},
        "time_s": time.perf_counter() - t0,
    }
    say(
        f"(b) |Omega| = {m}: nuclear norm error {nuc['test_error']:.3e}, rank {nuc['rank']}, {nuc['iterations']} iterations, "
        f"duality gap {cert['relative_gap']:.1e}, residual {cert['relative_residual']:.1e} ({nuc['time_s']:.1f} s)"
    )
    return nuc


def _completion_runs(
    out: dict, ij: tuple[int, int], loss, cfg: Config, depth, X0s, ts, say
) -> None:
    """The flow at one depth from every selected scale (`_selected_scales`), one vmapped solve; fills
    row ``ij = (observed, depth)`` of the arrays of ``out`` and its volume trend."""
    i, j = ij
    m, target = (
        cfg.observed[i],
        cfg.loss_target * float(out["loss_at_zero"][i]),
    )  # a Python float, as l0
    scales = np.asarray(cfg.scales, float)
    t0 = time.perf_counter()
    steps_cap = cfg.inf_max_steps if depth == INF else cfg.max_steps
    sel = _selected_scales(cfg, depth)
    out["run"][i, j] = sel
    if not sel.any():
        say(f"(b) |Omega| = {m}, N = {depth_label(depth)}: not run (inf_scales)")
        return
    traj = solve(loss, depth, X0s[sel], ts, target, cfg.rtol, cfg.atol, steps_cap)
    diag = {k: np.asarray(v) for k, v in path_diagnostics(loss, depth, traj.ys).items()}
    stop = np.array([_converged_index(row, target) for row in diag["loss"]])
    at = (np.arange(int(sel.sum())), stop)
    ok = np.asarray(traj.success) & (diag["loss"][at] <= target)
    out["success"][i, j, sel] = ok
    out["steps"][i, j, sel] = np.asarray(traj.stats["num_steps"])
    out["test_error"][i, j, sel] = diag["test_error"][at]
    out["effective_rank"][i, j, sel] = diag["effective_rank"][at]
    out["final_loss"][i, j, sel] = diag["loss"][at]
    out["sigma_limit"][i, j, sel] = diag["singular_values"][at]
    out["limits"][i, j, sel] = np.asarray(traj.ys)[at]
    out["convergence_time"][i, j, sel] = np.where(ok, np.asarray(ts)[stop], np.nan)
    out["log_density_start"][i, j, sel] = diag["log_density"][:, 0]
    out["log_density_end"][i, j, sel] = diag["log_density"][at]
    if depth != 1:
        out["trends"][(m, depth_label(depth))] = volume_trend(diag["log_density"], stop)
        out["log_density_paths"][(m, depth_label(depth))] = (
            diag["log_density"],
            diag["loss"],
            stop,
        )
    say(
        f"(b) |Omega| = {m}, N = {depth_label(depth)}: errors {np.array2string(out['test_error'][i, j], precision=3)}, "
        f"effective ranks {np.array2string(out['effective_rank'][i, j], precision=2)}, steps {out['steps'][i, j]}, "
        f"{int(ok.sum())}/{int(sel.sum())} converged ({time.perf_counter() - t0:.1f} s)"
        + (
            ""
            if sel.all()
            else f"; scales {', '.join(f'{x:g}' for x in scales[~sel])} not run (inf_scales)"
        )
    )


# ---------------------------------------------------------------------------------------------
# Figures


def _depth_colors(depths) -> dict:
    return {depth_label(d): f"C{k}" for k, d in enumerate(depths)}


def plot_toy_paths(t: dict, cfg: Config):
    """(a) Off-diagonal entries ``(a, b) = (X_12, X_21)`` along the trajectories, one panel per depth, with the
    rank-one minimizers ``ab = 1``; limits marked, color by scale."""
    nd = len(t["depths"])
    fig, axes = figure(3.6 * nd, 4.0, nd)
    lim = 2.6
    g = np.linspace(1.0 / lim, lim, 200)
    for ax, d, paths, stop in zip(axes, t["depths"], t["paths"], t["stop"]):
        for sgn in (1, -1):
            ax.plot(sgn * g, sgn / g, "k-", lw=1.6, zorder=1)
        ax.plot([], [], "k-", lw=1.6, label="$ab = 1$ (rank one)")
        for k, s in enumerate(t["scales"]):
            c = f"C{k}"
            for p, i in zip(paths[k], stop[k]):
                ax.plot(p[: i + 1, 0, 1], p[: i + 1, 1, 0], color=c, lw=0.9, alpha=0.8)
                ax.plot(p[i, 0, 1], p[i, 1, 0], "o", color=c, ms=4, mec="k", mew=0.5)
            ax.plot([], [], "o-", color=c, ms=4, label=f"$\\|X_0\\|_F$ = {s:g}")
        ax.axhline(0, color="0.8", lw=0.6)
        ax.axvline(0, color="0.8", lw=0.6)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xlabel("$a = X_{12}$")
        ax.set_title(f"N = {depth_label(d)}" + (" (rescaled time)" if d == INF else ""))
    axes[0].set_ylabel("$b = X_{21}$")
    axes[0].legend(loc="lower right", fontsize=7)
    fig.suptitle(
        r"(a) $2\times 2$ completion, $X_{11} = X_{22} = 1$ observed: paths of the off-diagonal entries (dots: limits)"
    )
    return fig


def plot_toy_distance(t: dict):
    """(a) Distance of the limit to the rank-one set against the scale, per depth (median and range over starts)."""
    fig, axes = figure(11, 4.2, 2)
    colors = _depth_colors(t["depths"])
    for ax, key, title in (
        (axes[0], "ab_distance", r"$|ab - 1|$ at the limit"),
        (axes[1], "sigma_min", r"$\sigma_{\min}$ of the limit"),
    ):
        for k, d in enumerate(t["depths"]):
            v = np.maximum(t[key][k], 1e-300)
            c = colors[depth_label(d)]
            ax.loglog(
                t["scales"], np.median(v, axis=1), "o-", color=c, label=f"N = {depth_label(d)}"
            )
            ax.fill_between(t["scales"], v.min(axis=1), v.max(axis=1), color=c, alpha=0.15)
        ax.set_xlabel(r"initialization scale $\|X_0\|_F$")
        ax.set_title(title + " (median, range over starts)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].legend()
    return fig


def plot_completion(c: dict, cfg: Config):
    """(b) Recovery error and effective rank of the limit against depth, one line per scale, nuclear norm dashed."""
    nO = len(cfg.observed)
    fig, axes = figure(11, 3.8 * nO, 2, nO)
    x = np.arange(len(cfg.depths))
    for i, m in enumerate(cfg.observed):
        ax_e, ax_r = axes[2 * i], axes[2 * i + 1]
        for k, s in enumerate(c["scales"]):
            ok = c["success"][i, :, k] | ~c["run"][i, :, k]
            e, r = c["test_error"][i, :, k], c["effective_rank"][i, :, k]
            ax_e.semilogy(x, e, "o-", color=f"C{k}", label=f"scale {s:g}")
            ax_r.plot(x, r, "o-", color=f"C{k}", label=f"scale {s:g}")
            ax_e.semilogy(x[~ok], e[~ok], "x", color="r", ms=10)
        nn = c["nuclear"][i]
        ax_e.axhline(nn["test_error"], color="k", ls="--", label="min nuclear norm")
        ax_r.axhline(nn["effective_rank"], color="k", ls="--", label="min nuclear norm")
        ax_r.axhline(cfg.rank, color="0.6", ls=":", label=f"true rank {cfg.rank}")
        for ax in (ax_e, ax_r):
            ax.set_xticks(x, [depth_label(d) for d in cfg.depths])
            ax.set_xlabel("depth N")
            ax.grid(True, which="major", alpha=0.3)
        ax_e.set_title(rf"$|\Omega| = {m}$: $\|X - M\|_F / \|M\|_F$ (red x: not converged)")
        ax_r.set_title(rf"$|\Omega| = {m}$: effective rank of the limit")
        ax_e.legend(fontsize=7)
    fig.suptitle(
        f"(b) {cfg.n}x{cfg.n}, rank {cfg.rank}, end-to-end flow to $E \\leq {cfg.loss_target:g}\\,E(0)$"
    )
    return fig


def plot_volume(t: dict, c: dict, cfg: Config):
    """(c) ``log rho_N(X(t)) - log rho_N(X(0))`` against the loss progress ``E(X(t)) / E(0)`` (time runs right to left)."""
    fig, axes = figure(12, 4.4, 2)
    colors = _depth_colors(t["depths"])
    for k, d in enumerate(t["depths"]):
        if d == 1:
            continue
        for lp, L, stop in zip(
            t["log_density"][k].reshape(-1, t["log_density"].shape[-1]),
            t["loss"][k].reshape(-1, t["loss"].shape[-1]),
            t["stop"][k].ravel(),
        ):
            axes[0].semilogx(
                np.maximum(L[: stop + 1] / L[0], 1e-300),
                lp[: stop + 1] - lp[0],
                color=colors[depth_label(d)],
                lw=0.7,
                alpha=0.6,
            )
        axes[0].plot([], [], color=colors[depth_label(d)], label=f"N = {depth_label(d)}")
    axes[0].set_title(r"(a) $2\times2$: $\log\rho_N(X(t)) - \log\rho_N(X_0)$")
    colors = _depth_colors(cfg.depths)
    styles = ["-", "--", ":", "-."]
    for (m, d), (lp, L, stop) in c["log_density_paths"].items():
        ls = styles[list(cfg.observed).index(m) % len(styles)]
        for row, Lr, s in zip(lp, L, stop):
            if np.all(np.isfinite(row[: s + 1])):
                axes[1].semilogx(
                    np.maximum(Lr[: s + 1] / Lr[0], 1e-300),
                    row[: s + 1] - row[0],
                    color=colors[d],
                    ls=ls,
                    lw=0.9,
                    alpha=0.7,
                )
        axes[1].plot([], [], color=colors[d], ls=ls, label=rf"N = {d}, $|\Omega| = {m}$")
    axes[1].set_title(rf"(b) ${cfg.n}\times{cfg.n}$: $\log\rho_N(X(t)) - \log\rho_N(X_0)$")
    for ax in axes:
        ax.invert_xaxis()
        ax.set_xlabel(r"$E(X(t)) / E(X_0)$ (training proceeds to the right)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7)
    return fig


# ---------------------------------------------------------------------------------------------
# Summary and run


def _fmt(v, f=".3g"):
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, f)


def _text(s: dict, cfg: Config) -> str:
    lines = summary_head(
        s, "deep linear networks for matrix completion (Cohen, Menon & Veraszto, seed 003)"
    )
    lines += [
        "flow: dX/dt = -A_N(X)[grad E(X)] (EndToEnd; N = inf in the rescaled time tau = N t), X0 = scale * Q, ||Q||_F = 1",
        "      (the end-to-end matrix of the balanced network fiber_center(X0, N)); stopped at E <= target; Tsit5/PID "
        f"rtol {cfg.rtol:g} atol {cfg.atol:g}, float64, seed {s['seed']}",
        "",
    ]
    lines += _toy_lines(s["toy"], cfg)
    lines += _completion_lines(s["completion"], cfg)
    lines += _volume_lines(s["volume"])
    lines += [
        "    " + s["volume_verdict"],
        "",
        wall_times(s),
    ]
    if s["problems"]:
        lines += ["", *failed_banner(s)]
    return "\n".join(lines) + "\n"


def _toy_lines(toy: dict, cfg: Config) -> list[str]:
    """(a) in the summary: median distance to the rank-one minimizers by scale and depth."""
    lines = [
        f"(a) 2x2, X_11 = X_22 = 1 observed, {cfg.toy_starts} directions per scale, target E <= {cfg.toy_target:g} E(0).",
        "    distance of the limit to the rank-one minimizers: median |ab - 1| (median sigma_min) over the starts",
        "    " + f"{'scale':>10}" + "".join(f"{'N = ' + d:>22}" for d in toy["depths"]),
    ]
    for k, sc in enumerate(toy["scales"]):
        cells = "".join(
            f"{_fmt(toy['ab_distance_median'][j][k], '.2e') + ' (' + _fmt(toy['sigma_min_median'][j][k], '.1e') + ')':>22}"
            for j in range(len(toy["depths"]))
        )
        lines.append(f"    {sc:>10g}{cells}")
    lines += [f"    converged: {toy['converged']} of {toy['runs']} runs", ""]
    return lines


def _completion_lines(comp: dict, cfg: Config) -> list[str]:
    """(b) in the summary: the nuclear-norm baseline and the recovery error of every run."""
    lines = []
    if cfg.n == 100:
        lines.append(
            "    (published grid: scales 1e-3 ... 1e-6; this run uses "
            + ", ".join(f"{x:g}" for x in cfg.scales)
            + " to keep the stiff tails affordable"
            + (
                ""
                if cfg.inf_scales is None
                else "; N = inf at " + ", ".join(f"{x:g}" for x in cfg.inf_scales) + " only"
            )
            + ", see the module docstring)"
        )
    lines.append(
        f"(b) {cfg.n}x{cfg.n}, rank {cfg.rank}, ||M||_F = 1, target E <= {cfg.loss_target:g} E(0); "
        "recovery error ||X - M||_F/||M||_F [effective rank]"
    )
    for i, m in enumerate(cfg.observed):
        nn = comp["nuclear"][i]
        lines.append(
            f"  |Omega| = {m}:   min nuclear norm: {nn['test_error']:.3e} [{nn['effective_rank']:.2f}], rank {nn['rank']}, "
            f"{nn['iterations']} ADMM iterations, duality gap {nn['certificate_relative_gap']:.1e}, residual {nn['certificate_relative_residual']:.1e}"
        )
        lines.append(
            "    " + f"{'N':>5}" + "".join(f"{'scale ' + format(sc, 'g'):>24}" for sc in cfg.scales)
        )
        for j, d in enumerate(cfg.depths):
            row = comp["table"][i][j]
            cells = "".join(
                (
                    f"{'not run':>24}"
                    if not r["run"]
                    else f"{_fmt(r['test_error'], '.3e') + ' [' + _fmt(r['effective_rank'], '.2f') + ']' + ('' if r['converged'] else ' !'):>24}"
                )
                for r in row
            )
            lines.append(f"    {depth_label(d):>5}{cells}")
    lines += [
        "    (! = did not reach the target; not run: N = inf is run only at the scales of inf_scales, see the module docstring)",
        "",
    ]
    return lines


def _volume_lines(volume: dict) -> list[str]:
    """(c) in the summary: how ``log rho_N`` changes along the trajectories of each group of runs."""
    lines = [
        "(c) log volume density log rho_N(X(t)) along the trajectories (N >= 2), start to limit:"
    ]
    for name, st in volume.items():
        if not st.get("n"):
            lines.append(
                f"    {name}: no finite trajectory ({st.get('n_nonfinite', 0)} non-finite)"
            )
            continue
        lines.append(
            f"    {name}: {st['n']} trajectories; monotone increasing {st['fraction_increasing']:.0%}, monotone decreasing "
            f"{st['fraction_decreasing']:.0%}; end above start {st['fraction_end_above_start']:.0%}; change median {st['change_median']:.3g} "
            f"[{st['change_min']:.3g}, {st['change_max']:.3g}]; rises after its minimum {st['fraction_rising_after_minimum']:.0%} "
            f"(median rise {st['late_rise_median']:.3g})"
            + (f"; {st['n_nonfinite']} non-finite" if st["n_nonfinite"] else "")
        )
    return lines


def _volume_verdict(vol: dict) -> str:
    n = sum(v.get("n", 0) for v in vol.values())
    up = sum(v.get("n", 0) * v.get("fraction_end_above_start", 0) for v in vol.values())
    dec = sum(v.get("n", 0) * v.get("fraction_decreasing", 0) for v in vol.values())
    return (
        f"over all {n} finite trajectories: the density ends above its start in {up / max(n, 1):.0%}, "
        f"decreases monotonically in {dec / max(n, 1):.0%} (a small start sits where the density is largest)"
    )


def run(
    out: Path,
    *,
    quick: bool = False,
    seed: int = 0,
    config: Config | None = None,
    log: Callable[[str], None] | None = None,
) -> int:
    """Run (a), (b), (c) and write figures, tables and the summary into ``out``; return 0 iff every check passed.

    Checks ("problems"): every run reaches its loss target; the nuclear-norm solver converges, meets the
    observations (relative residual <= 1e-6) and is certified optimal (duality gap <= 1e-5); in (a), at the
    smallest scale every depth N >= 2 ends closer to ab = 1 than N = 1 does.
    """
    cfg = pick_config(config, quick, DEFAULT, QUICK)
    session = start("cohen-menon-veraszto", out, seed, log)
    ka, kb = jr.split(jr.PRNGKey(seed))
    with session.timed("toy"):
        t = toy(ka, cfg, session.say)
    _write_toy(session.out, cfg, t)
    with session.timed("completion"):
        c = completion(kb, cfg, session.say)
    _write_completion(session.out, cfg, c)
    vol = _volume(t, c)
    _write_volume(session.out, cfg, t, c, vol)
    problems = _toy_problems(t) + _completion_problems(cfg, c)
    config_ = {
        k: ([depth_label(x) for x in v] if k in ("toy_depths", "depths") else v)
        for k, v in dataclasses.asdict(cfg).items()
    }
    results = _results(cfg, t, c, vol)
    return session.finish(problems, config_, results, lambda s: _text(s, cfg))


def _write_toy(out: Path, cfg: Config, t: dict) -> None:
    """(a): ``toy.npz``, ``toy.csv`` (one row per depth, scale and start), ``toy_paths.png``, ``toy_distance.png``."""
    np.savez(
        out / "toy.npz",
        depths=np.asarray(t["depths"], float),
        scales=t["scales"],
        ts=t["ts"],
        Q=t["Q"],
        limits=t["limits"],
        paths=t["paths"],
        ab_distance=t["ab_distance"],
        det=t["det"],
        sigma_min=t["sigma_min"],
        success=t["success"],
        steps=t["steps"],
        log_density=t["log_density"],
        loss=t["loss"],
        stop=t["stop"],
    )
    rows = []
    for j, d in enumerate(depth_label(x) for x in t["depths"]):
        for k, sc in enumerate(t["scales"]):
            for q in range(cfg.toy_starts):
                L = t["limits"][j, k, q]
                rows.append(
                    [
                        d,
                        float(sc),
                        q,
                        float(L[0, 0]),
                        float(L[0, 1]),
                        float(L[1, 0]),
                        float(L[1, 1]),
                        float(t["ab_distance"][j, k, q]),
                        float(t["det"][j, k, q]),
                        float(t["sigma_min"][j, k, q]),
                        bool(t["success"][j, k, q]),
                        int(t["steps"][j, k, q]),
                        float(t["log_density"][j, k, q, 0]),
                        float(t["log_density"][j, k, q, t["stop"][j, k, q]]),
                    ]
                )
    write_csv(out / "toy.csv", TOY_HEADER, rows)
    save_figure(plot_toy_paths(t, cfg), out / "toy_paths.png")
    save_figure(plot_toy_distance(t), out / "toy_distance.png")


TOY_HEADER = (
    "depth",
    "scale",
    "start",
    "X11",
    "X12",
    "X21",
    "X22",
    "ab_distance",
    "abs_det",
    "sigma_min",
    "converged",
    "steps",
    "log_density_start",
    "log_density_end",
)
COMPLETION_HEADER = (
    "observed",
    "depth",
    "scale",
    "test_error",
    "effective_rank",
    "converged",
    "steps",
    "final_loss",
    "convergence_time",
    "log_density_start",
    "log_density_end",
)
VOLUME_HEADER = (
    "runs",
    "n",
    "n_nonfinite",
    "fraction_increasing",
    "fraction_decreasing",
    "fraction_end_above_start",
    "change_median",
    "fraction_rising_after_minimum",
    "late_rise_median",
)


def _toy_problems(t: dict) -> list[str]:
    """(a): every 2x2 run reached its target; at the smallest scale every N >= 2 ends closer to ab = 1 than N = 1."""
    problems = []
    if not t["success"].all():
        problems.append(
            f"(a) {int((~t['success']).sum())} of {t['success'].size} 2x2 runs did not reach the target"
        )
    if 1 in t["depths"]:
        j1 = t["depths"].index(1)
        shallow = np.median(t["ab_distance"][j1, -1])
        for j, d in enumerate(t["depths"]):
            if d != 1 and not np.median(t["ab_distance"][j, -1]) < shallow:
                problems.append(
                    f"(a) N = {depth_label(d)} at scale {t['scales'][-1]:g} is not closer to ab = 1 than N = 1"
                )
    return problems


def _write_completion(out: Path, cfg: Config, c: dict) -> None:
    """(b): ``completion.npz`` (with the data and the nuclear-norm baseline), ``completion.csv``, ``completion.png``."""
    np.savez(
        out / "completion.npz",
        observed=np.asarray(cfg.observed),
        depths=np.asarray(cfg.depths, float),
        scales=c["scales"],
        run=c["run"],
        test_error=c["test_error"],
        effective_rank=c["effective_rank"],
        final_loss=c["final_loss"],
        success=c["success"],
        steps=c["steps"],
        convergence_time=c["convergence_time"],
        sigma_limit=c["sigma_limit"],
        limits=c["limits"],
        log_density_start=c["log_density_start"],
        log_density_end=c["log_density_end"],
        loss_at_zero=c["loss_at_zero"],
        targets=c["targets"],
        truth=np.stack(c["truth"]),
        nuclear_X=np.stack([nn["X"] for nn in c["nuclear"]]),
        nuclear_Y=np.stack([nn["Y"] for nn in c["nuclear"]]),
        nuclear_test_error=np.array([nn["test_error"] for nn in c["nuclear"]]),
        nuclear_effective_rank=np.array([nn["effective_rank"] for nn in c["nuclear"]]),
        **{f"rows_{m}": o[0] for m, o in zip(cfg.observed, c["observations"])},
        **{f"cols_{m}": o[1] for m, o in zip(cfg.observed, c["observations"])},
        **{f"values_{m}": o[2] for m, o in zip(cfg.observed, c["observations"])},
    )
    nan = float("nan")
    rows = []
    for i, m in enumerate(cfg.observed):
        nn = c["nuclear"][i]
        rows.append(
            [
                m,
                "nuclear",
                "",
                nn["test_error"],
                nn["effective_rank"],
                nn["converged"],
                nn["iterations"],
            ]
            + [nan] * 4
        )
        for j, d in enumerate(depth_label(x) for x in cfg.depths):
            for k, sc in enumerate(c["scales"]):
                rows.append(
                    [
                        m,
                        d,
                        float(sc),
                        float(c["test_error"][i, j, k]),
                        float(c["effective_rank"][i, j, k]),
                        bool(c["success"][i, j, k]),
                        int(c["steps"][i, j, k]),
                        float(c["final_loss"][i, j, k]),
                        float(c["convergence_time"][i, j, k]),
                        float(c["log_density_start"][i, j, k]),
                        float(c["log_density_end"][i, j, k]),
                    ]
                )
    write_csv(out / "completion.csv", COMPLETION_HEADER, rows)
    save_figure(plot_completion(c, cfg), out / "completion.png")


def _completion_problems(cfg: Config, c: dict) -> list[str]:
    """(b): the nuclear-norm solver converged, meets the observations, is certified optimal; every run
    that was run reached its target."""
    problems = []
    for i, m in enumerate(cfg.observed):
        nn = c["nuclear"][i]
        if not nn["converged"]:
            problems.append(
                f"(b) |Omega| = {m}: the nuclear-norm solver did not converge in {nn['iterations']} iterations"
            )
        if not nn["certificate_relative_residual"] <= 1e-6:
            problems.append(
                f"(b) |Omega| = {m}: the nuclear-norm solution misses the observations by {nn['certificate_relative_residual']:.1e}"
            )
        if not nn["certificate_relative_gap"] <= 1e-5:
            problems.append(
                f"(b) |Omega| = {m}: nuclear-norm duality gap {nn['certificate_relative_gap']:.1e}"
            )
        for j, d in enumerate(depth_label(x) for x in cfg.depths):
            for k, sc in enumerate(c["scales"]):
                if c["run"][i, j, k] and not c["success"][i, j, k]:
                    problems.append(
                        f"(b) |Omega| = {m}, N = {d}, scale {sc:g}: did not reach the target in {cfg.inf_max_steps if d == 'inf' else cfg.max_steps} steps"
                    )
    return problems


def _volume(t: dict, c: dict) -> dict:
    """(c): the `_trend_stats` of ``log rho_N`` along the trajectories of (a) (per depth) and (b) (per run group)."""
    vol = {}
    for j, d in enumerate(t["depths"]):
        if d != 1:
            S = t["log_density"].shape
            vol[f"(a) 2x2, N = {depth_label(d)}"] = _trend_stats(
                volume_trend(t["log_density"][j].reshape(-1, S[-1]), t["stop"][j].ravel())
            )
    for (m, d), rows_ in c["trends"].items():
        vol[f"(b) |Omega| = {m}, N = {d}"] = _trend_stats(rows_)
    return vol


def _write_volume(out: Path, cfg: Config, t: dict, c: dict, vol: dict) -> None:
    """(c): ``volume.csv`` (one row per group of runs) and ``volume.png``."""
    nan = float("nan")
    vrows = [
        [
            name,
            st.get("n", 0),
            st.get("n_nonfinite", 0),
            st.get("fraction_increasing", nan),
            st.get("fraction_decreasing", nan),
            st.get("fraction_end_above_start", nan),
            st.get("change_median", nan),
            st.get("fraction_rising_after_minimum", nan),
            st.get("late_rise_median", nan),
        ]
        for name, st in vol.items()
    ]
    write_csv(out / "volume.csv", VOLUME_HEADER, vrows)
    save_figure(plot_volume(t, c, cfg), out / "volume.png")


def _results(cfg: Config, t: dict, c: dict, vol: dict) -> dict:
    """The summary's measurements of (a), (b), (c)."""
    nO, nD, nS = c["test_error"].shape
    table = [
        [
            [
                {
                    "test_error": float(c["test_error"][i, j, k]),
                    "effective_rank": float(c["effective_rank"][i, j, k]),
                    "converged": bool(c["success"][i, j, k]),
                    "run": bool(c["run"][i, j, k]),
                    "steps": int(c["steps"][i, j, k]),
                }
                for k in range(nS)
            ]
            for j in range(nD)
        ]
        for i in range(nO)
    ]
    return {
        "toy": {
            "depths": [depth_label(d) for d in t["depths"]],
            "scales": [float(s) for s in t["scales"]],
            "ab_distance_median": np.median(t["ab_distance"], axis=2).tolist(),
            "sigma_min_median": np.median(t["sigma_min"], axis=2).tolist(),
            "ab_distance_max": np.max(t["ab_distance"], axis=2).tolist(),
            "converged": int(t["success"].sum()),
            "runs": int(t["success"].size),
        },
        "completion": {
            "observed": list(cfg.observed),
            "depths": [depth_label(d) for d in cfg.depths],
            "scales": [float(s) for s in c["scales"]],
            "loss_at_zero": c["loss_at_zero"].tolist(),
            "nuclear": [
                {k: v for k, v in nn.items() if k not in ("X", "Y")} for nn in c["nuclear"]
            ],
            "table": table,
        },
        "volume": vol,
        "volume_verdict": _volume_verdict(vol),
    }
