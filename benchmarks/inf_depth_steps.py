"""Measurement: how the step count of the N = inf completion flow grows as the initialization scale shrinks.

The matrix-completion runs of ``dlnjax reproduce cohen-menon-veraszto`` at ``N = inf`` get slower the smaller the
start (module docstring of `dlnjax.experiments.cohen_menon_veraszto`). This script measures it on a smaller
instance of the same problem: an ``n x n`` matrix of rank ``r``, ``m`` observed entries, ``X0 = scale * Q``,
the flow ``UntilConverged(EndToEnd(loss, N))`` to ``E <= 1e-4 E(0)`` with Tsit5/PID at the experiment's
tolerances, for ``N in {4, inf}`` and scales ``1e-2 ... 1e-5``. Reported: accepted and rejected steps, the
rescaled time at which the target is reached, the recovery error, and the log-log slope of steps against
``1/scale`` (1 means steps ~ 1/scale: the stiff regime described in the experiment's docstring).

Usage: ``python benchmarks/inf_depth_steps.py [--n 30 --rank 2 --observed 400] [--out FILE]``. float64.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import _bench  # noqa: E402

from dlnjax._cpu import configure_cpu  # noqa: E402

configure_cpu()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402

import dlnjax  # noqa: E402
from dlnjax.experiments import cohen_menon_veraszto as cmv  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=30)
    p.add_argument("--rank", type=int, default=2)
    p.add_argument("--observed", type=int, default=400)
    p.add_argument("--scales", type=float, nargs="+", default=[1e-2, 1e-3, 1e-4, 1e-5])
    p.add_argument("--max-steps", type=int, default=400_000)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    cfg = cmv.DEFAULT
    loss = dlnjax.losses.MatrixCompletion.random(jr.PRNGKey(1), (a.n, a.n), a.rank, a.observed)
    Q = cmv.random_directions(jr.PRNGKey(0), 1, (a.n, a.n))[0]
    unit = cmv.time_unit(loss)
    ts = cmv.save_times(cfg, unit)
    target = cfg.loss_target * float(loss(jnp.zeros(loss.shape)))
    lines = [
        f"# N = inf step count against the initialization scale ({a.n}x{a.n}, rank {a.rank}, {a.observed} observed)",
        "",
        *_bench.machine_info(),
        "",
        f"Tsit5/PID rtol {cfg.rtol:g} atol {cfg.atol:g}, target E <= {cfg.loss_target:g} E(0), times in units of 1/||grad E(0)||_2.",
        "",
        "| N | scale | accepted steps | rejected | time to target | recovery error | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    slopes = {}
    for depth in (4, cmv.INF):
        steps = []
        for s in a.scales:
            t0 = time.perf_counter()
            traj = cmv.solve(
                loss, depth, (s * Q)[None], ts, target, cfg.rtol, cfg.atol, a.max_steps
            )
            wall = time.perf_counter() - t0
            L = np.asarray(jax.vmap(loss)(traj.ys[0]))
            stop = cmv._converged_index(L, target)
            ok = bool(traj.success[0]) and L[stop] <= target
            n_acc = int(traj.stats["num_accepted_steps"][0])
            n_rej = int(traj.stats["num_rejected_steps"][0])
            err = float(loss.test_error(traj.ys[0, stop]))
            steps.append(n_acc if ok else np.nan)
            lines.append(
                f"| {cmv.depth_label(depth)} | {s:g} | {n_acc} | {n_rej} | {float(ts[stop]) / unit:.3g}{'' if ok else ' (not reached)'} | {err:.3g} | {wall:.1f} |"
            )
            print(lines[-1], flush=True)
        st = np.asarray(steps, float)
        good = np.isfinite(st)
        if good.sum() >= 2:
            slopes[cmv.depth_label(depth)] = float(
                np.polyfit(np.log(1 / np.asarray(a.scales)[good]), np.log(st[good]), 1)[0]
            )
    lines += [
        "",
        "log-log slope of accepted steps against 1/scale: "
        + ", ".join(f"N = {k}: {v:.2f}" for k, v in slopes.items()),
    ]
    return _bench.write_report(lines, a.out)


if __name__ == "__main__":
    sys.exit(main())
