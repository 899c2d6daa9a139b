"""Benchmark: memory and time of a gradient through `dlnjax.simulate`, for each adjoint, against the step count.

The problem: the gradient flow ``dlnjax.flows.Gradient(E)`` of ``E(X) = 1/2 ||X - M||^2`` (``dlnjax.losses.
Factorization``, ``M`` Gaussian with ``||M||_F = sqrt(d)``) for a network of width ``d = 32`` and depth ``N = 8``
(``dlnjax.orthogonal`` initialization), integrated over ``[0, 1]`` with ``diffrax.Tsit5()`` and a constant step
``1 / n``: exactly ``n`` steps (``max_steps = n``). The outcome is the final loss ``E(X(1))``. Per ``n``:

- ``forward``: the solve alone (the outcome);
- ``checkpoint``: ``jax.grad`` of the outcome with respect to all initial weights, with Diffrax's
  ``RecursiveCheckpointAdjoint`` (the default of `dlnjax.simulate`; Equinox's online checkpointing keeps
  ``c ~ sqrt(2 max_steps)`` checkpoints);
- ``checkpoint-all``: the same with ``RecursiveCheckpointAdjoint(checkpoints=n)``: every step stored, nothing
  recomputed, memory linear in ``n`` (a reference, run for ``n <= 1000`` only);
- ``checkpoint-unrolled``: the default adjoint with the solver wrapped in `UnrolledStages` (an experiment of this
  file): the same Tsit5 step with its stages unrolled in Python instead of Diffrax's nested checkpointed stage
  loop. Its "forward" is the forward solve with the same wrapped solver;
- ``backsolve``: the same gradient with ``BacksolveAdjoint`` (the continuous adjoint, solved backwards with the
  same constant step);
- ``forward-mode``: ``jax.jvp`` with ``ForwardMode`` with respect to one parameter (the scale ``s`` of
  ``W(0) = s W_0``).

Each configuration runs in its own subprocess, which compiles the forward solve and the derivative, reports the
compiled programs' memory analysis (``temp`` = XLA's scratch buffers, the working memory of the solve and its
adjoint; arguments and outputs are the same few weights for all), the process's peak resident memory
(``getrusage`` maxrss: jax and XLA themselves take a few hundred MB of it), and the time of one call, taken as
the minimum over rounds that call the derivative and the forward solve in turn (so their ratio is measured under
the same load). It also counts the vector-field evaluations of the derivative and of the forward solve (a
``jax.debug.callback`` in the field, in separately compiled copies of both programs), and the ``dot_general``s
of one field evaluation and of its VJP (from the jaxprs): reverse mode transposes every evaluation it
linearizes once, at twice an evaluation's matrix products, so the matrix-product work of a reverse-mode
gradient is ``evaluations / forward's evaluations + 2`` forward solves. Targets: checkpointed memory grows
sublinearly in ``n``; a gradient costs at most 5 forward solves.

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
ADJOINTS = (
    "forward",
    "checkpoint",
    "checkpoint-all",
    "checkpoint-unrolled",
    "backsolve",
    "forward-mode",
)
REVERSE = ("checkpoint", "checkpoint-all", "checkpoint-unrolled", "backsolve")
ALL_MAX_STEPS = 1000  # checkpoint-all stores every step (~130 KB each): n = 1e4 would take ~1.3 GB
STEPS = (10, 100, 1000, 10000)
QUICK_STEPS = (10, 100, 1000)
TARGET_RATIO = 5.0


# ----------------------------------------------------------------------------------------------
# the experiment: an explicit Runge-Kutta step with its stages unrolled


def _unrolled_stages_class():
    import diffrax as dfx
    import equinox.internal as eqxi
    import jax
    import jax.numpy as jnp
    import jax.tree_util as jtu

    from dlnjax.internal import AbstractDelegatingSolver

    def combine(y0, coeffs, ks):
        """``y0 + sum_j coeffs[j] ks[j]`` leafwise, skipping zero coefficients."""
        pairs = [(float(c), k) for c, k in zip(coeffs, ks) if c != 0]

        def leaf(y, *kk):
            for (c, _), k in zip(pairs, kk):
                y = y + jnp.asarray(c, jnp.result_type(k)) * k
            return y

        return jtu.tree_map(leaf, y0, *[k for _, k in pairs])

    class UnrolledStages(AbstractDelegatingSolver):
        """An explicit Runge-Kutta solver of Diffrax (one ``ButcherTableau``) with its stages unrolled in Python.

        Diffrax's ``AbstractRungeKutta.step`` runs the stages in an Equinox ``checkpointed`` while loop (with one
        checkpoint per stage). Under reverse mode that inner loop's forward pass evaluates the stages, and its
        backward pass evaluates them again to linearize them: one extra field evaluation per stage in every
        reverse step. Unrolled, JAX linearizes the stages directly. Same tableau, FSAL, error estimate and dense
        output as the wrapped solver (equal to round-off); the field is traced once per stage, so compilation is
        slower.
        """

        solver: dfx.AbstractERK

        def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
            tab = self.solver.tableau
            assert isinstance(tab, dfx.ButcherTableau) and not tab.implicit
            _, fsal = self.solver._common(terms, t0, t1, y0, args)
            control = terms.contr(t0, t1)
            if fsal:  # the first stage is the last one of the previous step, except on the first step or a jump
                first_step, f0 = solver_state
                f0 = jax.lax.cond(
                    eqxi.unvmap_any(first_step | made_jump),
                    lambda: terms.vf(t0, y0, args),
                    lambda: f0,
                )
            else:
                f0 = terms.vf(t0, y0, args)
            ks, fi, yi = [terms.prod(f0, control)], f0, y0
            for c, a in zip(tab.c, tab.a_lower):
                yi = combine(y0, a, ks)
                fi = terms.vf(t1 if c == 1 else t0 + float(c) * (t1 - t0), yi, args)
                ks.append(terms.prod(fi, control))
            y1 = yi if tab.ssal else combine(y0, tab.b_sol, ks)
            y_error = combine(jtu.tree_map(jnp.zeros_like, y0), tab.b_error, ks)
            dense_info = dict(y0=y0, y1=y1, k=jtu.tree_map(lambda *k: jnp.stack(k), *ks))
            state = (jnp.array(False), fi) if fsal else None
            return y1, y_error, dense_info, state, dfx.RESULTS.successful

    return UnrolledStages


# ----------------------------------------------------------------------------------------------
# worker: one (adjoint, n) per process


def _count_dots(jaxpr) -> int:
    """``dot_general``s executed by a jaxpr (scan bodies times their length)."""
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive.name == "dot_general"
        times = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
        for p in eqn.params.values():
            for sub in p if isinstance(p, (list, tuple)) else [p]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    count += times * _count_dots(inner)
    return count


def worker(adjoint: str, n: int, budget: float) -> dict:
    import resource

    import jax

    jax.config.update("jax_enable_x64", True)
    import diffrax as dfx
    import equinox as eqx
    import jax.numpy as jnp
    import jax.random as jr

    import dlnjax

    M = jr.normal(jr.PRNGKey(0), (D, D))
    loss = dlnjax.losses.Factorization(M * jnp.sqrt(D) / jnp.linalg.norm(M))
    W0 = dlnjax.orthogonal(jr.PRNGKey(1), (D,) * (N + 1))
    flow = dlnjax.flows.Gradient(loss)
    ts = jnp.array([0.0, 1.0])
    solver = (
        _unrolled_stages_class()(dfx.Tsit5()) if adjoint == "checkpoint-unrolled" else dfx.Tsit5()
    )

    evaluations = [0]

    def bump(t):
        evaluations[0] += 1

    class Counted(eqx.Module):  # the flow, counting its evaluations
        flow: eqx.Module

        def __call__(self, t, y, args):
            jax.debug.callback(bump, t)
            return self.flow(t, y, args)

    def programs(flow):
        def outcome(net0, adj):
            tr = dlnjax.simulate(
                flow, net0, ts, solver=solver, dt0=1.0 / n, max_steps=n, adjoint=adj
            )
            return loss(dlnjax.end_to_end(tr[-1])), tr.stats["num_steps"]

        def forward(net0):
            return outcome(net0, None)

        if adjoint == "forward":
            fn, arg = forward, W0
        elif adjoint in REVERSE:
            adj = {
                "checkpoint": dfx.RecursiveCheckpointAdjoint(),
                "checkpoint-all": dfx.RecursiveCheckpointAdjoint(checkpoints=n),
                "checkpoint-unrolled": dfx.RecursiveCheckpointAdjoint(),
                "backsolve": dfx.BacksolveAdjoint(),
            }[adjoint]
            fn, arg = jax.grad(lambda net0: outcome(net0, adj)[0]), W0
        else:
            scaled = lambda s: outcome(
                jax.tree_util.tree_map(lambda w: s * w, W0), dfx.ForwardMode()
            )[0]
            fn, arg = (lambda s: jax.jvp(scaled, (s,), (jnp.ones_like(s),))), jnp.asarray(1.0)
        return fn, arg, forward

    fn, arg, forward = programs(flow)
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

    counts = {}
    cfn, carg, cforward = programs(Counted(flow))
    for name, (f, x) in {"evaluations": (cfn, carg), "forward_evaluations": (cforward, W0)}.items():
        c = jax.jit(f).lower(x).compile()
        evaluations[0] = 0
        jax.block_until_ready(c(x))
        jax.effects_barrier()
        counts[name] = evaluations[0]

    row = dict(
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
        **counts,
    )
    if adjoint == "forward":
        field = lambda w: flow(0.0, w, None)
        vjp = lambda w, v: jax.vjp(field, w)[1](v)
        row["field_dots"] = _count_dots(jax.make_jaxpr(field)(W0).jaxpr)
        row["vjp_dots"] = _count_dots(jax.make_jaxpr(vjp)(W0, W0).jaxpr)
    return row


# ----------------------------------------------------------------------------------------------
# driver


def _machine() -> str:
    return "; ".join(line[2:] for line in _machine_info())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"steps {QUICK_STEPS} and short timing budgets"
    )
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
            if adjoint == "checkpoint-all" and n > ALL_MAX_STEPS:
                continue
            cmd = [sys.executable, __file__, "--worker", adjoint, str(n), "--budget", str(budget)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(
                f"  measured {adjoint:>19} n = {n:>5}: {row['time_s'] * 1e3:9.1f} ms",
                file=sys.stderr,
                flush=True,
            )

    mb = lambda b: b / 2**20
    ratio = lambda r: r["time_s"] / r["forward_s"]
    evals = lambda r: r["evaluations"] / r["forward_evaluations"]
    lines = [
        f"# adjoints: d = {D}, N = {N}, Gradient flow, Tsit5 with a constant step 1/n over [0, 1], float64",
        f"# machine: {_machine()}",
        "",
        "| adjoint | steps n | time (ms) | forward (ms) | / forward | field evaluations / forward's "
        "| temp (MB) | peak RSS (MB) | compile (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['adjoint']} | {r['n']} | {r['time_s'] * 1e3:.1f} | {r['forward_s'] * 1e3:.1f} | {ratio(r):.2f} | "
            f"{evals(r):.3f} | {mb(r['temp_bytes']):.2f} | {mb(r['maxrss_bytes']):.0f} | {r['compile_s']:.1f} |"
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
    for adjoint in ADJOINTS[1:]:
        ns = [n for n in steps if (adjoint, n) in by]
        worst = max(ratio(by[adjoint, n]) for n in ns)
        verdict = "PASS" if worst <= TARGET_RATIO else "FAIL"
        note = " (reference: memory linear in n)" if adjoint == "checkpoint-all" else ""
        lines.append(
            f"- {verdict}: {adjoint} derivative / forward solve <= {TARGET_RATIO:g} at every n (worst {worst:.2f}){note}"
        )
    f = by["forward", lo]
    transpose = (f["vjp_dots"] - f["field_dots"]) / f["field_dots"]
    lines.append(
        f"- one field evaluation: {f['field_dots']} matrix products (dot_general); its VJP: {f['vjp_dots']} "
        f"(the evaluation again and a transpose of {transpose:g} evaluations). Matrix-product work of the "
        "reverse-mode gradients, in forward solves (field evaluations / forward's + "
        f"{transpose:g} for the transposes):"
    )
    for adjoint in ("checkpoint", "checkpoint-all", "checkpoint-unrolled"):
        ns = [n for n in steps if (adjoint, n) in by]
        work = ", ".join(f"{evals(by[adjoint, n]) + transpose:.2f} (n = {n})" for n in ns)
        lines.append(f"  {adjoint}: {work}")
    report = "\n".join(lines)
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report + "\n")


if __name__ == "__main__":
    main()
