"""Benchmark: a depth x width grid of training runs, one compiled program per shape against one padded program.

The sweep: gradient descent (``optax.sgd``) through ``dlnjax.train`` on ``dlnjax.losses.Regression.random`` data
(n = 50, d_0 = 5, d_N = 1, noise 1), networks of widths ``(5, w, ..., w, 1)`` of depth ``N`` for every
``(N, w)`` of a grid, ``seeds x scales`` runs per grid point (``dlnjax.orthogonal`` initializations of the
given scale), the loss and the balancedness recorded every ``EVERY`` steps. Timed end to end, compilation
included (what a sweep costs from a fresh process), two ways in the same run:

- **per-shape**: one ``jax.jit(jax.vmap(train))`` per ``(N, w)``, each compiled separately (``|grid|`` programs);
- **padded**: every run embedded by ``dlnjax.pad`` into the largest shape ``(5, W_max, ..., W_max, 1)`` of depth
  ``N_max`` (frozen identity layers after layer 1, zero padding), and one ``jax.jit(jax.vmap(train(...,
  mask=live)))`` over all runs of the grid, the balancedness by ``padded_balancedness`` (a per-run ``live``).

Both start from the same initial networks (drawn before the clocks start) and must end at the same losses:
the report gives the largest relative difference of the final losses (round-off). Compile counts and
seconds are XLA backend compilations seen by ``jax.monitoring`` while each way ran (``pad`` runs inside the
padded program). Two grids: a compact one (depths {2, 4, 8} x widths {4, 8, 16}), where
one compilation replaces nine, and a spread one (depths {2, 8} x widths {4, 64}), where padding the small
networks to 64 x 64 x depth 8 makes every run pay for the largest shape. The same calls are then timed again,
compiled (steady state, the two ways taking turns), which separates the one-off compilation from the run time
that padding inflates, and gives the number of steps beyond which compiling per shape pays off.

float32 by default (JAX's default, as the other sweeps); ``--x64`` for float64.
Usage: ``python benchmarks/sweep_shapes.py [--quick] [--out FILE] [--x64]``.
"""

from __future__ import annotations

import argparse
import sys
import time

import _bench  # noqa: E402  (benchmarks/_bench.py, next to this script)

from dlnjax._cpu import configure_cpu  # noqa: E402

configure_cpu()  # one OpenBLAS thread, fast tiny fusions (dlnjax/_cpu.py), before JAX's backend starts

import jax  # noqa: E402

if "--x64" in sys.argv:
    jax.config.update("jax_enable_x64", True)

import jax.monitoring  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import dlnjax  # noqa: E402
from dlnjax._padding import pad, padded_balancedness  # noqa: E402
from dlnjax._train import train  # noqa: E402
from dlnjax.losses import Regression  # noqa: E402

N_SAMPLES, D0, DN, NOISE = 50, 5, 1, 1.0
LR = 0.02
SCALES = (0.7, 1.0)
GRIDS = {
    "compact": dict(depths=(2, 4, 8), widths=(4, 8, 16)),
    "spread": dict(depths=(2, 8), widths=(4, 64)),
}

# ----------------------------------------------------------------------------------------------
# Counting XLA compilations


class CompileCounter:
    """Counts XLA backend compilations (and their seconds) while active."""

    def __init__(self):
        self.count, self.seconds, self.active = 0, 0.0, False
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event, duration, **_):
        if self.active and event == "/jax/core/compile/backend_compile_duration":
            self.count += 1
            self.seconds += duration

    def __enter__(self):
        self.count, self.seconds, self.active = 0, 0.0, True
        return self

    def __exit__(self, *exc):
        self.active = False


# ----------------------------------------------------------------------------------------------


def initial_nets(depths, widths, seeds):
    """{(N, w): a batch of initial networks (leading axis: seeds x scales)}, built before any clock starts."""
    out = {}
    key = jax.random.PRNGKey(1)
    scales = np.tile(SCALES, seeds)
    for n in depths:
        for w in widths:
            key, sub = jax.random.split(key)
            shape = (D0,) + (w,) * (n - 1) + (DN,)
            nets = [
                dlnjax.orthogonal(k, shape, float(s))
                for k, s in zip(jax.random.split(sub, len(scales)), scales)
            ]
            out[(n, w)] = jax.block_until_ready(
                jax.tree_util.tree_map(lambda *a: jnp.stack(a), *nets)
            )
    return out


