"""Benchmark: seed 004's linear sweep, the paper-script way (one run at a time) against `dlnjax.train` under vmap.

The experiment (Marion & Chizat, seed 004, §5; docs/theory.md §7; their published ``run_experiment.py linear``):
univariate regression ``R = (1/n) sum_i (y_i - W_N ... W_1 x_i)^2`` on ``dlnjax.losses.Regression.random``
data (n = 50, d = 5, noise 1), a deep linear network of depth N = 10 with widths (5, ..., 5, 1), Gaussian
initialization with i.i.d. entries ``N(0, s^2)`` (the published ``init_mlp`` multiplies standard normals by
the scale ``s``; no ``1/sqrt(d)``), ``s`` in ``linspace(0.25, 0.6, 10)``, gradient descent with step
``eta in {0.005, 0.02, 0.07, 0.1, 0.2}`` for ``{40000, 10000, 4000, 4000, 2000}`` steps and
``{20, 20, 20, 20, 80}`` seeds per scale (1600 runs, 13.2 million gradient steps), and the sharpness
(largest Hessian eigenvalue) measured every 5 steps.

1. **Slice** (``eta = 0.2``, 2000 steps, 2 seeds x 10 scales = 20 runs; ``--quick``: 4 runs x 500 steps):

   - *loop*: what a typical paper script does (modelled on the published one, rewritten): the weights as a
     list of arrays, the loss by a per-sample ``vmap`` of the network, a jitted ``value_and_grad`` step
     called from a Python loop, and every 5 steps a jitted power iteration of 20 Hessian-vector products
     (``jvp`` of ``grad`` on the flattened weights). One run after the other.
   - *dlnjax*: one jitted ``jax.vmap`` over (scale, key) of ``dlnjax.train(loss, dlnjax.gaussian(key, widths,
     s), optax.sgd(eta), steps, every=5, metric_fns={"sharpness": ...})`` with ``dlnjax.sharpness(loss, net,
     iterations=LANCZOS)`` recorded every 5 steps. ``LANCZOS = 8`` Lanczos steps (8 Hessian-vector products)
     where the loop does 20 power iterations: Lanczos converges faster, and the script *measures* that the
     8-step estimate is at least as accurate as the loop's 20-step one (relative error against the top
     eigenvalue of the dense Hessian, on the same networks: the slice's runs after 50 steps and at the end;
     median and worst case over runs). ``--lanczos 20`` gives the same 20 HVPs on both sides.

   Both are timed in the same rounds (loop runs and batched calls alternate), steady state (compiled) and
   first call (compile included). The ratio is loop time for all runs / dlnjax time.
2. **Full sweep** through dlnjax: all 1600 runs, one vmapped ``train`` per step size, sharpness at
   initialization and at the end (what the published figures plot: ``init_sharpness`` and
   ``final_sharpness``), loss and test error every 100 steps; timed end to end (compilation included).
   ``--sweep-sharpness-every K`` also records the sharpness every K steps along training.
3. **PyTorch** (if ``import torch`` works): matrix completion, n = 100, depth 3, eager ``torch`` loop against
   ``dlnjax.train``; per iteration for one run and aggregate for a batch of 64 runs.

float32 by default, as the published script (JAX's default); ``--x64`` for float64.
Usage: ``python benchmarks/sweep_vs_loop.py [--quick] [--out FILE] [--x64]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import _bench  # noqa: E402  (benchmarks/_bench.py, next to this script)

from dlnjax._cpu import configure_cpu  # noqa: E402

configure_cpu()  # one OpenBLAS thread, fast tiny fusions (dlnjax/_cpu.py), before JAX's backend starts

import jax  # noqa: E402

if "--x64" in sys.argv:
    jax.config.update("jax_enable_x64", True)

import jax.flatten_util  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import dlnjax  # noqa: E402
from dlnjax._train import train  # noqa: E402
from dlnjax.losses import MatrixCompletion, Regression  # noqa: E402

try:
    from dlnjax._diagnostics import sharpness as _sharpness

    SHARPNESS = "dlnjax._diagnostics.sharpness (Lanczos with full reorthogonalization; steps: see the slice)"
except ImportError:  # pragma: no cover
    _sharpness = None
    SHARPNESS = "power iteration (20 HVPs) written here"

N_SAMPLES, D, DEPTH, NOISE = 50, 5, 10, 1.0
WIDTHS = (D,) * DEPTH + (1,)
SCALES = np.linspace(0.25, 0.6, 10)
PUBLISHED = [
    (0.005, 40_000, 20),
    (0.02, 10_000, 20),
    (0.07, 4_000, 20),
    (0.1, 4_000, 20),
    (0.2, 2_000, 80),
]
HVPS, SHARP_EVERY = 20, 5
LANCZOS = 8  # Lanczos steps of dlnjax's sharpness in the slice (--lanczos); accuracy against the loop's is measured
TARGETS = dict(slice=30.0, sweep=180.0, torch_one=5.0, torch_batch=50.0)


def machine_info() -> list[str]:
    return _bench.machine_info(
        f"- dtype: {jnp.zeros(()).dtype}",
        f"- sharpness on the dlnjax side: {SHARPNESS}",
    )


# ----------------------------------------------------------------------------------------------
# The paper-script way: one network at a time, a jitted step from a Python loop


def loop_init(key, scale):
    keys = jax.random.split(key, DEPTH)
    return [scale * jax.random.normal(keys[k], (D, D)) for k in range(DEPTH - 1)] + [
        scale * jax.random.normal(keys[-1], (1, D))
    ]


def loop_net(params, x):
    h = x
    for w in params:
        h = jnp.dot(w, h)
    return h


def loop_loss(params, x, y):
    out = jax.vmap(loop_net, in_axes=(None, 0))(params, x)
    return jnp.mean((out.ravel() - y.ravel()) ** 2)


@jax.jit
def loop_step(params, x, y, eta):
    value, grads = jax.value_and_grad(loop_loss)(params, x, y)
    return [p - eta * g for p, g in zip(params, grads)], value


@jax.jit
def loop_sharpness(params, x, y, key):
    """Power iteration: 20 Hessian-vector products on the flattened weights (|lambda|_max of the Hessian)."""
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    grad = jax.grad(lambda p: loop_loss(p, x, y))
    v = jax.random.normal(key, flat.shape, flat.dtype)
    v = v / jnp.linalg.norm(v)
    lam = jnp.zeros((), flat.dtype)
    for _ in range(HVPS):
        hv = jax.flatten_util.ravel_pytree(jax.jvp(grad, (params,), (unravel(v),))[1])[0]
        lam = jnp.linalg.norm(hv)
        v = hv / lam
    return lam


def loop_run(loss, key, scale, eta, steps):
    x, y = loss.inputs, loss.targets
    params = loop_init(key, scale)
    sharp = []
    for step in range(steps):
        params, value = loop_step(params, x, y, eta)
        if step % SHARP_EVERY == 0:
            sharp.append(loop_sharpness(params, x, y, jax.random.fold_in(key, step)))
    jax.block_until_ready(params)
    return params, float(value), np.asarray(sharp)


# ----------------------------------------------------------------------------------------------
# The dlnjax way: one vmapped train over all runs


def sharpness_metric(loss, iterations=HVPS):
    if _sharpness is not None:
        return lambda net: _sharpness(loss, net, iterations=iterations)

    def power(net):  # pragma: no cover - only without dlnjax._diagnostics
        arrays = net.arrays()
        grad = jax.grad(lambda a: dlnjax.network_loss(loss, net.replace_arrays(*a)))
        flat, unravel = jax.flatten_util.ravel_pytree(arrays)
        v = jnp.ones_like(flat) / jnp.sqrt(flat.size)

        def body(_, vl):
            hv = jax.flatten_util.ravel_pytree(jax.jvp(grad, (arrays,), (unravel(vl[0]),))[1])[0]
            lam = jnp.linalg.norm(hv)
            return hv / lam, lam

        return jax.lax.fori_loop(0, HVPS, body, (v, jnp.zeros((), flat.dtype)))[1]

    return power


def batched_runner(
    loss, eta, steps, every, *, sharp_every=None, metrics=("loss",), iterations=HVPS
):
    opt = optax.sgd(eta)
    fns = {"sharpness": sharpness_metric(loss, iterations)}

    @jax.jit
    def run(keys, scales):
        def one(key, s):
            net0 = dlnjax.gaussian(key, WIDTHS, s)
            res = train(loss, net0, opt, steps, every=every, metrics=metrics)
            if sharp_every is None:  # sharpness at the start and the end only
                sharp = jnp.stack([fns["sharpness"](net0), fns["sharpness"](res.net)])
                return res, sharp
            return res, None

        return jax.vmap(one)(keys, scales)

    @jax.jit
    def run_sharp(keys, scales):
        def one(key, s):
            net0 = dlnjax.gaussian(key, WIDTHS, s)
            return train(
                loss, net0, opt, steps, every=sharp_every, metrics=metrics, metric_fns=fns
            ), None

        return jax.vmap(one)(keys, scales)

    return run if sharp_every is None else run_sharp


def grid(n_seeds, key):
    keys = jax.random.split(key, n_seeds * len(SCALES))
    scales = jnp.asarray(np.tile(SCALES, n_seeds), jnp.zeros(()).dtype)
    return keys, scales


def timed(f, *args):
    t = time.perf_counter()
    out = jax.block_until_ready(f(*args))
    return time.perf_counter() - t, out


def sharpness_accuracy(loss, keys, scales, eta, lanczos, at=(50, None)):
    """Relative errors of the loop's power iteration and of ``dlnjax.sharpness(iterations=lanczos)`` against the
    top eigenvalue of the dense Hessian (``jax.hessian`` on the flattened weights), on the same networks: the runs
    after each number of steps in ``at`` (None: the slice's length). Converged runs only (a diverged run has no
    meaningful Hessian)."""
    nets0 = jax.vmap(lambda k, s: dlnjax.gaussian(k, WIDTHS, s))(keys, scales)
    out = {}
    for steps in at:
        res = jax.jit(jax.vmap(lambda n: train(loss, n, optax.sgd(eta), steps)))(nets0)
        ok = ~np.asarray(res.diverged)

        def dense(n):
            flat, unravel = jax.flatten_util.ravel_pytree(n.arrays())
            H = jax.hessian(lambda f: dlnjax.network_loss(loss, n.replace_arrays(*unravel(f))))(
                flat
            )
            return jnp.linalg.eigvalsh(H)[-1]

        exact = np.asarray(jax.jit(jax.vmap(dense))(res.net), np.float64)
        ours = np.asarray(
            jax.jit(jax.vmap(lambda n: _sharpness(loss, n, iterations=lanczos)))(res.net),
            np.float64,
        )
        power = np.array(
            [
                float(
                    loop_sharpness(
                        list(jax.tree_util.tree_map(lambda a: a[i], res.net).layers),
                        loss.inputs,
                        loss.targets,
                        jax.random.fold_in(keys[i], steps),
                    )
                )
                for i in range(len(scales))
            ]
        )
        err = lambda est: np.abs(est - exact)[ok] / np.abs(exact)[ok]
        out[steps] = dict(runs=int(ok.sum()), loop=err(power), dlnjax=err(ours))
    return out


def bench_slice(loss, quick, rounds, lanczos=LANCZOS):
    eta, steps = 0.2, (500 if quick else 2000)
    seeds = 1 if quick else 2
    keys, scales = grid(seeds, jax.random.PRNGKey(1))
    if quick:
        keys, scales = keys[::3][:4], scales[::3][:4]
    runs = len(scales)
    run = batched_runner(loss, eta, steps, SHARP_EVERY, sharp_every=SHARP_EVERY, iterations=lanczos)
    first_batched, (res, _) = timed(run, keys, scales)
    # first loop run: compiles loop_step and loop_sharpness
    t0 = time.perf_counter()
    loop_run(loss, keys[0], float(scales[0]), eta, steps)
    first_loop_run = time.perf_counter() - t0
    batched_times, loop_totals = [], []
    loop_sharp = None
    for _r in range(rounds):
        batched_times.append(timed(run, keys, scales)[0])
        per_run, sharp = [], []
        for i in range(runs):
            t = time.perf_counter()
            _, _, s = loop_run(loss, keys[i], float(scales[i]), eta, steps)
            per_run.append(time.perf_counter() - t)
            sharp.append(s)
        loop_totals.append(sum(per_run))
        loop_sharp = np.stack(sharp)
    tb, tl = float(np.median(batched_times)), float(np.median(loop_totals))
    # the loop's first call of everything (compile) + the remaining runs, against the batched first call
    first_loop_total = first_loop_run + tl * (runs - 1) / runs
    ours = np.asarray(res.history["sharpness"])[:, 1:]  # recorded after steps 5, 10, ...
    return dict(
        runs=runs,
        steps=steps,
        loop=tl,
        batched=tb,
        loop_rounds=loop_totals,
        batched_rounds=batched_times,
        first_loop=first_loop_total,
        first_batched=first_batched,
        diverged=int(np.sum(np.asarray(res.diverged))),
        sharp_dlnjax=float(np.nanmedian(ours[:, -1])),
        sharp_loop=float(np.nanmedian(loop_sharp[:, -1])),
        lanczos=lanczos,
        accuracy=sharpness_accuracy(loss, keys, scales, eta, lanczos, at=(50, steps)),
    )


def bench_sweep(loss, quick, sharp_every):
    out, total = [], 0.0
    key = jax.random.PRNGKey(2)
    for eta, steps, seeds in PUBLISHED:
        key, sub = jax.random.split(key)
        if quick:
            steps, seeds = steps // 20, max(1, seeds // 20)
        keys, scales = grid(seeds, sub)
        every = sharp_every if sharp_every else 100 if steps % 100 == 0 else steps
        run = batched_runner(
            loss, eta, steps, every, sharp_every=sharp_every or None, metrics=("loss", "test_error")
        )
        t, (res, sharp) = timed(run, keys, scales)
        total += t
        final_sharp = np.asarray(
            sharp[:, -1] if sharp is not None else res.history["sharpness"][:, -1]
        )
        div = np.asarray(res.diverged)
        out.append(
            dict(
                eta=eta,
                steps=steps,
                runs=len(scales),
                time=t,
                diverged=float(np.mean(div)),
                sharp=float(np.median(final_sharp[~div])) if (~div).any() else float("nan"),
            )
        )
        print(
            f"  sweep eta = {eta}: {len(scales)} runs x {steps} steps in {t:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    return out, total


# ----------------------------------------------------------------------------------------------
# PyTorch eager loop (matrix completion)


def bench_torch(quick, rounds):
    try:
        import torch
    except Exception as err:  # noqa: BLE001
        return (
            None,
            f"`import torch` failed ({type(err).__name__}: {err}); PyTorch comparison skipped",
        )
    n, depth, rank, frac, lr = 100, 3, 3, 0.3, 0.5
    steps = 100 if quick else 300
    batch = 64
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, n)) / np.sqrt(rank)
    obs = rng.random((n, n)) < frac
    rows, cols = np.nonzero(obs)
    dtype = jnp.zeros(()).dtype
    loss = MatrixCompletion(
        rows, cols, truth[rows, cols].astype(dtype), (n, n), truth=truth.astype(dtype)
    )
    tdtype = torch.float64 if dtype == jnp.float64 else torch.float32
    r_t, c_t, v_t = (
        torch.as_tensor(rows),
        torch.as_tensor(cols),
        torch.as_tensor(truth[rows, cols], dtype=tdtype),
    )

    def torch_run(seed):
        g = torch.Generator().manual_seed(seed)
        ws = [
            (
                0.5 * torch.randn(n, n, generator=g, dtype=tdtype) / np.sqrt(n) ** 0.5
            ).requires_grad_()
            for _ in range(depth)
        ]
        opt = torch.optim.SGD(ws, lr=lr)
        for _ in range(steps):
            x = ws[0]
            for w in ws[1:]:
                x = w @ x
            value = torch.mean((x[r_t, c_t] - v_t) ** 2)
            opt.zero_grad()
            value.backward()
            opt.step()
        return float(value)

    opt = optax.sgd(lr)
    key = jax.random.PRNGKey(3)
    init = lambda k: dlnjax.gaussian(k, (n,) * (depth + 1), 0.5 / np.sqrt(n) ** 0.5)
    one = jax.jit(lambda k: train(loss, init(k), opt, steps, every=steps).history["loss"])
    many = jax.jit(
        jax.vmap(lambda k: train(loss, init(k), opt, steps, every=steps).history["loss"])
    )
    keys = jax.random.split(key, batch)
    timed(one, key), timed(many, keys)  # compile
    # PyTorch gets its best thread count: on a small shared CPU its intra-op pool can be ~100x slower than
    # one thread (measured here: ~55 ms against ~0.35 ms per iteration), which would flatter dlnjax.
    threads = sorted({1, len(os.sched_getaffinity(0))})
    per_threads = {}
    for nt in threads:
        torch.set_num_threads(nt)
        torch_run(0)
        t = time.perf_counter()
        torch_run(1)
        per_threads[nt] = time.perf_counter() - t
    best = min(per_threads, key=per_threads.get)
    torch.set_num_threads(best)
    t1, tb, tt = [], [], []
    for _ in range(rounds):
        t1.append(timed(one, key)[0])
        tb.append(timed(many, keys)[0])
        t = time.perf_counter()
        torch_run(1)
        tt.append(time.perf_counter() - t)
    t1, tb, tt = map(lambda v: float(np.median(v)), (t1, tb, tt))
    return dict(
        steps=steps,
        batch=batch,
        torch_iter=tt / steps,
        one_iter=t1 / steps,
        batch_iter=tb / steps / batch,
        torch_version=torch.__version__,
        torch_threads=best,
        torch_by_threads={k: v / steps for k, v in per_threads.items()},
    ), None


# ----------------------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: slice of 4 runs x 500 steps, sweep with 1/20 of the steps and seeds",
    )
    parser.add_argument("--out", metavar="FILE", help="also write the markdown report to FILE")
    parser.add_argument(
        "--x64", action="store_true", help="float64 (default float32, as the published script)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of the side-by-side timings (medians reported)",
    )
    parser.add_argument(
        "--sweep-sharpness-every",
        type=int,
        default=0,
        metavar="K",
        help="record the sharpness every K steps in the full sweep",
    )
    parser.add_argument(
        "--lanczos",
        type=int,
        default=LANCZOS,
        help=f"Lanczos steps of dlnjax's sharpness in the slice (default {LANCZOS})",
    )
    parser.add_argument(
        "--skip", default="", help="comma-separated parts to skip: slice, sweep, torch"
    )
    opts = parser.parse_args(argv)
    skip = set(filter(None, opts.skip.split(",")))

    info = machine_info()
    print("\n".join(info), flush=True)
    loss = Regression.random(jax.random.PRNGKey(0), N_SAMPLES, D, noise=NOISE)
    t_start = time.perf_counter()
    report = ["## Machine", *info, ""]
    verdicts = []
    tag = lambda ok: "PASS" if ok else "FAIL"

    if "slice" not in skip:
        s = bench_slice(loss, opts.quick, opts.rounds, opts.lanczos)
        ratio, ratio_first = s["loop"] / s["batched"], s["first_loop"] / s["first_batched"]
        acc = s["accuracy"]
        as_accurate = all(
            np.median(a["dlnjax"]) <= max(np.median(a["loop"]), 1e-6)
            and np.max(a["dlnjax"]) <= max(np.max(a["loop"]), 1e-6)
            for a in acc.values()
        )
        report += [
            f"## Slice: eta = 0.2, {s['runs']} runs x {s['steps']} steps, sharpness every {SHARP_EVERY} steps: "
            f"loop {HVPS} power iterations, dlnjax {s['lanczos']} Lanczos steps",
            "",
            "| | paper-style loop (s) | dlnjax vmapped train (s) | **loop / dlnjax** |",
            "|---|---|---|---|",
            f"| steady state (median of {opts.rounds} rounds) | {s['loop']:.2f} | {s['batched']:.3f} | **{ratio:.1f}** |",
            f"| first call (compile included) | {s['first_loop']:.2f} | {s['first_batched']:.2f} | **{ratio_first:.1f}** |",
            "",
            f"- rounds, loop (s): {', '.join(f'{t:.2f}' for t in s['loop_rounds'])}; dlnjax (s): {', '.join(f'{t:.3f}' for t in s['batched_rounds'])}",
            f"- per run-step: loop {1e6 * s['loop'] / (s['runs'] * s['steps']):.1f} us, dlnjax {1e6 * s['batched'] / (s['runs'] * s['steps']):.2f} us",
            f"- final sharpness, median over runs: loop (power iteration) {s['sharp_loop']:.3g}, dlnjax {s['sharp_dlnjax']:.3g}; "
            f"diverged runs (dlnjax): {s['diverged']}",
            "",
            "Sharpness accuracy, relative error against the dense Hessian's top eigenvalue, same networks (converged runs):",
            "",
            f"| networks | runs | loop: {HVPS} power iterations, median / max | dlnjax: {s['lanczos']} Lanczos steps, median / max |",
            "|---|---|---|---|",
            *[
                f"| after {k} steps | {a['runs']} | {np.median(a['loop']):.1e} / {np.max(a['loop']):.1e} | "
                f"{np.median(a['dlnjax']):.1e} / {np.max(a['dlnjax']):.1e} |"
                for k, a in acc.items()
            ],
            "",
        ]
        verdicts.append(
            f"- {tag(ratio >= TARGETS['slice'])}: slice, steady state: loop / dlnjax = {ratio:.1f} (target >= {TARGETS['slice']:g})"
        )
        verdicts.append(
            f"- {tag(as_accurate)}: dlnjax's {s['lanczos']}-step Lanczos sharpness at least as accurate as the loop's {HVPS} power "
            "iterations (median and max, or both below 1e-6)"
        )
        print("\n".join(report[-18:]), flush=True)

    if "sweep" not in skip:
        rows, total = bench_sweep(loss, opts.quick, opts.sweep_sharpness_every)
        what = (
            f"every {opts.sweep_sharpness_every} steps"
            if opts.sweep_sharpness_every
            else "at initialization and at the end"
        )
        report += [
            f"## Full published linear sweep through dlnjax (sharpness {what}; compile included)",
            "",
            "| eta | steps | runs | time (s) | diverged | median final sharpness (converged runs) | 2 / eta |",
            "|---|---|---|---|---|---|---|",
            *[
                f"| {r['eta']} | {r['steps']} | {r['runs']} | {r['time']:.1f} | {100 * r['diverged']:.0f}% | {r['sharp']:.3g} | {2 / r['eta']:.3g} |"
                for r in rows
            ],
            f"| **total** | | {sum(r['runs'] for r in rows)} | **{total:.1f}** | | | |",
            "",
        ]
        verdicts.append(
            f"- {tag(total <= TARGETS['sweep'])}: full linear sweep in {total:.0f} s (target <= {TARGETS['sweep']:g} s)"
            + (" (--quick)" if opts.quick else "")
        )

    if "torch" not in skip:
        t, why = bench_torch(opts.quick, opts.rounds)
        if t is None:
            report += ["## PyTorch eager loop (matrix completion)", "", f"- {why}", ""]
            verdicts.append(f"- (skipped) PyTorch: {why}")
        else:
            r1, rb = t["torch_iter"] / t["one_iter"], t["torch_iter"] / t["batch_iter"]
            report += [
                f"## PyTorch {t['torch_version']} eager SGD loop against dlnjax.train: matrix completion n = 100, depth 3, {t['steps']} steps",
                "",
                "| | time per iteration (us) | **torch / dlnjax** |",
                "|---|---|---|",
                f"| torch eager, one run ({t['torch_threads']} thread(s), the faster of "
                + ", ".join(f"{k}: {1e6 * v:.0f} us" for k, v in t["torch_by_threads"].items())
                + f") | {1e6 * t['torch_iter']:.0f} | |",
                f"| dlnjax.train, one run | {1e6 * t['one_iter']:.0f} | **{r1:.1f}** |",
                f"| dlnjax.train, vmap over {t['batch']} runs (per run) | {1e6 * t['batch_iter']:.1f} | **{rb:.1f}** |",
                "",
            ]
            verdicts.append(
                f"- {tag(r1 >= TARGETS['torch_one'])}: torch / dlnjax per iteration, one run = {r1:.1f} (target >= {TARGETS['torch_one']:g})"
            )
            verdicts.append(
                f"- {tag(rb >= TARGETS['torch_batch'])}: torch / dlnjax aggregate, {t['batch']} runs = {rb:.1f} (target >= {TARGETS['torch_batch']:g})"
            )

    elapsed = time.perf_counter() - t_start
    report[len(info) + 1 : len(info) + 1] = [
        f"- benchmark wall time: {elapsed:.0f} s" + (" (--quick)" if opts.quick else "")
    ]
    report += ["## Targets", *verdicts, ""]
    _bench.publish(report, opts.out)


if __name__ == "__main__":
    main()
