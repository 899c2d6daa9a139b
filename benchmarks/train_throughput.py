"""Benchmark: `dlnjax.train` throughput (run-steps per second) against the batch size, beside a one-network loop.

Two workloads, float32 (JAX's default, as the published scripts):

1. **Seed 004's network** (Marion & Chizat, §5; docs/theory.md §7): widths ``(5, ..., 5, 1)``, depth 10,
   ``dlnjax.losses.Regression.random`` data (n = 50, d = 5, noise 1), Gaussian initialization with scales
   ``linspace(0.25, 0.6, 10)`` (tiled over the batch), gradient descent ``optax.sgd(0.1)`` for 2000 steps, then
   the sharpness of the final network (20 Lanczos steps: `dlnjax.sharpness`). Batch sizes 1, 24, 256, 1600, 10^4:
   one jitted ``jax.vmap`` of ``train`` + ``sharpness`` over the runs.
2. **Depth-3 completion**: 100 x 100, rank 5, 2000 observed entries (`MatrixCompletion.random`), layers
   ``N(0, 1e-2)``-scaled Gaussian, ``optax.sgd(0.5)``, 50 steps, batch sizes 1, 24, 256 (1600: 10 steps;
   10^4 is left out: ~1.2 GB per copy of the weights, ~120 GFLOP per step).

Columns, timed side by side in the same rounds (medians over the rounds; the machine is shared):

- **dlnjax**: ``dlnjax.train`` as shipped (for seed 004's network the fast path: the chain in its cheaper
  association with the batch axis last under vmap, the covariance form of the regression loss; `dlnjax._train`);
- **generic**: the same call with the loss wrapped in a plain function (``lambda X: loss(X)``), which takes
  ``train``'s generic path, ``jax.value_and_grad`` of ``loss(end_to_end(W))``: the engine before the fast path;
- **loop**: the authors' style, one network at a time: the layers as a list of arrays, ``jax.jit`` of one
  gradient step called from a **Python loop** (``benchmarks/sweep_vs_loop.py``: ``loop_step``; for seed 004 then
  the 20-step power iteration ``loop_sharpness``); timed on a few runs and charged per run (it does not batch);
- **scan**: the same step inside one jitted **``lax.scan`` per network** (the fairest one-network program: no
  Python between steps), also charged per run.

The **arithmetic bound** beside each figure is the FLOP count of one run-step of the formulation (seed 004: the
fast path's chain, covariance loss, backward pass and update, counted by `flops_seed004`; completion: six
100 x 100 x 100 products per step) divided by the rate this CPU reaches on that kind of product (measured
here: the best of a batch-last row-vector times 5 x 5 chain at 4096 runs, and of 100 x 100 ``jnp.matmul``).

Usage: ``python benchmarks/train_throughput.py [--quick] [--rounds R] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import sys
import time

import _bench  # noqa: E402  (benchmarks/_bench.py, next to this script)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import sweep_vs_loop as paper  # noqa: E402  (the authors'-style loop; it calls configure_cpu before JAX starts)

import dlnjax  # noqa: E402
from dlnjax.losses import MatrixCompletion, Regression  # noqa: E402

ETA, STEPS, LANCZOS = 0.1, 2000, 20
BATCHES = (1, 24, 256, 1600, 10_000)
COMPLETION = dict(n=100, depth=3, rank=5, observed=2000, eta=0.5, steps=50, scale=0.1)
COMPLETION_BATCHES = ((1, 50), (24, 50), (256, 50), (1600, 10))
TARGETS = dict(ratio_24=50.0, us_256=2.0)  # for 2000 steps + final sharpness
QUICK_NOTE = (
    " (--quick: 200 steps, so the final sharpness weighs 10x more than in the target's 2000)"
)


def flops_seed004(widths=paper.WIDTHS) -> int:
    """FLOPs of one run-step of the fast path (dN <= d0: the chain from the output side), 2 per multiply-add:
    forward chain, covariance loss (value and gradient), backward chain and layer gradients, and the update
    (``eta g``, the padding mask, the subtraction: 3 per weight)."""
    d0, dN, m, N = widths[0], widths[-1], max(widths[1:-1]), len(widths) - 1
    forward = dN * m * m * (N - 2) + dN * m * d0
    loss = dN * d0 * d0 + 3 * dN * d0
    backward = dN * d0 * m + dN * m * m * (N - 2) + (m * d0 + m * m * (N - 2)) * dN
    weights = m * d0 + m * m * (N - 2) + dN * m
    return 2 * (forward + loss + backward) + 3 * weights


def flops_completion(n=COMPLETION["n"]) -> int:
    """Six n x n x n products per step (W2 W1, W3 (W2 W1); G (W2 W1)^T, W3^T G, (W3^T G) W1^T, W2^T (W3^T G))."""
    return 6 * 2 * n**3


def product_rates(quick: bool) -> dict[str, float]:
    """GFLOP/s of (a) a chain of ten 1 x 5 by 5 x 5 products, batch axis last, 4096 runs, (b) 5 x 5 x 5 products
    likewise, (c) one 100 x 100 x 100 ``jnp.matmul`` (HIGHEST), each repeated inside one jitted loop."""
    reps, B = (50 if quick else 200), 4096
    rng = np.random.default_rng(0)
    W = jnp.asarray(rng.standard_normal((10, 5, 5, B)) * 0.4, jnp.float32)
    v = jnp.asarray(rng.standard_normal((1, 5, B)), jnp.float32)
    M = jnp.asarray(rng.standard_normal((5, 5, B)) * 0.4, jnp.float32)
    A = jnp.asarray(rng.standard_normal((100, 100)) / 10, jnp.float32)
    mul = lambda a, b: jnp.sum(a[:, :, None] * b[None], axis=1)

    def chain(x, Ws):
        for k in range(Ws.shape[0]):
            x = mul(x, Ws[k])
        return x / (1.0 + jnp.max(jnp.abs(x)))

    loop = lambda body: jax.jit(lambda x: jax.lax.fori_loop(0, reps, lambda _, y: body(y), x))
    cases = {
        "vector x 5x5 chain, batch last": (loop(lambda x: chain(x, W)), v, 2 * 25 * 10 * B),
        "5x5x5, batch last": (loop(lambda x: mul(x, M) / 2.0), M, 2 * 125 * B),
        "100x100x100 matmul": (
            loop(lambda x: jnp.matmul(x, A, precision=jax.lax.Precision.HIGHEST)),
            A,
            2 * 100**3,
        ),
    }
    calls = {k: (f, x) for k, (f, x, _) in cases.items()}
    for f, x in calls.values():
        _bench.timed(f, x)  # compile outside the timed rounds
    _, best = _bench.interleaved(calls, budget=2.0 if quick else 6.0)
    return {k: flops * reps / best[k] / 1e9 for k, (_, _, flops) in cases.items()}


# ----------------------------------------------------------------------------------------------
# Seed 004's network


def seed004_programs(loss, steps):
    """``{name: jitted f(keys, scales) -> (final losses, sharpness)}`` for the shipped and the generic path."""
    opt = optax.sgd(ETA)

    def program(train_loss):
        def one(key, scale):
            res = dlnjax.train(
                train_loss,
                dlnjax.gaussian(key, paper.WIDTHS, scale),
                opt,
                steps,
                every=steps,
            )
            return res.history["loss"][-1], dlnjax.sharpness(loss, res.net, iterations=LANCZOS)

        return jax.jit(jax.vmap(one))

    return {"dlnjax": program(loss), "generic": program(lambda X: loss(X))}


def grid(batch):
    keys = jax.random.split(jax.random.PRNGKey(1), batch)
    return keys, jnp.asarray(np.resize(np.linspace(0.25, 0.6, 10), batch), jnp.float32)


def paper_loop(loss, key, scale, steps):
    """One run the authors' way: jitted step from a Python loop, then the power-iteration sharpness."""
    x, y = loss.inputs, loss.targets
    params = paper.loop_init(key, scale)
    for _ in range(steps):
        params, _ = paper.loop_step(params, x, y, ETA)
    return paper.loop_sharpness(params, x, y, key)