def per_shape(loss, nets, steps, every):
    """One jitted vmapped train per shape; returns (seconds, final losses per shape, a second call of it all)."""
    opt = optax.sgd(LR)
    t = time.perf_counter()
    finals, runs = {}, []
    for shape, batch in nets.items():
        run = jax.jit(
            jax.vmap(
                lambda n: train(loss, n, opt, steps, every=every, metrics=("loss", "balancedness"))
            )
        )
        res = jax.block_until_ready(run(batch))
        finals[shape] = np.asarray(res.history["loss"][:, -1])
        runs.append((run, batch))
    return time.perf_counter() - t, finals, lambda: [jax.block_until_ready(f(b)) for f, b in runs]


def padded(loss, nets, steps, every):
    """Everything padded to the largest shape, one jitted vmapped train; returns (seconds, final losses per shape)."""
    opt = optax.sgd(LR)
    big_depth = max(n for n, _ in nets)
    big_width = max(w for _, w in nets)
    cat = lambda *a: jnp.concatenate(a)

    def one(n, l):
        fns = {"balancedness": lambda m: padded_balancedness(m, l)}
        return train(loss, n, opt, steps, every=every, metrics=("loss",), metric_fns=fns, mask=l)

    @jax.jit
    def run(batches):  # padding inside the one program: no per-shape compilation at all
        pairs = [jax.vmap(lambda n: pad(n, big_depth, big_width))(b) for b in batches]
        nets_p = jax.tree_util.tree_map(cat, *[p for p, _ in pairs])
        live = jax.tree_util.tree_map(cat, *[l for _, l in pairs])
        return jax.vmap(one)(nets_p, live)

    t = time.perf_counter()
    res = jax.block_until_ready(run(list(nets.values())))
    seconds = time.perf_counter() - t
    again = lambda: jax.block_until_ready(run(list(nets.values())))
    losses = np.asarray(res.history["loss"][:, -1])
    finals, i = {}, 0
    for shape, batch in nets.items():
        b = batch.first.shape[0]
        finals[shape] = losses[i : i + b]
        i += b
    return seconds, finals, (big_depth, big_width), again


