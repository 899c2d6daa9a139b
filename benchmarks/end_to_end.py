"""Benchmark: the end-to-end flow `EndToEnd(loss, N)` against the weight flow `Gradient(loss)` from the same balanced start.

For each width ``d`` and depth ``N`` this integrates, with `dlnjax.simulate` (Tsit5, PID controller, the same
``rtol``/``atol``), from the balanced network ``dlnjax.fiber_center(X0, N)`` and from ``X0`` itself,

- the weight flow ``dW/dt = -grad_W E(X(W))`` (`dlnjax.flows.Gradient`, state: N layers), and
- the end-to-end flow ``dX/dt = -A_N(X)[grad E(X)]`` (`EndToEnd`, state: the d x d matrix X; docs/theory.md §5, seed 003),

for the factorization loss ``E(X) = 1/2 ||X - M||^2`` with a fixed random target ``M`` (singular values in
[0.5, 1.5]) and ``X0 = 0.5 Q1 diag(s) Q2``, ``s`` in [0.5, 1.5]. The flow at depth ``N`` runs ``N`` times faster
than the rescaled limit (``A_N ~ N A_inf``), so both are integrated over ``t in [0, tau / N]`` with ``tau = 1``:
a fixed stretch of the rescaled time ``tau = N t``, during which the end-to-end matrix travels about the same
path at every depth. Reported: wall time of the whole (compiled) solve, steps, time per step, time of one
vector-field evaluation (each the minimum over interleaved rounds: all calls at one width take turns, so they
share the background load), their ratios (weight / end-to-end), and the
difference between the two final end-to-end matrices (they solve the same ODE for X; it should be at the
level of the tolerances).

Usage: ``python benchmarks/end_to_end.py [--quick] [--out FILE]``. float64 throughout.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# As in benchmarks/fiber_gradient.py: jaxlib's CPU eigh runs on scipy's OpenBLAS, whose default thread pool fights
# XLA's on a loaded 2-core machine (erratic, 10-500x slower LAPACK calls). Override by setting it yourself.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import _bench  # noqa: E402  (benchmarks/_bench.py, next to this script)

from dlnjax._cpu import configure_cpu  # noqa: E402

configure_cpu()  # one OpenBLAS thread, fast tiny fusions (dlnjax/_cpu.py), before JAX's backend starts

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import dlnjax  # noqa: E402
from dlnjax.flows import Gradient  # noqa: E402
from dlnjax.flows._end_to_end import EndToEnd  # noqa: E402

RTOL, ATOL = 1e-6, 1e-8  # simulate's defaults, for both flows
TAU = 1.0  # rescaled time: integrate t in [0, TAU / N]
TARGETS = dict(
    N=64, speedup=50.0, flat=2.0
)  # >= 50x faster than the weight flow at N = 64; cost flat in N


def rand_orthogonal(rng, d):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def problem(d: int, seed: int):
    rng = np.random.default_rng(seed)
    M = (rand_orthogonal(rng, d) * rng.uniform(0.5, 1.5, d)) @ rand_orthogonal(rng, d)
    X0 = 0.5 * (rand_orthogonal(rng, d) * rng.uniform(0.5, 1.5, d)) @ rand_orthogonal(rng, d)
    return jnp.asarray(X0), jnp.asarray(M)


def compile_case(d: int, N: int, seed: int):
    """Compiled solves and vector-field evaluations of both flows at ``(d, N)``, with their inputs."""
    X0, M = problem(d, seed)
    loss = lambda X: 0.5 * jnp.sum((X - M) ** 2)
    ts = jnp.array([0.0, TAU / N])
    net0 = dlnjax.fiber_center(X0, N)
    weight, e2e = Gradient(loss), EndToEnd(loss, N)

    def solve(flow):
        def f(y):
            traj = dlnjax.simulate(flow, y, ts, rtol=RTOL, atol=ATOL)
            return traj[-1], traj.stats["num_steps"], traj.success

        return jax.jit(f)

    info = dict(d=d, N=N, X0=X0)
    tc = time.perf_counter()
    solve_w = solve(weight).lower(net0).compile()
    info["compile_w"] = time.perf_counter() - tc
    tc = time.perf_counter()
    solve_e = solve(e2e).lower(X0).compile()
    info["compile_e"] = time.perf_counter() - tc
    field_w = jax.jit(lambda n: weight(0.0, n)).lower(net0).compile()
    field_e = jax.jit(lambda x: e2e(0.0, x)).lower(X0).compile()
    calls = {
        ("solve_w", N): (solve_w, net0),
        ("solve_e", N): (solve_e, X0),
        ("field_w", N): (field_w, net0),
        ("field_e", N): (field_e, X0),
    }
    return info, calls


def bench_width(d: int, depths, seed: int, *, budget: float):
    """All depths at width ``d``: compile everything, then time all calls in interleaved rounds."""
    infos, calls = {}, {}
    for N in depths:
        tc = time.perf_counter()
        infos[N], c = compile_case(d, N, seed)
        calls.update(c)
        print(
            f"  d = {d:3d}, N = {N:3d}: compiled in {time.perf_counter() - tc:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    tc = time.perf_counter()
    out, t = _bench.interleaved(calls, budget=budget)
    print(f"  d = {d:3d}: timed in {time.perf_counter() - tc:.1f} s", file=sys.stderr, flush=True)
    rows = []
    for N in depths:
        net_T, steps_w, ok_w = out[("solve_w", N)]
        X_T, steps_e, ok_e = out[("solve_e", N)]
        X0 = infos[N]["X0"]
        rows.append(
            dict(
                d=d,
                N=N,
                t_w=t[("solve_w", N)],
                t_e=t[("solve_e", N)],
                f_w=t[("field_w", N)],
                f_e=t[("field_e", N)],
                steps_w=int(steps_w),
                steps_e=int(steps_e),
                ok=bool(ok_w) and bool(ok_e),
                diff=float(jnp.linalg.norm(dlnjax.end_to_end(net_T) - X_T) / jnp.linalg.norm(X_T)),
                moved=float(jnp.linalg.norm(X_T - X0) / jnp.linalg.norm(X0)),
                compile_w=infos[N]["compile_w"],
                compile_e=infos[N]["compile_e"],
            )
        )
    return rows


# ----------------------------------------------------------------------------------------------
# report


def machine_info() -> list[str]:
    return _bench.machine_info(
        f"- tolerances rtol = {RTOL:g}, atol = {ATOL:g} (both flows); horizon t in [0, {TAU:g} / N]",
    )


def _ms(t):
    return f"{1e3 * t:.3g}"


def table(rows) -> list[str]:
    head = (
        "| d | N | weight solve (ms) | end-to-end solve (ms) | **solve: weight / end-to-end** | steps weight | steps end-to-end "
        "| weight ms/step | end-to-end ms/step | weight eval (ms) | end-to-end eval (ms) | eval: weight / end-to-end "
        "| rel. diff of X(T) | X moved | compile weight / end-to-end (s) |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['d']} | {r['N']} | {_ms(r['t_w'])} | {_ms(r['t_e'])} | **{r['t_w'] / r['t_e']:.3g}** "
            f"| {r['steps_w']} | {r['steps_e']} | {_ms(r['t_w'] / r['steps_w'])} | {_ms(r['t_e'] / r['steps_e'])} "
            f"| {_ms(r['f_w'])} | {_ms(r['f_e'])} | {r['f_w'] / r['f_e']:.3g} | {r['diff']:.1e} | {r['moved']:.2f} "
            f"| {r['compile_w']:.1f} / {r['compile_e']:.1f} |"
            + ("" if r["ok"] else " (a solve failed)")
        )
    return lines


def verdicts(rows) -> list[str]:
    tag = lambda ok: "PASS" if ok else "FAIL"
    out = []
    for d in sorted({r["d"] for r in rows}):
        rs = {r["N"]: r for r in rows if r["d"] == d}
        if TARGETS["N"] in rs:
            s = rs[TARGETS["N"]]["t_w"] / rs[TARGETS["N"]]["t_e"]
            out.append(
                f"- {tag(s >= TARGETS['speedup'])}: d = {d}, N = {TARGETS['N']}: weight / end-to-end solve time = {s:.3g} (target >= {TARGETS['speedup']:g})"
            )
        ts = [r["t_e"] for r in rs.values()]
        spread = max(ts) / min(ts)
        out.append(
            f"- {tag(spread <= TARGETS['flat'])}: d = {d}: end-to-end solve time max / min over N = {sorted(rs)} is {spread:.2f} "
            f"(target <= {TARGETS['flat']:g}: flat in N)"
        )
        fe = [r["f_e"] for r in rs.values()]
        out.append(
            f"- (info) d = {d}: end-to-end evaluation time max / min over N = {max(fe) / min(fe):.2f}"
        )
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: d = 32, N in {2, 64}")
    parser.add_argument("--out", metavar="FILE", help="also write the markdown report to FILE")
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args(argv)
    widths, depths = ((32,), (2, 64)) if opts.quick else ((32, 100), (2, 8, 64, 512))
    budget = 1.0 if opts.quick else 10.0

    info = machine_info()
    print("\n".join(info), flush=True)
    t0 = time.perf_counter()
    rows = []
    for d in widths:
        rows.extend(bench_width(d, depths, opts.seed + d, budget=budget))
    elapsed = time.perf_counter() - t0

    report = [
        "## Machine",
        *info,
        f"- benchmark wall time: {elapsed:.0f} s" + (" (--quick)" if opts.quick else ""),
        "",
    ]
    report += [
        "## EndToEnd(loss, N) against the weight flow Gradient(loss), same balanced start (float64)",
        "",
        *table(rows),
        "",
    ]
    report += ["## Targets", *verdicts(rows), ""]
    _bench.publish(report, opts.out)


if __name__ == "__main__":
    main()
