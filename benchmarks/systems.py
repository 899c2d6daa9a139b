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

import _bench  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import lineax as lx  # noqa: E402
import numpy as np  # noqa: E402
from _bench import interleaved, machine_info  # noqa: E402

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


def _before_factors(s):
    """The Gramian factors as computed before (commit 0ec1d4e), for a side-by-side ratio: two separate sign
    iterations (one on ``A``, one on ``A^*``), each step ``jnp.linalg.inv`` plus ``slogdet`` (two LUs) and a QR
    compression of both factors every step (also the first, narrow ones)."""
    A, B, C = s.arrays()
    n = A.shape[-1]
    eye = jnp.eye(n, dtype=A.dtype)

    def compress(Z):
        if Z.shape[1] < n:
            Z = jnp.concatenate([Z, jnp.zeros((n, n - Z.shape[1]), Z.dtype)], axis=1)
        return jnp.conj(jnp.linalg.qr(jnp.conj(Z.T), mode="r").T)

    def one(A, Z):
        def cond(st):
            return (st[2] < 50) & (
                jnp.max(jnp.sum(jnp.abs(st[0] + eye), axis=0)) > 10 * n * 2.2e-16
            )

        def body(st):
            Ak, Z, k = st
            inv = jnp.linalg.inv(Ak)
            c = jnp.exp(-jnp.real(jnp.linalg.slogdet(Ak)[1]) / n)
            r = jnp.sqrt(c)
            Z = compress(
                jnp.concatenate([r * Z, jnp.matmul(inv, Z, precision="highest") / r], 1)
                / jnp.sqrt(2.0)
            )
            return (c * Ak + inv / c) / 2, Z, k + 1

        return jax.lax.while_loop(cond, body, (A, compress(Z), 0))[1] / jnp.sqrt(2.0)

    return one(A, B), one(jnp.conj(A.T), jnp.conj(C.T))


def sign_steps(s):
    """The number of steps of the sign iteration on ``A`` (the stopping rule of `dlnjax.systems.lyapunov`)."""
    n = s.n
    eye = jnp.eye(n, dtype=s.A.dtype)
    tol = 10 * n * jnp.finfo(s.A.dtype).eps

    def cond(st):
        dev = jnp.abs(st[0] + eye)
        err = jnp.maximum(jnp.max(jnp.sum(dev, axis=0)), jnp.max(jnp.sum(dev, axis=1)))
        return (st[1] < 50) & (err > tol)

    def body(st):
        lu, piv = jax.scipy.linalg.lu_factor(st[0])
        c = jnp.exp(-jnp.mean(jnp.log(jnp.abs(jnp.diagonal(lu)))))
        return (c * st[0] + jax.scipy.linalg.lu_solve((lu, piv), eye) / c) / 2, st[1] + 1

    return jax.lax.while_loop(cond, body, (s.A, 0))[1]


def flops_per_system(n: int, steps: float, early: int) -> float:
    """Real FLOPs of `balanced_truncation(sys, n)` per system (``m, p << n`` terms dropped; the narrow products of the
    ``early`` uncompressed steps counted as full ones).

    Per sign step: LU ``2/3 n^3``, ``A_k^-1`` from it (two triangular solves with ``n`` right-hand sides) ``2 n^3``,
    ``A_k^-1 Z_P`` and ``A_k^-* Z_Q`` ``4 n^3``; per step after the ``early`` ones, two Householder QRs (R only) of
    ``2n x n``, ``2 (4 - 2/3) n^3``. Then ``L_Q^* L_P`` ``2 n^3``, its SVD with both factors ``~21 n^3``
    (Golub-Van Loan), the two projections ``4 n^3`` and ``T_l A T_r`` ``4 n^3``: ``31 n^3``.
    """
    return (20 / 3 * steps + 20 / 3 * (steps - early) + 31) * n**3


def warm(calls):
    """Compile and run each ``f(x)`` of ``calls`` once (`interleaved` times its first call too)."""
    for f, x in calls.values():
        jax.block_until_ready(f(x))
    return calls


def primitives(A):
    """Per-system seconds of the batched primitives on the batch ``A`` (best of the interleaved rounds)."""
    n = A.shape[-1]
    eye = jnp.eye(n, dtype=A.dtype)
    Z = jnp.concatenate([A, A], axis=-1)
    calls = {
        "GEMM 20x20x20": (jax.jit(lambda a: jnp.matmul(a, a, precision="highest")), A),
        "LU + inverse (lu_factor, lu_solve)": (
            jax.jit(
                lambda a: jax.scipy.linalg.lu_solve(
                    jax.scipy.linalg.lu_factor(a), jnp.broadcast_to(eye, a.shape)
                )
            ),
            A,
        ),
        "jnp.linalg.inv + slogdet (before)": (
            jax.jit(lambda a: (jnp.linalg.inv(a), jnp.linalg.slogdet(a)[1])),
            A,
        ),
        "QR, R only, 40x20": (
            jax.jit(lambda z: jnp.linalg.qr(jnp.swapaxes(z, -1, -2), mode="r")),
            Z,
        ),
        "SVD 20x20 with U, V": (jax.jit(lambda a: jnp.linalg.svd(a)), A),
        "eigh 20x20": (jax.jit(lambda a: jnp.linalg.eigh(a + jnp.swapaxes(a, -1, -2))), A),
    }
    _, t = interleaved(warm(calls), budget=10.0)
    return {k: v / A.shape[0] for k, v in t.items()}


