"""Benchmark: memory and time of a gradient through `dlnjax.simulate`, for each adjoint, against the step count.

The problem: the gradient flow ``dlnjax.flows.Gradient(E)`` of ``E(X) = 1/2 ||X - M||^2`` (``dlnjax.losses.
Factorization``, ``M`` Gaussian with ``||M||_F = sqrt(d)``) for a network of width ``d = 32`` and depth ``N = 8``
(``dlnjax.orthogonal`` initialization), integrated over ``[0, 1]`` with ``diffrax.Tsit5()`` and a constant step
``1 / n``: exactly ``n`` steps (``max_steps = n``). The outcome is the final loss ``E(X(1))``. Per ``n``:

- ``forward``: the solve alone (the outcome);
- ``checkpoint``: ``jax.grad`` of the outcome with respect to all initial weights, with Diffrax's
  ``RecursiveCheckpointAdjoint`` (the default of `dlnjax.simulate`; ``log(max_steps)`` checkpoints);
- ``backsolve``: the same gradient with ``BacksolveAdjoint`` (the continuous adjoint, solved backwards with the
  same constant step);
- ``forward-mode``: ``jax.jvp`` with ``ForwardMode`` with respect to one parameter (the scale ``s`` of
  ``W(0) = s W_0``).

Each configuration runs in its own subprocess, which compiles the forward solve and the derivative, reports the
compiled programs' memory analysis (``temp`` = XLA's scratch buffers, the working memory of the solve and its
adjoint; arguments and outputs are the same few weights for all), the process's peak resident memory
(``getrusage`` maxrss: jax and XLA themselves take a few hundred MB of it), and the time of one call, taken as
the minimum over rounds that call the derivative and the forward solve in turn (so their ratio is measured under
the same load). Targets: checkpointed memory grows sublinearly in ``n``; a gradient costs at most 5 forward solves.

Usage: ``python benchmarks/adjoints.py [--quick] [--out FILE]``. float64 throughout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from dlnjax._cpu import configure_cpu  # noqa: E402

configure_cpu()  # one OpenBLAS thread, fast tiny fusions (dlnjax/_cpu.py); inherited by the worker processes

from _bench import machine_info as _machine_info  # noqa: E402  (benchmarks/_bench.py)

D, N = 32, 8
ADJOINTS = ("forward", "checkpoint", "backsolve", "forward-mode")
STEPS = (10, 100, 1000, 10000)
QUICK_STEPS = (10, 100, 1000)
TARGET_RATIO = 5.0


# ----------------------------------------------------------------------------------------------
# worker: one (adjoint, n) per process


def worker(adjoint: str, n: int, budget: float) -> dict:
    import resource

    import jax

    jax.config.update("jax_enable_x64", True)
    import diffrax as dfx
    import jax.numpy as jnp
    import jax.random as jr

    import dlnjax

    M = jr.normal(jr.PRNGKey(0), (D, D))
    loss = dlnjax.losses.Factorization(M * jnp.sqrt(D) / jnp.linalg.norm(M))
    W0 = dlnjax.orthogonal(jr.PRNGKey(1), (D,) * (N + 1))
    flow = dlnjax.flows.Gradient(loss)
    ts = jnp.array([0.0, 1.0])

    def outcome(net0, adj):
        tr = dlnjax.simulate(flow, net0, ts, solver=dfx.Tsit5(), dt0=1.0 / n, max_steps=n, adjoint=adj)
        return loss(dlnjax.end_to_end(tr[-1])), tr.stats["num_steps"]

    def forward(net0):
        return outcome(net0, None)

    if adjoint == "forward":
        fn, arg = forward, W0
    elif adjoint in ("checkpoint", "backsolve"):
        adj = dfx.RecursiveCheckpointAdjoint() if adjoint == "checkpoint" else dfx.BacksolveAdjoint()
        fn, arg = jax.grad(lambda net0: outcome(net0, adj)[0]), W0
    else:
        scaled = lambda s: outcome(jax.tree_util.tree_map(lambda w: s * w, W0), dfx.ForwardMode())[0]
        fn, arg = (lambda s: jax.jvp(scaled, (s,), (jnp.ones_like(s),))), jnp.asarray(1.0)

    t = time.perf_counter()
    compiled = jax.jit(fn).lower(arg).compile()
    compile_s = time.perf_counter() - t
    fwd = jax.jit(forward).lower(W0).compile()
    mem = compiled.memory_analysis()
    _, steps = jax.block_until_ready(fwd(W0))
    assert int(steps) == n, (int(steps), n)

    def timed(f, x):
        t = time.perf_counter()
        jax.block_until_ready(f(x))
        return time.perf_counter() - t

    times, ftimes = [timed(compiled, arg)], [timed(fwd, W0)]
    start = time.perf_counter()
    min_rounds = 3 if times[0] < 1.0 else 2  # slow calls (n = 1e4) are timed twice
    while len(times) < min_rounds or (time.perf_counter() - start < budget and len(times) < 50):
        times.append(timed(compiled, arg))
        ftimes.append(timed(fwd, W0))
    return dict(
        adjoint=adjoint,
        n=n,
        compile_s=compile_s,
        time_s=min(times),
        forward_s=min(ftimes),
        rounds=len(times),
        temp_bytes=int(mem.temp_size_in_bytes),
        argument_bytes=int(mem.argument_size_in_bytes),
        output_bytes=int(mem.output_size_in_bytes),
        maxrss_bytes=int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024,
    )


# ----------------------------------------------------------------------------------------------
# driver


def _machine() -> str:
    return "; ".join(line[2:] for line in _machine_info())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"steps {QUICK_STEPS} and short timing budgets")
    parser.add_argument("--out", help="also write the report to this file")
    parser.add_argument("--worker", nargs=2, metavar=("ADJOINT", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, default=3.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.budget)))
        return
    steps = QUICK_STEPS if args.quick else STEPS
    budget = 0.5 if args.quick else 3.0
    rows = []
    for n in steps:
        for adjoint in ADJOINTS:
            cmd = [sys.executable, __file__, "--worker", adjoint, str(n), "--budget", str(budget)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"  measured {adjoint:>12} n = {n:>5}: {row['time_s'] * 1e3:9.1f} ms", file=sys.stderr, flush=True)

    mb = lambda b: b / 2**20
    lines = [
        f"# adjoints: d = {D}, N = {N}, Gradient flow, Tsit5 with a constant step 1/n over [0, 1], float64",
        f"# machine: {_machine()}",
        "",
        "| adjoint | steps n | time (ms) | / forward | temp (MB) | peak RSS (MB) | compile (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r["time_s"] / r["forward_s"]
        lines.append(
            f"| {r['adjoint']} | {r['n']} | {r['time_s'] * 1e3:.1f} | {ratio:.2f} | {mb(r['temp_bytes']):.2f} | "
            f"{mb(r['maxrss_bytes']):.0f} | {r['compile_s']:.1f} |"
        )
    # targets
    by = {(r["adjoint"], r["n"]): r for r in rows}
    lo, hi = steps[0], steps[-1]
    growth = by["checkpoint", hi]["temp_bytes"] / max(by["checkpoint", lo]["temp_bytes"], 1)
    lines += [
        "",
        f"- checkpointed temp memory, n = {hi} / n = {lo}: {growth:.2f} for {hi // lo}x the steps "
        f"({'PASS' if growth < (hi / lo) ** 0.5 else 'FAIL'}: sublinear, below sqrt growth {(hi / lo) ** 0.5:.0f}x)",
    ]
    for adjoint in ("checkpoint", "backsolve", "forward-mode"):
        worst = max(by[adjoint, n]["time_s"] / by[adjoint, n]["forward_s"] for n in steps)
        verdict = "PASS" if worst <= TARGET_RATIO else "FAIL"
        lines.append(f"- {verdict}: {adjoint} gradient / forward solve <= {TARGET_RATIO:g} at every n (worst {worst:.2f})")
    report = "\n".join(lines)
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report + "\n")


if __name__ == "__main__":
    main()
