"""Time to balance: the L2 regularizing flow (1.17) against the Kirwan-Ness flow (1.22) (seed 001; docs/theory.md §10).

For X = diag of d values log-spaced from 1 to sigma_min (d = 4) and a start ``random_fiber_point(spread=0.5)``,
both flows are integrated (Tsit5, rtol 1e-10, atol 1e-12) until ``||G|| <= 1e-8 ||G_0||``. Printed per
(N, sigma_min): the flow time t* (measured from dense saves, log-linear interpolation) and its prediction
(``ln(1e8) / 2`` for FiberL2, Theorem 2; ``ln(1e8) / r_min`` for Kirwan-Ness, ``r_min = 8 sigma_min^(2/N)
(1 - cos(pi/N))`` the slowest linearized rate, `dlnjax.kirwan_ness_rates`), the accepted steps and the wall time of
a solve to t* (compiled beforehand), and the wall-time ratio Kirwan-Ness / FiberL2.

    .venv/bin/python benchmarks/orbit_rates.py [--depths 2 4 16 64] [--sigmas 1 1e-2 1e-4]
"""

from __future__ import annotations

import argparse
import math
import time

import equinox as eqx
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _bench import machine_info  # noqa: E402

import dlnjax  # noqa: E402
from dlnjax import flows  # noqa: E402

D = 4
REDUCTION = 1e-8


@eqx.filter_jit
def _solve(flow, net, ts, max_steps):
    return dlnjax.simulate(flow, net, ts, rtol=1e-10, atol=1e-12, max_steps=max_steps)


def _g_norms(ys):
    return jnp.sqrt(jnp.sum(jnp.abs(jax.vmap(dlnjax.moments)(ys)) ** 2, axis=(-3, -2, -1)))


def _crossing(ts, g):
    """First time g <= REDUCTION g[0], by log-linear interpolation (nan if never)."""
    target = REDUCTION * g[0]
    idx = np.nonzero(g <= target)[0]
    if len(idx) == 0:
        return float("nan")
    j = idx[0]
    t0, t1, a, b = ts[j - 1], ts[j], math.log(g[j - 1]), math.log(g[j])
    return float(t0 + (t1 - t0) * (math.log(target) - a) / (b - a))


def measure(flow, net, horizon, max_steps=16**5):
    """(t*, steps to t*, wall seconds of a compiled solve to t*)."""
    ts = jnp.concatenate([jnp.zeros(1), jnp.geomspace(1e-2, horizon, 400)])
    tr = _solve(flow, net, ts, max_steps)
    t_star = _crossing(np.asarray(ts), np.asarray(_g_norms(tr.ys)))
    if not math.isfinite(t_star):
        return t_star, int(tr.stats["num_accepted_steps"]), float("nan")
    run = jnp.array([0.0, t_star])
    jax.block_until_ready(_solve(flow, net, run, max_steps).ys)  # compile
    start = time.perf_counter()
    tr = jax.block_until_ready(_solve(flow, net, run, max_steps))
    return t_star, int(tr.stats["num_accepted_steps"]), time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 4, 16, 64])
    parser.add_argument("--sigmas", type=float, nargs="+", default=[1.0, 1e-2, 1e-4])
    args = parser.parse_args()
    print(
        "\n".join(machine_info(f"- d = {D}, reduction {REDUCTION:g}, Tsit5 rtol 1e-10 atol 1e-12"))
    )
    print()
    print(
        "| N | sigma_min | FiberL2 t* (pred 9.21) | steps | wall s | KN t* | KN pred | r_min | steps | wall s "
        "| wall KN/L2 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    log_red = math.log(1 / REDUCTION)
    for n in args.depths:
        for sig in args.sigmas:
            X = jnp.diag(jnp.geomspace(1.0, sig, D)) if sig != 1.0 else jnp.eye(D)
            net = dlnjax.random_fiber_point(jax.random.PRNGKey(0), X, n, spread=0.5)
            r_min = float(jnp.min(dlnjax.kirwan_ness_rates(jnp.array([sig]), n)))
            l2 = measure(flows.FiberL2(), net, 3 * log_red / 2)
            kn = measure(flows.KirwanNess(), net, 3 * log_red / r_min)
            print(
                f"| {n} | {sig:g} | {l2[0]:.2f} | {l2[1]} | {l2[2]:.3g} | {kn[0]:.4g} | {log_red / r_min:.4g} "
                f"| {r_min:.3g} | {kn[1]} | {kn[2]:.3g} | {kn[2] / l2[2]:.3g} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