def paper_scan(loss, steps):
    """One run as one jitted ``lax.scan`` of the same step, then the same sharpness."""
    x, y = loss.inputs, loss.targets

    @jax.jit
    def run(key, scale):
        def body(params, _):
            grads = jax.grad(paper.loop_loss)(params, x, y)
            return [p - ETA * g for p, g in zip(params, grads)], None

        params, _ = jax.lax.scan(body, paper.loop_init(key, scale), None, length=steps)
        return paper.loop_sharpness(params, x, y, key)

    return run


def bench_seed004(loss, batches, steps, rounds, loop_runs):
    """Per batch size: medians over ``rounds`` of the per-run-step times, interleaved with the one-network runs."""
    programs = seed004_programs(loss, steps)
    scan_run = paper_scan(loss, steps)
    keys, scales = grid(max(loop_runs, 1))
    one_net = {
        "loop": lambda: paper_loop(loss, keys[0], float(scales[0]), steps),
        "scan": lambda: scan_run(keys[0], scales[0]),
    }
    compile_s = {}
    for name, f in one_net.items():
        compile_s[name] = _bench.timed(lambda _: f(), None)[0]
    rows = []
    for batch in batches:
        keys_b, scales_b = grid(batch)
        row = dict(batch=batch, compile={}, times={k: [] for k in (*programs, *one_net)})
        compiled = {}
        for name, f in programs.items():
            t = time.perf_counter()
            compiled[name] = f.lower(keys_b, scales_b).compile()  # ahead of time: compile alone
            row["compile"][name] = time.perf_counter() - t
            out = compiled[name](keys_b, scales_b)
            row[f"{name}_loss"] = float(np.nanmedian(np.asarray(out[0])))
            row[f"{name}_sharpness"] = float(np.nanmedian(np.asarray(out[1])))
        for _ in range(rounds):
            for name, f in compiled.items():
                row["times"][name].append(
                    _bench.timed(lambda a: f(*a), (keys_b, scales_b))[0] / (batch * steps)
                )
            for name, f in one_net.items():
                total = sum(_bench.timed(lambda _: f(), None)[0] for _ in range(loop_runs))
                row["times"][name].append(total / (loop_runs * steps))
        row["median"] = {k: float(np.median(v)) for k, v in row["times"].items()}
        rows.append(row)
        print(
            f"  seed 004, batch {batch}: "
            + ", ".join(f"{k} {1e6 * v:.3g} us" for k, v in row["median"].items()),
            file=sys.stderr,
            flush=True,
        )
    return rows, compile_s


