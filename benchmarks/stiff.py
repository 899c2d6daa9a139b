"""Benchmark: `dlnjax.Stiff` against Tsit5 in the small-initialization regime, side by side in one run.

Cases (each prints a table; ``--cases`` picks some):

(a) ``N = inf`` completion, ``n x n`` (100), rank 5, 2000 observed, scales 1e-6 (Stiff only: Tsit5 would need ~4.6
    million steps) and 1e-4 (both, and the relative difference of the final ``X``), to ``E <= 1e-4 E(0)``.
(b) accepted steps against the scale 1e-2 ... 1e-8, for the aligned problem ``E = ½||X - M||²`` (5 x 5, N = inf,
    singular values of M 1, 0.4, 0.1, 0, 0) and the 30 x 30, rank 2, 400-observed completion (N = inf); Tsit5 beside it
    while it fits in ``--tsit5-cap`` steps; the growth per decade of 1/scale.
(c) finite depth: the depth-3, 100 x 100 completion at scale 1e-3, run to ``E <= 1e-8 E(0)``.
(d) the weight flow ``Gradient`` of a depth-4 network (30 x 30 completion, balanced start ``fiber_center(scale Q, 4)``):
    wall time and accuracy against a tight Tsit5 reference, at several scales.
(k) Krylov iteration counts: BiCGStab iterations to ``1e-3`` of the residual for Newton matrices ``I - gamma J`` at
    states along the 30 x 30 trajectory (scale 1e-4), with and without the EndToEnd preconditioner.
(j) what bounds the N = inf completion: dense anatomy of the Newton matrices (30 x 30) at states of trajectories
    from scales 1e-3 ... 1e-5: the part of the Jacobian from the derivative of the log-mean multiplier against the
    rest, the convergence of the chord iteration without it, and GMRES steps with the preconditioner.

Times include compilation where marked (first call); the completion solves use the experiment's tolerances
(rtol 1e-6, atol 1e-12, ``dlnjax.experiments.cohen_menon_veraszto``). float64, ``OPENBLAS_NUM_THREADS=1``.

Usage: ``python benchmarks/stiff.py [--quick] [--cases a,b,c,d,k,j] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import _bench  # noqa: E402

from dlnjax._cpu import configure_cpu  # noqa: E402

configure_cpu()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import lineax as lx  # noqa: E402
import numpy as np  # noqa: E402

import dlnjax  # noqa: E402
from dlnjax.experiments import cohen_menon_veraszto as cmv  # noqa: E402

INF = math.inf
RTOL, ATOL = cmv.DEFAULT.rtol, cmv.DEFAULT.atol


def _completion(n, rank, observed):
    loss = dlnjax.losses.MatrixCompletion.random(jr.PRNGKey(1), (n, n), rank, observed)
    Q = cmv.random_directions(jr.PRNGKey(0), 1, (n, n))[0]
    return loss, Q


def _solve_completion(loss, Q, depth, scale, solver, loss_target, max_steps):
    """(wall s incl. compile, success and target reached, accepted, rejected, recovery error, final X)."""
    ts = cmv.save_times(cmv.DEFAULT, cmv.time_unit(loss))
    target = loss_target * float(loss(jnp.zeros(loss.shape)))
    flow = cmv.UntilConverged(dlnjax.flows.EndToEnd(loss, depth), loss, target)
    f = jax.jit(
        lambda X0: dlnjax.simulate(
            flow, X0, ts, solver=solver, rtol=RTOL, atol=ATOL, max_steps=max_steps
        )
    )
    t0 = time.perf_counter()
    traj = jax.block_until_ready(f(scale * Q))
    wall = time.perf_counter() - t0
    L = np.asarray(jax.vmap(loss)(traj.ys))
    stop = cmv._converged_index(L, target)
    ok = bool(traj.success) and L[stop] <= target
    acc, rej = int(traj.stats["num_accepted_steps"]), int(traj.stats["num_rejected_steps"])
    return wall, ok, acc, rej, float(loss.test_error(traj.ys[stop])), np.asarray(traj.ys[stop])


def _row(label, r):
    wall, ok, acc, rej, err, _ = r
    return f"| {label} | {'yes' if ok else 'NO'} | {acc} | {rej} | {err:.4g} | {wall:.1f} |"


HEAD = [
    "| run | converged | accepted | rejected | recovery error | wall s (incl. compile) |",
    "|---|---|---|---|---|---|",
]


def case_a(quick, small_scale=True):
    n, rank, obs = (30, 2, 400) if quick else (100, 5, 2000)
    loss, Q = _completion(n, rank, obs)
    lines = [
        f"## (a) N = inf completion, {n}x{n}, rank {rank}, {obs} observed, to E <= 1e-4 E(0)",
        "",
        *HEAD,
    ]
    if small_scale:
        small = _solve_completion(loss, Q, INF, 1e-6, dlnjax.Stiff(), 1e-4, 20000)
        lines.append(_row("Stiff, scale 1e-6", small))
        print(lines[-1], flush=True)
    stiff = _solve_completion(loss, Q, INF, 1e-4, dlnjax.Stiff(), 1e-4, 20000)
    lines.append(_row("Stiff, scale 1e-4", stiff))
    print(lines[-1], flush=True)
    tsit = _solve_completion(loss, Q, INF, 1e-4, None, 1e-4, 200000)
    lines.append(_row("Tsit5, scale 1e-4", tsit))
    diff = np.linalg.norm(stiff[5] - tsit[5]) / np.linalg.norm(tsit[5])
    lines += [
        "",
        f"scale 1e-4: ||X_Stiff - X_Tsit5|| / ||X_Tsit5|| = {diff:.2e} (final states, each at its first save below the target); "
        f"wall time Tsit5 / Stiff = {tsit[0] / stiff[0]:.1f}",
        "",
    ]
    return lines


def _aligned(n=5):
    rng = np.random.default_rng(0)
    U, _ = np.linalg.qr(rng.normal(size=(n, n)))
    V, _ = np.linalg.qr(rng.normal(size=(n, n)))
    m = np.array([1.0, 0.4, 0.1, 0.0, 0.0])
    M = jnp.asarray(U @ np.diag(m) @ V.T)
    return dlnjax.flows.EndToEnd(lambda X: 0.5 * jnp.sum((X - M) ** 2), INF), U, V


def _steps(f, X0):
    t0 = time.perf_counter()
    traj = jax.block_until_ready(f(X0))
    ok = bool(traj.success)
    return (int(traj.stats["num_accepted_steps"]) if ok else None), time.perf_counter() - t0


def case_b(quick, cap, completion_min=1e-6):
    scales = [1e-2, 1e-4, 1e-6] if quick else [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8]
    flow, U, V = _aligned()
    aligned_ts = lambda s: jnp.concatenate(
        [jnp.zeros(1), jnp.geomspace(1e-2, 50.0 / (s * 0.1), 40)]
    )  # past the last escape
    loss, Q = _completion(30, 2, 400)
    target = 1e-4 * float(loss(jnp.zeros(loss.shape)))
    cflow = cmv.UntilConverged(dlnjax.flows.EndToEnd(loss, INF), loss, target)
    cts = cmv.save_times(cmv.DEFAULT, cmv.time_unit(loss))
    problems = {
        "aligned 5x5 (rtol 1e-8)": (
            flow,
            aligned_ts,
            1e-8,
            1e-30,
            lambda s: jnp.asarray(U @ np.diag(s * np.linspace(1, 0.6, 5)) @ V.T),
        ),
        "completion 30x30 (rtol 1e-6)": (cflow, lambda s: cts, RTOL, ATOL, lambda s: s * Q),
    }
    lines = [
        "## (b) accepted steps against the initialization scale (N = inf)",
        "",
        "| problem | solver | " + " | ".join(f"{s:g}" for s in scales) + " | growth per decade |",
        "|---|---|" + "---|" * (len(scales) + 1),
    ]
    for name, (fl, tt, rtol, atol, start) in problems.items():
        for label, solver, ms in (("Stiff", dlnjax.Stiff(), 50000), ("Tsit5", None, cap)):
            f = jax.jit(
                lambda X0, ts: dlnjax.simulate(
                    fl, X0, ts, solver=solver, rtol=rtol, atol=atol, max_steps=ms
                )
            )
            counts = []
            for s in scales:
                if (counts and counts[-1] is None) or (
                    name.startswith("completion") and s < completion_min
                ):
                    counts.append(None)  # a smaller scale needs more steps still
                    continue
                counts.append(_steps(lambda X0: f(X0, tt(s)), start(s))[0])
            good = [(s, c) for s, c in zip(scales, counts) if c is not None]
            growth = ""
            if len(good) >= 2:
                (s0, c0), (s1, c1) = good[0], good[-1]
                growth = f"{(c1 / c0) ** (1 / math.log10(s0 / s1)):.2f}x"
            cells = [
                str(c)
                if c is not None
                else (
                    "not run" if name.startswith("completion") and s < completion_min else f"> {ms}"
                )
                for s, c in zip(scales, counts)
            ]
            lines.append(f"| {name} | {label} | " + " | ".join(cells) + f" | {growth} |")
            print(lines[-1], flush=True)
    return lines + [""]


def case_c(quick):
    n, rank, obs, target = (30, 2, 400, 1e-8) if quick else (100, 5, 2000, 1e-8)
    loss, Q = _completion(n, rank, obs)
    lines = [f"## (c) depth 3, {n}x{n} completion, scale 1e-3, to E <= {target:g} E(0)", "", *HEAD]
    stiff = _solve_completion(loss, Q, 3, 1e-3, dlnjax.Stiff(), target, 20000)
    lines.append(_row("Stiff", stiff))
    print(lines[-1], flush=True)
    tsit = _solve_completion(loss, Q, 3, 1e-3, None, target, 100000)
    lines.append(_row("Tsit5", tsit))
    diff = np.linalg.norm(stiff[5] - tsit[5]) / np.linalg.norm(tsit[5])
    return lines + [
        "",
        f"wall time Tsit5 / Stiff = {tsit[0] / stiff[0]:.1f}; final X relative difference {diff:.2e}",
        "",
    ]


def case_d(quick):
    n, rank, obs, depth = 30, 2, 400, 4
    loss, Q = _completion(n, rank, obs)
    unit = cmv.time_unit(loss)
    scales = [1e-1, 1e-3] if quick else [1e-1, 1e-2, 1e-3, 1e-4]
    lines = [
        f"## (d) weight flow Gradient, depth {depth}, {n}x{n} completion, balanced start fiber_center(scale Q, {depth})",
        "",
        "| scale | horizon | Stiff accepted | Stiff wall s | Tsit5 accepted | Tsit5 wall s | Stiff error vs reference | Tsit5 error vs reference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    flow = dlnjax.flows.Gradient(loss)
    for s in scales:
        net0 = dlnjax.fiber_center(s * Q, depth)
        horizon = 1e3 * unit * s ** -(1 - 2 / depth)
        ts = jnp.array([0.0, horizon])
        run = lambda solver, rtol, atol, ms: jax.jit(
            lambda y: dlnjax.simulate(
                flow, y, ts, solver=solver, rtol=rtol, atol=atol, max_steps=ms
            )
        )
        ref = jax.block_until_ready(run(None, 1e-10, 1e-14, 2_000_000)(net0))
        Xref = np.asarray(dlnjax.end_to_end(ref[-1]))
        out = []
        for solver, ms in ((dlnjax.Stiff(), 50000), (None, 500000)):
            f = run(solver, RTOL, ATOL, ms)
            jax.block_until_ready(f(net0))  # compile
            t0 = time.perf_counter()
            traj = jax.block_until_ready(f(net0))
            wall = time.perf_counter() - t0
            X = np.asarray(dlnjax.end_to_end(traj[-1]))
            err = (
                np.linalg.norm(X - Xref) / np.linalg.norm(Xref)
                if bool(traj.success)
                else float("nan")
            )
            out.append((int(traj.stats["num_accepted_steps"]), wall, err, bool(traj.success)))
        (sa, sw, se, sok), (ta, tw, te, tok) = out
        lines.append(
            f"| {s:g} | {horizon:.3g} | {sa}{'' if sok else ' (failed)'} | {sw:.2f} | {ta}{'' if tok else ' (failed)'} | {tw:.2f} | {se:.1e} | {te:.1e} |"
        )
        print(lines[-1], flush=True)
    return lines + [
        "",
        "(wall times after compilation; reference: Tsit5 at rtol 1e-10, atol 1e-14)",
        "",
    ]


def case_k(quick):
    loss, Q = _completion(30, 2, 400)
    flow = dlnjax.flows.EndToEnd(loss, INF)
    ts = cmv.save_times(cmv.DEFAULT, cmv.time_unit(loss))
    target = 1e-4 * float(loss(jnp.zeros(loss.shape)))
    traj = dlnjax.simulate(
        cmv.UntilConverged(flow, loss, target),
        1e-4 * Q,
        ts,
        solver=dlnjax.Stiff(),
        rtol=RTOL,
        atol=ATOL,
        max_steps=20000,
    )
    L = np.asarray(jax.vmap(loss)(traj.ys)) / float(loss(jnp.zeros(loss.shape)))
    picks = sorted(
        {int(np.argmax(L <= level)) for level in (0.99, 0.5, 1e-1, 1e-2, 1e-3, 1e-4)}
    )  # first saves below
    lines = [
        "## (k) BiCGStab iterations to 1e-3 of the residual on I - gamma J (30x30, N = inf, scale 1e-4 trajectory)",
        "",
        "| E / E(0) | gamma | preconditioned | plain |",
        "|---|---|---|---|",
    ]
    b = jr.normal(jr.PRNGKey(2), loss.shape)
    b = b / jnp.sqrt(jnp.mean(b**2))
    solver = lx.BiCGStab(rtol=0.0, atol=1e-3, norm=dlnjax.internal.rms_norm, max_steps=500)
    for i in picks:
        X = traj.ys[i]
        J = jax.linearize(lambda Z: flow(0.0, Z), X)[1]
        for g in (1e2, 1e4, 1e6):
            op = lx.FunctionLinearOperator(lambda Z, g=g: Z - g * J(Z), jax.eval_shape(lambda: X))
            cells = []
            for pre in (flow.stiff_preconditioner(0.0, X, None, g), None):
                sol = lx.linear_solve(
                    op,
                    b,
                    solver,
                    options={} if pre is None else {"preconditioner": pre},
                    throw=False,
                )
                r = float(jnp.sqrt(jnp.mean((op.mv(sol.value) - b) ** 2)))
                cells.append(
                    f"{int(sol.stats['num_steps'])}" + ("" if r <= 1e-3 else f" (residual {r:.1e})")
                )
            lines.append(f"| {L[i]:.2e} | {g:g} | {cells[0]} | {cells[1]} |")
            print(lines[-1], flush=True)
    return lines + [
        "",
        "(each BiCGStab iteration costs two Jacobian-vector products and, preconditioned, two applications of the preconditioner)",
        "",
    ]


def _dense(f, X):
    """The matrix of the linear map ``f`` on ``X``'s shape (columns: the images of the unit matrices)."""
    n = X.size
    return np.asarray(jax.jacfwd(lambda Z: f(Z).reshape(-1))(jnp.zeros_like(X))).reshape(n, n)