def _control_loop(sys, count, n):
    import control

    As, Bs, Cs = (np.asarray(a) for a in sys.arrays())
    D = np.zeros((Cs.shape[1], Bs.shape[2]))
    t0 = time.perf_counter()
    for i in range(count):
        control.balred(control.ss(As[i], Bs[i], Cs[i], D), n, method="truncate")
    return time.perf_counter() - t0


def balancing_many(count, n, count_norm):
    sys = batch(jax.random.PRNGKey(0), count, n, 2, 2)
    few = jax.tree_util.tree_map(lambda a: a[:count_norm], sys)
    gram = jax.jit(jax.vmap(lambda s: S.balanced_truncation(s, n).system))
    shared = jax.jit(jax.vmap(S.gramian_factors))
    before = jax.jit(jax.vmap(_before_factors))
    norm = jax.jit(jax.vmap(lambda s: S.norm_balancing(s).steps))
    t0 = time.perf_counter()
    jax.block_until_ready(gram(sys))
    c_gram = time.perf_counter() - t0
    t0 = time.perf_counter()
    steps = jax.block_until_ready(norm(few))
    c_norm = time.perf_counter() - t0
    signs = np.asarray(jax.jit(jax.vmap(sign_steps))(sys))
    # the python-control loop interleaved with the dlnjax calls, round by round (min over >= 3 rounds each): all
    # see the same background load on a shared machine
    _bench.SLOW = 10.0
    calls = {
        "loop": (lambda s: _control_loop(s, count, n), sys),
        "gram": (gram, sys),
        "shared": (shared, sys),
        "before": (before, sys),
    }
    samples = {}
    _, t = interleaved(warm(calls), budget=20.0, min_rounds=7, samples=samples)
    t_loop = t["loop"]
    t_norm = best_of(norm, few, rounds=1)
    prim = primitives(sys.A)
    per = lambda t, k: 1e3 * t / k
    print(f"\n## (1) Balancing random stable systems, n = {n}, m = p = 2")
    print("| method | systems | wall s | per system ms | speed-up over the python-control loop |")
    print("|---|---|---|---|---|")
    print(
        f"| python-control loop (balred, SLICOT AB09AD), min of {len(samples['loop'])} | {count} | {t_loop:.3f} | "
        f"{per(t_loop, count):.3f} | 1 |"
    )
    g = t["gram"]
    print(
        f"| dlnjax Gramian balancing, one vmapped call, min of {len(samples['gram'])} | {count} | {g:.3f} | "
        f"{per(g, count):.3f} | {t_loop / g:.1f}x |"
    )
    print(
        f"| dlnjax norm balancing, one vmapped call | {count_norm} | {t_norm:.3f} | {per(t_norm, count_norm):.3f} | "
        f"{per(t_loop, count) / per(t_norm, count_norm):.2f}x (per system) |"
    )
    print(
        f"Gramian factors alone: `gramian_factors` {per(t['shared'], count):.3f} ms/system, the code before (two "
        f"iterations, inv + slogdet, QR every step) {per(t['before'], count):.3f} ms/system "
        f"({t['before'] / t['shared']:.2f}x). "
        f"Sign steps: median {np.median(signs):.0f}, max {signs.max()}."
    )
    print(
        f"compile + first call: Gramian {c_gram:.1f} s, norm {c_norm:.1f} s; Newton steps of norm balancing: "
        f"max {int(steps.max())}, median {int(np.median(steps))}"
    )
    print("\n| batched primitive (batch of " + f"{count}) | us per system |")
    print("|---|---|")
    for k, v in prim.items():
        print(f"| {k} | {1e6 * v:.2f} |")
    rate = 2 * n**3 / prim["GEMM 20x20x20"]
    early = int(np.floor(np.log2(n / 2)))  # m = p = 2: the first steps need no compression
    flops = flops_per_system(n, float(np.mean(signs)), early)
    parts = (
        float(np.mean(signs))
        * (prim["LU + inverse (lu_factor, lu_solve)"] + 2 * prim["GEMM 20x20x20"])
        + (float(np.mean(signs)) - early) * 2 * prim["QR, R only, 40x20"]
        + prim["SVD 20x20 with U, V"]
        + 7 * prim["GEMM 20x20x20"]
    )
    print(
        f"\nArithmetic bound: {flops / 1e6:.2f} MFLOP per system (mean {np.mean(signs):.1f} sign steps) at the "
        f"measured batched GEMM rate {rate / 1e9:.1f} GFLOP/s = {1e3 * flops / rate:.3f} ms/system, i.e. at most "
        f"{per(t_loop, count) / (1e3 * flops / rate):.1f}x over the loop; the sum of the measured primitives it calls "
        f"= {1e3 * parts:.3f} ms/system, at most {per(t_loop, count) / (1e3 * parts):.1f}x (the SVD alone: "
        f"{per(t_loop, count) / (1e3 * prim['SVD 20x20 with U, V']):.1f}x)."
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
    ap.add_argument("--only-balancing", action="store_true", help="section (1) only")
    a = ap.parse_args()
    print("# dlnjax.systems benchmark\n")
    print("\n".join(machine_info()))
    balancing_many(100 if a.quick else 1000, 20, 10 if a.quick else 50)
    if a.only_balancing:
        return
    orbit_solve((5, 10) if a.quick else (5, 10, 20))
    flow_rates(8 if a.quick else 32, 3.0)
    truncation_errors(20 if a.quick else 200, 10, 4)


if __name__ == "__main__":
    main()
