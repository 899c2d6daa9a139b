"""Benchmark: the cost of the fiber gradient (`dlnjax.flows.FiberL2`) against a plain gradient.

For each width ``d`` and depth ``N`` this times one evaluation of the vector field

- ``Gradient(E)``, ``E(X) = 1/2 ||X - T||^2`` (full observation, ``T`` a fixed Gaussian matrix), and
- ``FiberL2`` (``-Pi_T(W)``, docs/theory.md §3) with three solvers for the normal system
  ``(dX dX^*) lam = dX(W) = N X``:
  the default matrix-free CG preconditioned in the eigenbases of ``sum_k A_k``, ``sum_k B_k`` (PCG);
  dense Cholesky of the ``d^2 x d^2`` matrix (``FiberL2(solver=lineax.Cholesky())``); and
  unpreconditioned CG (``lineax.CG`` on ``dlnjax.normal_operator`` without a preconditioner, then
  ``dlnjax.product_adjoint``, same tolerances and right-hand-side scaling as the library),

at a generic point (``W_k = I + 0.3 G_k / sqrt(d)``, ``dlnjax.residual(key, N, d, 0.3 sqrt(N))``) and near
balance (that point flowed by ``FiberL2`` to ``t = 2`` with ``dlnjax.simulate``). Each FiberL2 time is
reported as a ratio to the Gradient time measured in the same interleaved rounds (the machine may be
shared and noisy; each time is the minimum over the rounds). Errors are relative Frobenius errors of
the projection ``Pi_T(W)`` (all layers together) against a reference: the dense LU solve
(``jnp.linalg.solve`` on the ``d^2 x d^2`` normal matrix, built here independently of the library),
iteratively refined with residuals in ``np.longdouble``. The error of the plain float64 LU solve is
reported too: it is the float64 floor of the problem (large where ``X`` is ill-conditioned and
``Pi_T(W)`` is small against ``W``, i.e. near balance at large ``N``).

It then times the FIRST call of a jitted ``dlnjax.simulate`` of the ``Gradient`` and ``FiberL2`` flows
at ``d = 4`` for ``N in {8, 128, 1024}`` (compile + run; the requirement is ``N = 1024`` within 3x of
``N = 8``).

Usage: ``python benchmarks/fiber_gradient.py [--quick] [--out FILE]``. float64 throughout.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# jaxlib's CPU LAPACK kernels (Cholesky, LU, eigh) run on scipy's OpenBLAS. With its default thread
# pool, on a loaded 2-core machine, those kernels were measured 10-500x slower and erratic (e.g. 256 ms
# instead of 0.5 ms for a 256 x 256 Cholesky): OpenBLAS's spinning threads fight XLA's. One OpenBLAS
# thread gives stable timings. Set OPENBLAS_NUM_THREADS yourself to override (before this runs).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import _bench  # noqa: E402  (benchmarks/_bench.py, next to this script)

from dlnjax._cpu import configure_cpu  # noqa: E402

configure_cpu()  # one OpenBLAS thread, fast tiny fusions (dlnjax/_cpu.py), before JAX's backend starts

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import lineax as lx  # noqa: E402
import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402

import dlnjax  # noqa: E402
from dlnjax.flows import FiberL2, Gradient  # noqa: E402

TOL = 1e-12  # the library's default CG tolerance in float64 (rtol = atol)
UNPREC_MAX_STEPS = 3000  # cap for unpreconditioned CG
T_BALANCE = 2.0  # "near balance": FiberL2 flowed to this time
TARGETS = dict(d=64, N=16, generic=20.0, balanced=5.0, err=1e-10, compile=3.0)


# ----------------------------------------------------------------------------------------------
# timing


# ----------------------------------------------------------------------------------------------
# the functions compared, for one (d, N)


def _stacked(net):
    return np.concatenate(
        [np.asarray(net.first)[None], np.asarray(net.inner), np.asarray(net.last)[None]]
    )


def reference_velocity(net, dense) -> np.ndarray:
    """``-Pi_T(W)`` (stacked ``(N, d, d)``, ``np.longdouble``) from a dense solve refined in extended precision.

    The float64 LU factors of the dense normal matrix are reused for iterative refinement whose
    residuals ``N X - sum_k A_k lam B_k`` (and ``A_k``, ``B_k``, ``X`` and ``dX^*(lam)``) are computed
    in ``np.longdouble`` (64-bit mantissa on x86) from the float64 weights, so the reference is
    accurate well below float64 rounding wherever ``cond(dX dX^*) eps_64 << 1``. This matters near
    balance, where ``Pi_T(W)`` is much smaller than ``W`` and a plain float64 solve loses digits.
    """
    ld = np.longdouble
    W = _stacked(net).astype(ld)
    N, d = W.shape[0], W.shape[-1]
    P, Q = np.empty_like(W), np.empty_like(W)
    p = q = np.eye(d, dtype=ld)
    for k in range(N):
        P[N - 1 - k] = p  # P_k = W_N ... W_(k+1)
        p = p @ W[N - 1 - k]
        Q[k] = q  # Q_k = W_(k-1) ... W_1
        q = W[k] @ q
    X = p
    A = P @ np.swapaxes(P, 1, 2)
    B = np.swapaxes(Q, 1, 2) @ Q
    lu = scipy.linalg.lu_factor(np.asarray(dense))
    rhs = N * X
    lam = scipy.linalg.lu_solve(lu, rhs.astype(np.float64).reshape(-1)).reshape(d, d).astype(ld)
    for _ in range(8):
        res = rhs - np.sum(A @ lam[None] @ B, axis=0)
        delta = scipy.linalg.lu_solve(lu, res.astype(np.float64).reshape(-1)).reshape(d, d)
        lam = lam + delta.astype(ld)
        if np.max(np.abs(delta)) <= 1e-19 * np.max(np.abs(lam)):
            break
    return np.swapaxes(P, 1, 2) @ lam[None] @ np.swapaxes(Q, 1, 2) - W


def _rel_err(v, ref: np.ndarray) -> float:
    diff = _stacked(v).astype(np.longdouble) - ref
    return float(np.sqrt(np.sum(diff**2) / np.sum(ref**2)))


def _scaled_rhs(net):
    rhs = net.depth * dlnjax.end_to_end(net)  # dX(W) = N X
    scale = jnp.max(jnp.abs(rhs))
    return rhs, jnp.where(scale > 0, scale, 1.0)


def _velocity(net, lam):
    # FiberL2 velocity -Pi_T(W) = dX^*(lam) - W
    return jax.tree_util.tree_map(lambda w, n: n - w, net, dlnjax.product_adjoint(net, lam))


def make_functions(d: int, N: int, target):
    loss = lambda X: 0.5 * jnp.sum((X - target) ** 2)

    def unpreconditioned(net):
        rhs, scale = _scaled_rhs(net)
        solver = lx.CG(rtol=TOL, atol=TOL, max_steps=UNPREC_MAX_STEPS)
        sol = lx.linear_solve(dlnjax.normal_operator(net), rhs / scale, solver, throw=False)
        return (
            _velocity(net, sol.value * scale),
            sol.stats["num_steps"],
            sol.result == lx.RESULTS.successful,
        )

    def pcg_steps(
        net,
    ):  # the library's solve (FiberCG, as in FiberL2), called directly to read the step count
        products = dlnjax.FiberProducts(net)
        v2 = sum(jnp.sum(jnp.abs(w) ** 2) for w in net.arrays())
        sol = dlnjax.default_fiber_solver(net.dtype).solve(
            products.normal_operator(), products.differential_of_weights(), v2=v2
        )
        return sol.stats["num_steps"], sol.result == dlnjax.FiberResults.successful

    def dense_lu(
        net,
    ):  # plain float64 dense LU on sum_k A_k (x) B_k^T, built independently of the library
        A, B = dlnjax.partial_grams(net)
        dense = jnp.einsum("kab,kcd->adbc", A, B).reshape(d * d, d * d)  # vec(A lam B), row-major
        rhs = net.depth * dlnjax.end_to_end(net)
        lam = jnp.linalg.solve(dense, rhs.reshape(-1)).reshape(d, d)
        return _velocity(net, lam), dense

    def balance(net):
        traj = dlnjax.simulate(FiberL2(), net, jnp.array([0.0, T_BALANCE]))
        return traj[-1], traj.success

    return dict(
        grad=jax.jit(lambda n: Gradient(loss)(0.0, n, None)),
        pcg=jax.jit(lambda n: FiberL2()(0.0, n, None)),
        chol=jax.jit(lambda n: FiberL2(solver=lx.Cholesky())(0.0, n, None)),
        cg=jax.jit(unpreconditioned),
        pcg_steps=jax.jit(pcg_steps),
        dense_lu=jax.jit(dense_lu),
        balance=jax.jit(balance),
    )


def bench_case(d: int, N: int, key, *, budget: float):
    k_net, k_target = jax.random.split(key)
    target = jax.random.normal(k_target, (d, d))
    fns = make_functions(d, N, target)
    generic = dlnjax.residual(k_net, N, d, 0.3 * np.sqrt(N))
    balanced, ok = fns.pop("balance")(generic)
    if not bool(ok):
        print(
            f"  warning: simulate(FiberL2) to t = {T_BALANCE} failed at d = {d}, N = {N}",
            file=sys.stderr,
        )
    # compile ahead of time, so that every call below is a pure run
    fns = {k: f.lower(generic).compile() for k, f in fns.items()}
    timed = {k: fns[k] for k in ("grad", "pcg", "chol", "cg")}
    rows = []
    for point, net in (("generic", generic), ("near balance", balanced)):
        X = dlnjax.end_to_end(net)
        sv = np.linalg.svd(np.asarray(X), compute_uv=False)
        samples = {}
        out, t = _bench.interleaved(
            {k: (f, net) for k, f in timed.items()}, budget=budget, samples=samples
        )
        # the ratio round by round (FiberL2 and Gradient called back to back): robust to slow drifts of the load
        paired = np.array([p / g for g, p in zip(samples["grad"][1:], samples["pcg"][1:])])
        v_cg, cg_steps, cg_ok = out["cg"]
        steps, pcg_ok = fns["pcg_steps"](net)
        v_lu, dense = fns["dense_lu"](net)
        ref = reference_velocity(net, dense)
        del dense
        rows.append(
            dict(
                d=d,
                N=N,
                point=point,
                cond=sv[0] / sv[-1],
                bal=float(dlnjax.balancedness(net)),
                t_grad=t["grad"],
                t_pcg=t["pcg"],
                paired=np.percentile(paired, [25, 50, 75]) if paired.size else np.full(3, np.nan),
                t_chol=t["chol"],
                t_cg=t["cg"],
                pcg_steps=int(steps),
                pcg_ok=bool(pcg_ok),
                cg_steps=int(cg_steps),
                cg_ok=bool(cg_ok),
                err_pcg=_rel_err(out["pcg"], ref),
                err_chol=_rel_err(out["chol"], ref),
                err_cg=_rel_err(v_cg, ref),
                err_lu=_rel_err(v_lu, ref),
            )
        )
    return rows


# ----------------------------------------------------------------------------------------------
# compile time against depth


def compile_times(depths, d: int = 4):
    key = jax.random.PRNGKey(1)
    target = jax.random.normal(jax.random.PRNGKey(2), (d, d))
    loss = lambda X: 0.5 * jnp.sum((X - target) ** 2)
    ts = jnp.array([0.0, 0.01])  # short: the first call should be dominated by compilation
    flows = {"Gradient": Gradient(loss), "FiberL2": FiberL2()}

    def jitted(flow):
        return jax.jit(lambda net: dlnjax.simulate(flow, net, ts).ys)

    # One throwaway compile per flow at another depth, so that one-time costs (tracing diffrax's
    # Python for the first time, XLA start-up) are not charged to N = 8.
    for flow in flows.values():
        jax.block_until_ready(jitted(flow)(dlnjax.residual(key, 3, d, 0.3)))
    out = []
    for name, flow in flows.items():
        for N in depths:
            net = dlnjax.residual(
                key, N, d, 0.3
            )  # W_k = I + 0.3 G / sqrt(N d): well conditioned at any N
            f = jitted(flow)
            first = _bench.timed(f, net)[0]
            second = min(_bench.timed(f, net)[0] for _ in range(3))
            out.append(dict(flow=name, N=N, first=first, run=second))
    return out


# ----------------------------------------------------------------------------------------------
# report


def machine_info() -> list[str]:
    return _bench.machine_info()


def _fmt_err(e):
    return f"{e:.1e}"


def _fmt_steps(steps, ok):
    return f"{steps}" if ok else f"{steps} (no conv.)"


def table(rows) -> list[str]:
    head = (
        "| d | N | point | cond X | balancedness | Gradient (µs) | PCG (ms) | **PCG / Gradient** | PCG steps "
        "| PCG err | Cholesky / Gradient | Cholesky err | CG / Gradient | CG steps | CG err | dense LU err |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['d']} | {r['N']} | {r['point']} | {r['cond']:.3g} | {r['bal']:.2g} | {1e6 * r['t_grad']:.0f} "
            f"| {1e3 * r['t_pcg']:.2f} | **{r['t_pcg'] / r['t_grad']:.1f}** | {_fmt_steps(r['pcg_steps'], r['pcg_ok'])} "
            f"| {_fmt_err(r['err_pcg'])} | {r['t_chol'] / r['t_grad']:.3g} | {_fmt_err(r['err_chol'])} "
            f"| {r['t_cg'] / r['t_grad']:.3g} | {_fmt_steps(r['cg_steps'], r['cg_ok'])} | {_fmt_err(r['err_cg'])} | {_fmt_err(r['err_lu'])} |"
        )
    return lines


def compile_table(ctimes, depths) -> tuple[list[str], list[tuple[str, float]]]:
    lines = [
        "| flow | "
        + " | ".join(f"N = {N}: first call (s)" for N in depths)
        + f" | ratio N={depths[-1]} / N={depths[0]} | "
        + " | ".join(f"N = {N}: later call (ms)" for N in depths)
        + " |"
    ]
    lines.append("|" + "---|" * (2 * len(depths) + 2))
    ratios = []
    for name in ("Gradient", "FiberL2"):
        rs = {c["N"]: c for c in ctimes if c["flow"] == name}
        ratio = rs[depths[-1]]["first"] / rs[depths[0]]["first"]
        ratios.append((name, ratio))
        lines.append(
            f"| {name} | "
            + " | ".join(f"{rs[N]['first']:.2f}" for N in depths)
            + f" | **{ratio:.2f}** | "
            + " | ".join(f"{1e3 * rs[N]['run']:.1f}" for N in depths)
            + " |"
        )
    return lines, ratios


def verdicts(rows, ratios, depths) -> list[str]:
    out = []
    sel = {r["point"]: r for r in rows if r["d"] == TARGETS["d"] and r["N"] == TARGETS["N"]}
    tag = lambda ok: "PASS" if ok else "FAIL"
    if sel:
        g, b = sel["generic"], sel["near balance"]
        rg, rb = g["t_pcg"] / g["t_grad"], b["t_pcg"] / b["t_grad"]
        out.append(
            f"- {tag(rg <= TARGETS['generic'])}: d = 64, N = 16, generic point: FiberL2 / Gradient = {rg:.1f} (target <= {TARGETS['generic']:g})"
        )
        out.append(
            f"- {tag(rb <= TARGETS['balanced'])}: d = 64, N = 16, near balance: FiberL2 / Gradient = {rb:.1f} (target <= {TARGETS['balanced']:g})"
        )
        for point, r in (("generic", g), ("near balance", b)):
            q = r["paired"]
            out.append(
                f"- (info) d = 64, N = 16, {point}: FiberL2 / Gradient round by round (back-to-back calls): median {q[1]:.2f}, "
                f"quartiles {q[0]:.2f}-{q[2]:.2f}"
            )
        e = max(g["err_pcg"], b["err_pcg"])
        out.append(
            f"- {tag(e <= TARGETS['err'])}: d = 64, N = 16, projection error of the default solver = {e:.1e} (max of both points; target <= {TARGETS['err']:g})"
        )
    else:
        out.append("- (d = 64, N = 16 not run: no verdict on the cost and accuracy targets)")
    emax = max(r["err_pcg"] for r in rows)
    out.append(
        f"- (info) largest projection error of the default solver over all cases: {emax:.1e}"
    )
    for name, ratio in ratios:
        out.append(
            f"- {tag(ratio <= TARGETS['compile'])}: compile, {name}: first call at N = {depths[-1]} / N = {depths[0]} = {ratio:.2f} (target <= {TARGETS['compile']:g})"
        )
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: d in {8, 64}, N = 16; compile at N in {8, 1024}",
    )
    parser.add_argument("--out", metavar="FILE", help="also write the markdown report to FILE")
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args(argv)

    widths, depths = ((8, 64), (16,)) if opts.quick else ((8, 32, 64), (4, 16, 64))
    cdepths = (8, 1024) if opts.quick else (8, 128, 1024)
    budget = 0.5 if opts.quick else 1.5

    info = machine_info()
    print("\n".join(info), flush=True)
    t0 = time.perf_counter()
    rows = []
    key = jax.random.PRNGKey(opts.seed)
    for d in widths:
        for N in depths:
            key, sub = jax.random.split(key)
            tc = time.perf_counter()
            rows.extend(bench_case(d, N, sub, budget=budget))
            print(
                f"  d = {d:3d}, N = {N:3d}: {time.perf_counter() - tc:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    ctimes = compile_times(cdepths)
    elapsed = time.perf_counter() - t0

    report = [
        "## Machine",
        *info,
        f"- benchmark wall time: {elapsed:.0f} s" + (" (--quick)" if opts.quick else ""),
        "",
    ]
    report += ["## FiberL2 evaluation / Gradient evaluation (float64)", "", *table(rows), ""]
    clines, ratios = compile_table(ctimes, cdepths)
    report += ["## First call of jitted `dlnjax.simulate` against depth (d = 4)", "", *clines, ""]
    report += ["## Targets", *verdicts(rows, ratios, cdepths), ""]
    _bench.publish(report, opts.out)


if __name__ == "__main__":
    main()