# ----------------------------------------------------------------------------------------------
# Depth-3 completion


def completion_loss():
    c = COMPLETION
    return MatrixCompletion.random(
        jax.random.PRNGKey(4), (c["n"], c["n"]), c["rank"], c["observed"]
    )


def completion_programs(loss, steps):
    c = COMPLETION
    widths = (c["n"],) * (c["depth"] + 1)
    opt = optax.sgd(c["eta"])

    def one(key):
        net0 = dlnjax.gaussian(key, widths, c["scale"] / np.sqrt(c["n"]))
        return dlnjax.train(loss, net0, opt, steps, every=steps).history["loss"][-1]

    rows, cols, vals = loss.rows, loss.cols, loss.values

    def comp_loss(params):
        X = params[0]
        for w in params[1:]:
            X = jnp.dot(w, X)
        return jnp.mean((X[rows, cols] - vals) ** 2)

    @jax.jit
    def step(params):
        grads = jax.grad(comp_loss)(params)
        return [p - c["eta"] * g for p, g in zip(params, grads)]

    def loop(key):
        keys = jax.random.split(key, c["depth"])
        params = [c["scale"] / np.sqrt(c["n"]) * jax.random.normal(k, widths[:2]) for k in keys]
        for _ in range(steps):
            params = step(params)
        return params

    @jax.jit
    def scan(key):
        keys = jax.random.split(key, c["depth"])
        params = [c["scale"] / np.sqrt(c["n"]) * jax.random.normal(k, widths[:2]) for k in keys]
        return jax.lax.scan(lambda p, _: (step(p), None), params, None, length=steps)[0]

    return jax.jit(jax.vmap(one)), loop, scan