def _gmres_steps(M, b, cap=300):
    """GMRES steps (one cycle of at most ``cap``) to ``1e-3`` of the residual; ``"> cap"`` if it did not get there."""
    import scipy.sparse.linalg as spla

    count = [0]

    def tick(_):
        count[0] += 1

    _, info = spla.gmres(
        M, b, rtol=1e-3, restart=cap, maxiter=1, callback=tick, callback_type="pr_norm"
    )
    return str(count[0]) if info == 0 else f"> {cap}"


def case_j(quick):
    """Anatomy of the Newton matrices ``I - gamma J`` of the N = inf completion (30 x 30, rank 2, 400 observed).

    ``J = -A(X) H - (D A(X)[.]) grad E``: the second term (the derivative of the log-mean multiplier, which is not
    Lipschitz at rank-deficient ``X``) is measured against the first, at the first saves with ``E <= 0.5 E(0)``
    (after the first escape) and ``E <= 1e-4 E(0)`` of trajectories from several scales; dense 900 x 900 matrices.
    """
    from dlnjax._metric import apply_multiplier

    loss, Q = _completion(30, 2, 400)
    flow = dlnjax.flows.EndToEnd(loss, INF)
    ts = cmv.save_times(cmv.DEFAULT, cmv.time_unit(loss))
    E0 = float(loss(jnp.zeros(loss.shape)))
    gammas = (1e4, 1e6, 1e8)
    lines = [
        "## (j) the Newton matrices I - gamma J of the N = inf completion (30 x 30, rank 2, 400 observed)",
        "",
        "| scale | E / E(0) | sigma_min | sigma_3 | norm J | norm of D A part | max Re eig J | "
        + " | ".join(
            f"gamma {g:g}: chord radius (frozen J) | gamma {g:g}: GMRES steps" for g in gammas
        )
        + " |",
        "|---|---|---|---|---|---|---|" + "---|---|" * len(gammas),
    ]
    rng = np.random.default_rng(0)
    for scale in (1e-3, 1e-4) if quick else (1e-3, 1e-4, 1e-5):
        traj = dlnjax.simulate(
            cmv.UntilConverged(flow, loss, 1e-4 * E0),
            scale * Q,
            ts,
            solver=dlnjax.Stiff(),
            rtol=RTOL,
            atol=ATOL,
            max_steps=20000,
        )
        L = np.asarray(jax.vmap(loss)(traj.ys)) / E0
        for level in (0.5, 1e-4):
            X = traj.ys[int(np.argmax(L <= level))]
            s = np.linalg.svd(np.asarray(X), compute_uv=False)
            J = np.asarray(jax.jacfwd(lambda Z: flow(0.0, Z).reshape(-1))(X)).reshape(
                X.size, X.size
            )
            H = np.asarray(jax.jacfwd(lambda Z: flow.gradient(Z).reshape(-1))(X)).reshape(
                X.size, X.size
            )
            A = _dense(lambda Z, X=X: apply_multiplier(X, Z, INF, False, None), X)
            frozen = -A @ H
            eye = np.eye(X.size)
            b = rng.normal(size=X.size)
            cells = []
            for g in gammas:
                M = eye - g * J
                chord = np.linalg.solve(eye - g * frozen, M)
                radius = max(abs(np.linalg.eigvals(eye - chord)))
                P = _dense(flow.stiff_preconditioner(0.0, X, None, g).mv, X)
                cells += [f"{radius:.3g}", _gmres_steps(P @ M, P @ b)]
            lines.append(
                f"| {scale:g} | {L[int(np.argmax(L <= level))]:.2e} | {s[-1]:.2e} | {s[2]:.2e} | "
                f"{np.linalg.norm(J, 2):.2e} | {np.linalg.norm(J - frozen, 2):.2e} | "
                f"{np.linalg.eigvals(J).real.max():.2e} | " + " | ".join(cells) + " |"
            )
            print(lines[-1], flush=True)
    return lines + [
        "",
        "(chord radius: spectral radius of I - (I - gamma J_frozen)^-1 (I - gamma J), J_frozen = -A(X) H: the chord"
        " iteration with the Jacobian that drops the multiplier's derivative converges iff it is < 1; GMRES steps:"
        " GMRES(300) to 1e-3 of the residual on the system preconditioned with EndToEnd.stiff_preconditioner, random"
        " right-hand side)",
        "",
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--cases", default="a,b,c,d,k")
    p.add_argument("--tsit5-cap", type=int, default=200_000, help="max steps for Tsit5 in (b)")
    p.add_argument(
        "--completion-min",
        type=float,
        default=1e-6,
        help="smallest scale of the completion row of (b)",
    )
    p.add_argument("--no-small", action="store_true", help="(a) without the scale-1e-6 solve")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    lines = ["# dlnjax.Stiff against Tsit5 (benchmarks/stiff.py)", "", *_bench.machine_info(), ""]
    print("\n".join(lines), flush=True)
    for c in a.cases.split(","):
        t0 = time.perf_counter()
        part = {
            "a": lambda: case_a(a.quick, not a.no_small),
            "b": lambda: case_b(a.quick, a.tsit5_cap, a.completion_min),
            "c": lambda: case_c(a.quick),
            "d": lambda: case_d(a.quick),
            "k": lambda: case_k(a.quick),
            "j": lambda: case_j(a.quick),
        }[c.strip()]()
        lines += part + [f"(case {c} took {time.perf_counter() - t0:.0f} s)", ""]
        print(f"(case {c} took {time.perf_counter() - t0:.0f} s)", flush=True)
    return _bench.write_report(lines, a.out, echo=False)  # the tables were printed as they came


if __name__ == "__main__":
    sys.exit(main())
