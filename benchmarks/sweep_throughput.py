"""Benchmark: sweep throughput on the accelerator (the GPU figures of the sweep issue), with the CPU beside it.

1. **Throughput against batch size**: runs x steps per second of a batched gradient-descent sweep
   (`dlnjax.train` under ``jax.vmap``; seed 004's network: d = 5, depth 10, widths (5, ..., 5, 1), regression
   data n = 50) and of a batched gradient-flow sweep (`dlnjax.simulate` of `dlnjax.flows.Gradient`, Tsit5 with a
   constant step, so the step count is fixed; as ``jax.vmap`` of per-run solves and as one solve of the batch,
   which is what `dlnjax sweep` does for constant steps), for growing batch sizes.
2. **FLOP rate of the gradient-flow right-hand side** for square layers of width d in {256, 1024} (depth 8,
   `dlnjax.losses.Factorization`): the ``3 (N - 1)`` matrix products of one reverse-mode gradient (``2 d^3``
   FLOPs each) divided by the measured time, against the rate of JAX's dense ``d x d`` matmul on the same device
   (``2 d^3`` FLOPs). Target: >= 40 % of the matmul rate.
3. **Seed 004's full linear sweep** (1600 runs, 13.2 million gradient steps; the published step sizes, steps and
   seeds per scale; sharpness at initialization and at the end) through `dlnjax.sweep.run`, on the default
   device and on the host CPU of the same machine (``jax.devices("cpu")``), wall time including compilation.
   Target on a GPU: >= 100x the CPU throughput.

float32 (the published script's precision; ``--x64`` for float64). ``--quick``: small sizes.
Usage: ``python benchmarks/sweep_throughput.py [--quick] [--x64] [--skip-sweep] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import _bench  # benchmarks/_bench.py

from dlnjax._cpu import configure_cpu

configure_cpu()

import jax  # noqa: E402

if "--x64" in sys.argv:
    jax.config.update("jax_enable_x64", True)

import diffrax as dfx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import dlnjax  # noqa: E402
from dlnjax.losses import Factorization, Regression  # noqa: E402
from dlnjax.sweep import parse_config, run  # noqa: E402

WIDTHS = (5,) * 10 + (1,)
PUBLISHED = [
    (0.005, 40_000, 20),
    (0.02, 10_000, 20),
    (0.07, 4_000, 20),
    (0.1, 4_000, 20),
    (0.2, 2_000, 80),
]
SCALES = [float(s) for s in np.linspace(0.25, 0.6, 10)]


def throughput(batch_sizes, gd_steps, gf_steps):
    loss = Regression.random(jr.PRNGKey(0), 50, 5, 1)
    rows = []

    @jax.jit
    def gd(keys):
        def one(key):
            net = dlnjax.gaussian(key, WIDTHS, 0.4)
            return dlnjax.train(loss, net, optax.sgd(0.05), gd_steps, every=gd_steps).history[
                "loss"
            ][-1]

        return jax.vmap(one)(keys)

    dt = 0.05

    @jax.jit
    def gf(keys):
        def one(key):
            net = dlnjax.gaussian(key, WIDTHS, 0.4)
            traj = dlnjax.simulate(
                dlnjax.flows.Gradient(loss),
                net,
                jnp.asarray([0.0, gf_steps * dt]),
                dt0=dt,
                stepsize_controller=dfx.ConstantStepSize(),
                max_steps=gf_steps + 1,
            )
            return dlnjax.network_loss(loss, traj[-1])

        return jax.vmap(one)(keys)

    @jax.jit
    def gf_batched(
        keys,
    ):  # what `dlnjax sweep` does for constant steps: one solve, the field vmapped over runs
        nets = jax.vmap(lambda k: dlnjax.gaussian(k, WIDTHS, 0.4))(keys)
        field = lambda t, y, args: jax.vmap(lambda n: dlnjax.flows.Gradient(loss)(t, n))(y)
        traj = dlnjax.simulate(
            field, nets, jnp.asarray([0.0, gf_steps * dt]), dt0=dt, max_steps=gf_steps + 1
        )
        return jax.vmap(lambda n: dlnjax.network_loss(loss, n))(traj[-1])

    for b in batch_sizes:
        keys = jr.split(jr.PRNGKey(1), b)
        out = {}
        for name, f, steps in (
            ("GD", gd, gd_steps),
            ("GF", gf, gf_steps),
            ("GFb", gf_batched, gf_steps),
        ):
            jax.block_until_ready(f(keys))  # compile
            _, t = _bench.interleaved({name: (f, keys)}, budget=2.0, min_rounds=2)
            out[name] = b * steps / t[name]
        rows.append((b, out["GD"], out["GF"], out["GFb"]))
        print(
            f"  batch {b}: GD {out['GD']:.3g}, GF {out['GF']:.3g} / {out['GFb']:.3g} run-steps/s",
            file=sys.stderr,
            flush=True,
        )
    return rows


def flop_rate(ds, depth=8):
    rows = []
    for d in ds:
        k1, k2 = jr.split(jr.PRNGKey(d))
        loss = Factorization(jr.normal(k1, (d, d)) / np.sqrt(d))
        net = dlnjax.gaussian(k2, (d,) * (depth + 1), 1.0 / np.sqrt(d))
        flow = dlnjax.flows.Gradient(loss)
        rhs = jax.jit(lambda n: flow(0.0, n))
        A = jr.normal(k1, (d, d), net.dtype)
        mm = jax.jit(lambda a: a @ a)
        xla = rhs.lower(net).compile().cost_analysis()
        xla = (xla[0] if isinstance(xla, list) else xla)["flops"]
        # The matmuls one reverse-mode gradient needs: N - 1 forward products W_k P_{k-1}, then for k = N..2 the
        # weight gradient B_k P_{k-1}^T and the back-propagated B_{k-1} = W_k^T B_k: 3 (N - 1) products of 2 d^3.
        # (XLA's cost analysis counts a loop body once, not once per trip, so it undercounts the scanned products.)
        flops_rhs = 3 * (depth - 1) * 2 * d**3
        jax.block_until_ready((rhs(net), mm(A)))
        _, t = _bench.interleaved({"rhs": (rhs, net), "matmul": (mm, A)}, budget=5.0)
        r_rhs, r_mm = flops_rhs / t["rhs"], 2 * d**3 / t["matmul"]
        rows.append((d, flops_rhs, xla, t["rhs"], r_rhs, r_mm, r_rhs / r_mm))
        print(
            f"  d = {d}: rhs {r_rhs / 1e9:.1f} GFLOP/s, matmul {r_mm / 1e9:.1f} GFLOP/s",
            file=sys.stderr,
            flush=True,
        )
    return rows


def full_sweep(devices, quick, dtype):
    total_steps, start = 0, time.perf_counter()
    for eta, steps, seeds in PUBLISHED:
        if quick:
            steps, seeds = steps // 20, max(1, seeds // 10)
        cfg = parse_config(
            {
                "name": f"seed004-eta{eta}",
                "dtype": dtype,
                "batch_size": 10 * seeds,
                "task": {"loss": "regression", "n": 50, "d_in": 5, "d_out": 1, "noise": 1.0},
                "network": {"depth": 10, "width": 5, "init": "gaussian"},
                "dynamics": {
                    "method": "train",
                    "optimizer": "sgd",
                    "learning_rate": eta,
                    "steps": steps,
                },
                "record": {"quantities": ["loss", "test_error", "sharpness"], "every": steps},
                "grid": {"scale": SCALES, "seed": list(range(seeds))},
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            run(cfg, tmp, progress=False, log=lambda m: None, devices=devices)
        total_steps += 10 * seeds * steps
    return total_steps, time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--x64", action="store_true")
    parser.add_argument(
        "--skip-sweep", action="store_true", help="skip part 3 (the full linear sweep)"
    )
    parser.add_argument(
        "--skip-throughput", action="store_true", help="skip part 1 (throughput against batch size)"
    )
    parser.add_argument("--out", default=None)
    opts = parser.parse_args(argv)
    dtype = "float64" if opts.x64 else "float32"
    backend = jax.default_backend()
    accel = backend != "cpu"
    lines = ["## Sweep throughput (`benchmarks/sweep_throughput.py`)", ""]
    lines += _bench.machine_info(
        f"- device: {jax.devices()[0].device_kind} x {len(jax.devices())}; {dtype}"
    )
    lines.append("")

    if opts.quick:
        batches, gd_steps, gf_steps, ds = [1, 16, 128], 200, 100, [64, 256]
    elif accel:
        batches, gd_steps, gf_steps, ds = [1, 64, 1024, 8192, 65536], 1000, 500, [256, 1024]
    else:
        batches, gd_steps, gf_steps, ds = [1, 16, 256, 1024], 1000, 500, [256, 1024]
    rows = [] if opts.skip_throughput else throughput(batches, gd_steps, gf_steps)
    lines += [
        "### 1. Throughput against batch size (run-steps per second)",
        "",
        f"Seed 004's net (widths {WIDTHS}), GD {gd_steps} steps, GF {gf_steps} Tsit5 steps.",
        "",
        "GF two ways: `vmap` of per-run solves, and one solve of the batch with the field vmapped over runs",
        "(what `dlnjax sweep` does for constant steps).",
        "",
        "| batch | GD run-steps/s | GF, vmap of solves | GF, one batched solve |",
        "|---:|---:|---:|---:|",
    ]
    lines += [f"| {b} | {g:.3g} | {f:.3g} | {fb:.3g} |" for b, g, f, fb in rows]
    lines.append("")

    rows = flop_rate(ds)
    lines += [
        "### 2. Gradient-flow right-hand side against dense matmul (depth 8, square layers)",
        "",
        "FLOPs/eval: the 3 (N - 1) d x d products of one reverse-mode gradient (XLA's cost analysis, which counts",
        "a loop body once, in brackets).",
        "",
        "| d | FLOPs/eval | time/eval | RHS GFLOP/s | matmul GFLOP/s | ratio |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for d, fl, xla, t, r, m, ratio in rows:
        lines.append(
            f"| {d} | {fl:.3g} ({xla:.3g}) | {t * 1e3:.3g} ms | {r / 1e9:.1f} | {m / 1e9:.1f} | {ratio:.0%} {'PASS' if ratio >= 0.4 else 'FAIL'} (target >= 40%) |"
        )
    lines.append("")

    if not opts.skip_sweep:
        lines += [
            "### 3. Seed 004's full linear sweep through `dlnjax.sweep.run` (compilation included)",
            "",
            "| device | run-steps | wall s | run-steps/s |",
            "|---|---:|---:|---:|",
        ]
        results = {}
        targets = [("default (" + jax.devices()[0].device_kind + ")", None)]
        if accel:
            targets.append(("host CPU", jax.devices("cpu")))
        for name, devs in targets:
            steps, wall = full_sweep(devs, opts.quick, dtype)
            results[name] = steps / wall
            lines.append(f"| {name} | {steps:.3g} | {wall:.1f} | {steps / wall:.3g} |")
            print(f"  full sweep on {name}: {wall:.1f} s", file=sys.stderr, flush=True)
        if accel:
            ratio = results[targets[0][0]] / results["host CPU"]
            lines += [
                "",
                f"- {'PASS' if ratio >= 100 else 'FAIL'}: accelerator / CPU throughput {ratio:.1f}x (target >= 100x)",
            ]
        else:
            lines += [
                "",
                "- no accelerator here: the GPU/CPU ratio awaits a GPU machine (this row is the CPU baseline)",
            ]
    _bench.publish(lines, opts.out)


if __name__ == "__main__":
    main()