def bench_completion(batches, rounds):
    loss = completion_loss()
    rows = []
    for batch, steps in batches:
        batched, loop, scan = completion_programs(loss, steps)
        keys = jax.random.split(jax.random.PRNGKey(5), batch)
        t = time.perf_counter()
        batched = batched.lower(keys).compile()  # ahead of time: compile alone
        first = time.perf_counter() - t
        for f in (loop, scan):
            _bench.timed(f, keys[0])  # compile
        times = {"dlnjax": [], "loop": [], "scan": []}
        for _ in range(rounds):
            times["dlnjax"].append(_bench.timed(batched, keys)[0] / (batch * steps))
            times["loop"].append(_bench.timed(loop, keys[0])[0] / steps)
            times["scan"].append(_bench.timed(scan, keys[0])[0] / steps)
        median = {k: float(np.median(v)) for k, v in times.items()}
        rows.append(dict(batch=batch, steps=steps, first=first, median=median, times=times))
        print(
            f"  completion, batch {batch}: "
            + ", ".join(f"{k} {1e6 * v:.4g} us" for k, v in median.items()),
            file=sys.stderr,
            flush=True,
        )
    return rows


# ----------------------------------------------------------------------------------------------
# Report


def _us(t):
    return f"{1e6 * t:.3g}"