def bench_grid(name, loss, steps, every, seeds, counter):
    g = GRIDS[name]
    nets = initial_nets(g["depths"], g["widths"], seeds)
    runs = sum(b.first.shape[0] for b in nets.values())
    with counter:
        t_shape, f_shape, again_shape = per_shape(loss, nets, steps, every)
    c_shape = (counter.count, counter.seconds)
    with counter:
        t_pad, f_pad, big, again_pad = padded(loss, nets, steps, every)
    c_pad = (counter.count, counter.seconds)
    # steady state (compiled): the run time alone, the two ways taking turns under the same load
    _, best = _bench.interleaved(
        {"shape": (lambda _: again_shape(), None), "pad": (lambda _: again_pad(), None)}, budget=5.0
    )
    ref = np.concatenate(list(f_shape.values()))
    got = np.concatenate([f_pad[s] for s in f_shape])
    ok = np.isfinite(ref)
    rel = (
        float(np.max(np.abs(got[ok] - ref[ok]) / np.maximum(np.abs(ref[ok]), 1e-30)))
        if ok.any()
        else float("nan")
    )
    # run-steps weighted by layer size: the work of each way (padded: every run at the largest shape)
    work_shape = sum(b.first.shape[0] * (n * w * w) for (n, w), b in nets.items())
    work_pad = runs * big[0] * big[1] ** 2
    return dict(
        name=name,
        grid=g,
        runs=runs,
        shapes=len(nets),
        big=big,
        t_shape=t_shape,
        t_pad=t_pad,
        c_shape=c_shape,
        s_shape=best["shape"],
        s_pad=best["pad"],
        c_pad=c_pad,
        rel=rel,
        diverged=int(np.sum(~ok)),
        work=work_pad / work_shape,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 100 steps, 1 seed x 2 scales per grid point",
    )
    parser.add_argument("--out", metavar="FILE", help="also write the markdown report to FILE")
    parser.add_argument("--x64", action="store_true", help="float64 (default float32)")
    opts = parser.parse_args(argv)
    steps, every, seeds = (100, 10, 1) if opts.quick else (300, 10, 4)

    info = _bench.machine_info(f"- dtype: {jnp.zeros(()).dtype}")
    print("\n".join(info), flush=True)
    loss = Regression.random(jax.random.PRNGKey(0), N_SAMPLES, D0, DN, noise=NOISE)
    counter = CompileCounter()
    t0 = time.perf_counter()
    rows = []
    for name in GRIDS:
        r = bench_grid(name, loss, steps, every, seeds, counter)
        rows.append(r)
        print(
            f"  {name}: per-shape {r['t_shape']:.1f} s, padded {r['t_pad']:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    elapsed = time.perf_counter() - t0

    report = [
        "## Machine",
        *info,
        f"- benchmark wall time: {elapsed:.0f} s" + (" (--quick)" if opts.quick else ""),
        "",
        f"## Depth x width sweep: sgd({LR}), {steps} steps, loss and balancedness every {every}, "
        f"{seeds} seed(s) x {len(SCALES)} scales per point, end to end with compilation",
        "",
        "| grid (depths x widths) | runs | padded shape (N, W) | per-shape (s) | padded (s) | **per-shape / padded** "
        "| compiles per-shape (s) | compiles padded (s) | steady per-shape (s) | steady padded (s) | steady ratio "
        "| break-even steps | padded work / per-shape work | max rel. diff. final loss |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        g = r["grid"]
        report.append(
            f"| {name_of(g)} | {r['runs']} | ({r['big'][0]}, {r['big'][1]}) | {r['t_shape']:.2f} | {r['t_pad']:.2f} "
            f"| **{r['t_shape'] / r['t_pad']:.2f}** | {r['c_shape'][0]} ({r['c_shape'][1]:.2f}) "
            f"| {r['c_pad'][0]} ({r['c_pad'][1]:.2f}) | {r['s_shape']:.3f} | {r['s_pad']:.3f} | {r['s_shape'] / r['s_pad']:.2f} "
            f"| {break_even(r, steps)} | {r['work']:.1f} | {r['rel']:.1e} |"
        )
    report += [
        "",
        "- per-shape: one `jax.jit(jax.vmap(train))` per grid point; padded: `dlnjax.pad` to the largest shape, one "
        "`jax.jit(jax.vmap(train(..., mask=live)))` for the whole grid (balancedness via `padded_balancedness`).",
        "- compiles: XLA backend compilations counted by `jax.monitoring` (and their seconds) while each way ran.",
        "- steady: the same calls again, compiled (minimum over interleaved rounds, `_bench.interleaved`): the run "
        "time alone, which padding inflates and which dominates once a sweep runs long enough.",
        "- break-even steps: with end-to-end time = fixed part (end to end minus steady) + steps x (steady / steps) for "
        "each way, the number of steps beyond which per-shape is faster end to end.",
        "- work: sum over runs of N w^2 (the cost of a step), padded over per-shape: what padding adds to the run time.",
        f"- diverged runs (per-shape, excluded from the loss comparison): {', '.join(str(r['diverged']) for r in rows)}.",
        "",
    ]
    _bench.publish(report, opts.out)


def break_even(r, steps) -> str:
    fixed_shape, fixed_pad = r["t_shape"] - r["s_shape"], r["t_pad"] - r["s_pad"]
    per_step = (r["s_pad"] - r["s_shape"]) / steps
    if per_step <= 0:
        return "never" if fixed_pad <= fixed_shape else "always"
    return f"{max(0.0, (fixed_shape - fixed_pad) / per_step):.0f}"


def name_of(g) -> str:
    return "{" + ", ".join(map(str, g["depths"])) + "} x {" + ", ".join(map(str, g["widths"])) + "}"


if __name__ == "__main__":
    main()
