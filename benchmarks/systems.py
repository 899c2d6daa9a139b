"""Benchmark: linear systems (`dlnjax.systems`, docs/theory.md §10).

(1) *Balancing many systems.* ``B`` random stable systems (``n = 20``, ``m = p = 2``): Gramian balancing
    (`balanced_truncation` at full order) and norm balancing (`norm_balancing`) of the whole batch in one
    jitted ``vmap`` call, against a python-control loop over the same systems (``control.balred(sys, n)``:
    SLICOT AB09AD, Gramian balancing). Ratios of wall times, compile excluded (reported separately).
(2) *The orbit solve.* One evaluation of the regularizing field `OrbitL2` (``N(xi) = mu``) with the dense
    ``n^2 x n^2`` Cholesky (the default) against matrix-free ``lineax.CG``, against the explicit Kirwan-Ness field.
(3) *Convergence of the three balancing flows* on the same systems (``n = 6``): the fitted exponential rate of
    ``||mu(t)||`` of `OrbitL2` (exactly 2), `OrbitKirwanNess` and `HelmkeMoore` (the normal metric), over ``t <= T``.
(4) *Norm-balanced against Gramian-balanced truncation*: over ``K`` random stable systems (``n = 10``), the H2 and
    H-infinity errors of truncating to ``r`` states, their ratio (median, quartiles), and how often the
    norm-balanced truncation is unstable.

Usage: ``python benchmarks/systems.py [--quick]``. float64, one OpenBLAS thread.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import lineax as lx  # noqa: E402
import numpy as np  # noqa: E402
from _bench import machine_info  # noqa: E402

import dlnjax  # noqa: E402
from dlnjax import systems as S  # noqa: E402


def batch(key, count, n, m, p):
    return jax.vmap(lambda k: S.random_system(k, n, m, p))(jax.random.split(key, count))


def best_of(f, x, rounds=3):
    ts = []
    for _ in range(rounds):
        t = time.perf_counter()
        jax.block_until_ready(f(x))
        ts.append(time.perf_counter() - t)
    return min(ts)


def balancing_many(count, n, count_norm):
    import control

    sys = batch(jax.random.PRNGKey(0), count, n, 2, 2)
    few = jax.tree_util.tree_map(lambda a: a[:count_norm], sys)
    gram = jax.jit(jax.vmap(lambda s: S.balanced_truncation(s, n).system))
    norm = jax.jit(
        jax.vmap(lambda s: S.norm_balancing(s).steps)
    )  # n = 20: preconditioned CG solves
    t0 = time.perf_counter()
    jax.block_until_ready(gram(sys))
    c_gram = time.perf_counter() - t0
    t0 = time.perf_counter()
    steps = jax.block_until_ready(norm(few))
    c_norm = time.perf_counter() - t0
    t_gram, t_norm = best_of(gram, sys), best_of(norm, few, rounds=1)
    As, Bs, Cs = (np.asarray(a) for a in sys.arrays())
    D = np.zeros((2, 2))
    t0 = time.perf_counter()
    for i in range(count):
        control.balred(control.ss(As[i], Bs[i], Cs[i], D), n, method="truncate")
    t_loop = time.perf_counter() - t0
    per = lambda t, k: 1e3 * t / k
    print(f"\n## (1) Balancing random stable systems, n = {n}, m = p = 2")
    print("| method | systems | wall s | per system ms | speed-up over the python-control loop |")
    print("|---|---|---|---|---|")
    print(
        f"| python-control loop (balred, SLICOT AB09AD) | {count} | {t_loop:.3f} | {per(t_loop, count):.3f} | 1 |"
    )
    print(
        f"| dlnjax Gramian balancing, one vmapped call | {count} | {t_gram:.3f} | {per(t_gram, count):.3f} | "
        f"{t_loop / t_gram:.1f}x |"
    )
    print(
        f"| dlnjax norm balancing, one vmapped call | {count_norm} | {t_norm:.3f} | {per(t_norm, count_norm):.3f} | "
        f"{per(t_loop, count) / per(t_norm, count_norm):.2f}x (per system) |"
    )
    print(
        f"compile + first call: Gramian {c_gram:.1f} s, norm {c_norm:.1f} s; Newton steps of norm balancing: "
        f"max {int(steps.max())}, median {int(np.median(steps))}"
    )


def orbit_solve(ns):
    print("\n## (2) One evaluation of the orbit fields (ms, best of 5)")
    print(
        "| n | OrbitL2 dense Cholesky | OrbitL2 preconditioned CG | OrbitKirwanNess | CG / dense |"
    )
    print("|---|---|---|---|---|")
    for n in ns:
        s = S.random_system(jax.random.PRNGKey(n), n, 2, 2)
        fields = {
            "dense": jax.jit(lambda x: S.OrbitL2(lx.Cholesky())(0.0, x)),
            "cg": jax.jit(
                lambda x: S.OrbitL2(lx.CG(rtol=1e-12, atol=1e-14, max_steps=10 * n * n))(0.0, x)
            ),
            "kn": jax.jit(lambda x: S.OrbitKirwanNess()(0.0, x)),
        }
        t = {}
        for k, f in fields.items():
            jax.block_until_ready(f(s))
            t[k] = best_of(f, s, rounds=5) * 1e3
        print(
            f"| {n} | {t['dense']:.3f} | {t['cg']:.3f} | {t['kn']:.3f} | {t['cg'] / t['dense']:.2f} |"
        )


def flow_rates(count, T):
    sys = batch(jax.random.PRNGKey(1), count, 6, 2, 2)
    ts = jnp.linspace(0.0, T, 21)
    print(f"\n## (3) Decay of ||mu(t)|| on {count} random systems (n = 6), t in [0, {T}]")
    print("| flow | fitted rate: median | min | max | ||mu(T)|| / ||mu(0)||: median |")
    print("|---|---|---|---|---|")
    for name, flow in (
        ("OrbitL2 (induced metric)", S.OrbitL2()),
        ("OrbitKirwanNess", S.OrbitKirwanNess()),
        ("HelmkeMoore (normal metric)", S.HelmkeMoore()),
    ):
        run = jax.jit(jax.vmap(lambda s: dlnjax.simulate(flow, s, ts, rtol=1e-9, atol=1e-12)))
        tr = run(sys)
        mu = jax.vmap(jax.vmap(S.moment_map))(tr.ys)
        r = np.asarray(jnp.sqrt(jnp.sum(mu**2, axis=(-1, -2))))
        rel = r / r[:, :1]
        half = ts.shape[0] // 2  # the tail: rate of the second half
        rates = -np.polyfit(np.asarray(ts[half:]), np.log(rel[:, half:]).T, 1)[0]
        print(
            f"| {name} | {np.median(rates):.3f} | {rates.min():.3f} | {rates.max():.3f} | {np.median(rel[:, -1]):.2e} |"
        )


def truncation_errors(count, n, r):
    from dlnjax.experiments import linear_systems

    cfg = linear_systems.Config(n_systems=count, trunc_n=n, m=2, p=2)
    e = linear_systems.truncation_errors(cfg, jax.random.PRNGKey(2))["errors"][r - 1]
    h2g, hig, bound, h2b, hib, stable = e.T
    st = stable.astype(bool)
    q = lambda x: f"{np.median(x):.3g} [{np.percentile(x, 25):.3g}, {np.percentile(x, 75):.3g}]"
    print(
        f"\n## (4) Truncation to r = {r} of {count} random stable systems (n = {n}, m = p = 2): errors / ||H||_oo"
    )
    print("| truncation | H2 error median [quartiles] | Hoo error median [quartiles] |")
    print("|---|---|---|")
    print(f"| Gramian-balanced (all) | {q(h2g)} | {q(hig)} |")
    print(f"| norm-balanced (stable ones) | {q(h2b[st])} | {q(hib[st])} |")
    print(
        f"| ratio norm / Gramian (stable ones) | {q(h2b[st] / h2g[st])} | {q(hib[st] / hig[st])} |"
    )
    print(
        f"norm-balanced truncation unstable: {int((~st).sum())}/{count}; Gramian Hoo error within 2 sum sigma: "
        f"{int((hig <= bound * (1 + 1e-8)).sum())}/{count}"
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    print("# dlnjax.systems benchmark\n")
    print("\n".join(machine_info()))
    balancing_many(100 if a.quick else 1000, 20, 10 if a.quick else 50)
    orbit_solve((5, 10) if a.quick else (5, 10, 20))
    flow_rates(8 if a.quick else 32, 3.0)
    truncation_errors(20 if a.quick else 200, 10, 4)


if __name__ == "__main__":
    main()