def seed004_table(rows, steps, compile_s, rate, quick):
    bound = flops_seed004() / (rate * 1e9)
    lines = [
        f"### Seed 004's network: widths (5, ..., 5, 1), depth 10, n = 50, float32; gradient descent eta = {ETA}, "
        f"{steps} steps + final sharpness ({LANCZOS} Lanczos steps)",
        "",
        f"Arithmetic bound: {flops_seed004()} FLOP per run-step (fast path) / {rate:.1f} GFLOP/s (best measured "
        f"small-product rate) = **{1e6 * bound:.3f} us per run-step**. Times are per run-step (us), medians over "
        "the rounds; loop and scan run one network at a time (charged per run).",
        "",
        "| batch | dlnjax (us) | run-steps/s | generic, before (us) | loop (us) | scan (us) | **loop / dlnjax** | "
        "scan / dlnjax | generic / dlnjax | dlnjax / bound | compile dlnjax (s) | compile generic (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m, b = r["median"], r["batch"]
        comp = r["compile"]
        lines.append(
            f"| {b} | {_us(m['dlnjax'])} | {1 / m['dlnjax']:.3g} | {_us(m['generic'])} | {_us(m['loop'])} | "
            f"{_us(m['scan'])} | **{m['loop'] / m['dlnjax']:.1f}** | {m['scan'] / m['dlnjax']:.1f} | "
            f"{m['generic'] / m['dlnjax']:.2f} | {m['dlnjax'] / bound:.1f} | {comp['dlnjax']:.1f} | "
            f"{comp['generic']:.1f} |"
        )
    lines += [
        "",
        "- rounds (us per run-step): "
        + "; ".join(
            f"batch {r['batch']}: "
            + ", ".join(f"{k} " + "/".join(_us(t) for t in v) for k, v in r["times"].items())
            for r in rows
        ),
        "- median final loss / sharpness, dlnjax vs generic: "
        + "; ".join(
            f"batch {r['batch']}: {r['dlnjax_loss']:.5g} / {r['dlnjax_sharpness']:.4g} vs "
            f"{r['generic_loss']:.5g} / {r['generic_sharpness']:.4g}"
            for r in rows
        ),
        f"- one-network first calls (compile + one run): loop {compile_s['loop']:.2f} s, scan {compile_s['scan']:.2f} s",
        "",
    ]
    verdicts = []
    by = {r["batch"]: r["median"] for r in rows}
    if 24 in by:
        ratio = by[24]["loop"] / by[24]["dlnjax"]
        verdicts.append(
            f"- {'PASS' if ratio >= TARGETS['ratio_24'] else 'FAIL'}: batch 24, loop / dlnjax = {ratio:.1f} "
            f"(target >= {TARGETS['ratio_24']:g})" + (QUICK_NOTE if quick else "")
        )
    for b, m in by.items():
        if b >= 256:
            ok = 1e6 * m["dlnjax"] <= TARGETS["us_256"]
            verdicts.append(
                f"- {'PASS' if ok else 'FAIL'}: batch {b}, {_us(m['dlnjax'])} us per run-step "
                f"(target <= {TARGETS['us_256']:g})" + (QUICK_NOTE if quick else "")
            )
    return lines, verdicts


def completion_table(rows, rate):
    bound = flops_completion() / (rate * 1e9)
    lines = [
        "### Depth-3 completion: 100 x 100, rank 5, 2000 observed, float32, gradient descent (generic path: "
        "widths above the fast path's)",
        "",
        f"Arithmetic bound: {flops_completion() / 1e6:.0f} MFLOP per run-step / {rate:.1f} GFLOP/s (100^3 "
        f"matmul) = **{1e6 * bound:.0f} us per run-step**.",
        "",
        "| batch | steps | dlnjax (us) | run-steps/s | loop (us) | scan (us) | **loop / dlnjax** | scan / dlnjax | "
        "dlnjax / bound | compile dlnjax (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m = r["median"]
        lines.append(
            f"| {r['batch']} | {r['steps']} | {_us(m['dlnjax'])} | {1 / m['dlnjax']:.3g} | {_us(m['loop'])} | "
            f"{_us(m['scan'])} | **{m['loop'] / m['dlnjax']:.2f}** | {m['scan'] / m['dlnjax']:.2f} | "
            f"{m['dlnjax'] / bound:.2f} | {r['first']:.1f} |"
        )
    return lines + [""]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: batches 1, 24, 256 x 200 steps; completion batches 1, 8 x 5 steps",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of the side-by-side timings (medians)"
    )
    parser.add_argument(
        "--skip", default="", help="comma-separated parts to skip: seed004, completion"
    )
    parser.add_argument(
        "--batches", help="comma-separated batch sizes of seed 004's network (default: all)"
    )
    parser.add_argument("--out", metavar="FILE", help="also write the markdown report to FILE")
    opts = parser.parse_args(argv)
    skip = set(filter(None, opts.skip.split(",")))
    info = _bench.machine_info("- dtype: float32")
    print("\n".join(info), flush=True)
    start = time.perf_counter()
    rates = product_rates(opts.quick)
    small = max(v for k, v in rates.items() if "batch last" in k)
    report = [
        "#### Machine",
        *info,
        "- measured product rates (GFLOP/s): "
        + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()),
        "",
    ]
    verdicts = []
    if "seed004" not in skip:
        steps = 200 if opts.quick else STEPS
        batches = (1, 24, 256) if opts.quick else BATCHES
        if opts.batches:
            batches = tuple(int(b) for b in opts.batches.split(","))
        rows, compile_s = bench_seed004(
            Regression.random(jax.random.PRNGKey(0), 50, 5, noise=1.0),
            batches,
            steps,
            opts.rounds,
            1 if opts.quick else 2,
        )
        lines, verdicts = seed004_table(rows, steps, compile_s, small, opts.quick)
        report += lines
    if "completion" not in skip:
        batches = ((1, 5), (8, 5)) if opts.quick else COMPLETION_BATCHES
        report += completion_table(
            bench_completion(batches, opts.rounds), rates["100x100x100 matmul"]
        )
    report += [
        f"- benchmark wall time: {time.perf_counter() - start:.0f} s"
        + (" (--quick)" if opts.quick else ""),
        "",
        "#### Targets",
        *verdicts,
        "",
    ]
    return _bench.write_report(report, opts.out)


if __name__ == "__main__":
    sys.exit(main())
