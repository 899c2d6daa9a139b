"""Projections onto the tangent and normal spaces of a fiber: the "fiber gradient" (docs/theory.md §3).

``Pi_T(V) = V - dX^*(lam)`` with ``(dX dX^*)(lam) = dX(V)``. The normal operator
``L(lam) = sum_k A_k lam B_k`` (``A_k = P_k P_k^*``, ``B_k = Q_k^* Q_k``) acts on ``d_N x d_0``
matrices and is Hermitian positive definite when ``dX`` is onto.

Solvers. The default is `FiberCG` (`default_fiber_solver`): conjugate gradients run matrix-free on ``L``,
preconditioned by the Jacobi preconditioner of ``L`` in the eigenbases of ``sum_k A_k`` and ``sum_k B_k``, and
stopped on the error of the projection itself. At a balanced point these bases are the singular bases of ``X``
and ``L`` is exactly diagonal there, with the multipliers
``a_ij = sum_m sigma_i^(2(m-1)/N) sigma_j^(2(N-m)/N)`` of docs/theory.md §3, so the preconditioner is the exact
inverse and CG converges in one step; nearby it needs a few. Any Lineax solver may be passed instead:

- ``lineax.CG`` gets the same preconditioner and warm start, with Lineax's own stopping rule (on the residual of
  ``lam``; it needs a step or two more than `FiberCG` for the same accuracy of the projection);
- Any other Lineax solver (``lineax.Cholesky()``, ``lineax.LU()``, ``lineax.SVD()``, ...) gets the
  dense ``(d_N d_0) x (d_N d_0)`` matrix ``sum_k A_k (x) B_k^T``, built in O(N d^4).

Rank-deficient ``X``: ``dX`` is then not onto and ``L`` is singular, but ``dX(V)`` lies in its range.
The projection onto ``ker dX`` is still well defined: the least-squares projection. ``lineax.SVD()``
returns it always (its cutoff decides what counts as rank-deficient). The default `FiberCG` (and ``lineax.CG``) returns it when
``X`` is exactly rank-deficient (zero singular values in the layers); when ``X`` is only numerically
rank-deficient (singular values ~1e-14 of the largest) the system is ill-posed, CG does not converge and
raises, naming ``lineax.SVD()`` as the remedy. ``lineax.Cholesky()`` raises at any rank-deficient ``X``. A solve that does not converge,
or produces non-finite values, raises an error at run time, also under ``jit``.

The public solves are wrapped in ``equinox.filter_jit`` (as ``lineax.linear_solve`` is): called eagerly they
run as one compiled program rather than op by op (timings: docs/performance.md, "Lab notes"); under an outer
``jit`` they are inlined.
"""

from __future__ import annotations

import functools as ft

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jaxtyping import Array, Inexact

from ._geometry import (
    adjoint_from_products,
    differential_from_products,
    grams_from_products,
    partial_grams,
    partial_products,
)
from ._network import DLN, require_linear
from ._numerics import ct, dot, rdot, sq_norm

__all__ = [
    "normal_operator",
    "balanced_preconditioner",
    "solve_normal",
    "fiber_normal_projection",
    "fiber_tangent_projection",
    "default_fiber_solver",
    "FiberCG",
    "fiber_l2_gradient",
]


def default_fiber_solver(dtype) -> FiberCG:
    """`FiberCG` with tolerances suited to ``dtype``: ``rtol = 1e-10``, ``atol = 1e-12`` in double precision,
    ``1e-4`` and ``1e-5`` in single precision."""
    if jnp.finfo(dtype).bits == 64:
        return FiberCG(rtol=1e-10, atol=1e-12)
    return FiberCG(rtol=1e-4, atol=1e-5)


def _function_operator(net: DLN, fn) -> lx.FunctionLinearOperator:
    struct = jax.ShapeDtypeStruct((net.widths[-1], net.widths[0]), net.dtype)
    return lx.FunctionLinearOperator(fn, struct, lx.positive_semidefinite_tag)


def _lineax_operators(net: DLN, op, pre=None):
    """``L`` (from `_operator_data`) and, given ``pre`` (from `_jacobi`), its preconditioner, as Lineax operators."""
    L = _function_operator(net, lambda lam: _apply_data(op, lam))
    return L if pre is None else (L, _function_operator(net, lambda r: _pre_apply(pre, r)))


def normal_operator(net: DLN) -> lx.FunctionLinearOperator:
    """The normal operator ``(dX dX^*)(lam) = sum_k P_k P_k^* lam Q_k^* Q_k`` (docs/theory.md §3), as a Lineax operator."""
    require_linear(net, "the fiber geometry (normal_operator)")
    if net.depth == 1:
        return _function_operator(net, lambda lam: lam)
    return _lineax_operators(net, _operator_data(_products(net)))


def balanced_preconditioner(net: DLN) -> lx.FunctionLinearOperator:
    """The Jacobi preconditioner of the normal operator in the eigenbases of ``sum_k A_k``, ``sum_k B_k`` (exact at balance).

    The preconditioner of `FiberCG` (and of ``lineax.CG`` in the fiber projections), as a Lineax operator.
    """
    require_linear(net, "the fiber geometry (balanced_preconditioner)")
    if net.depth == 1:
        return _function_operator(net, lambda r: r)
    op = _operator_data(_products(net))
    return _lineax_operators(net, op, _jacobi(op))[1]


def _dense(A: Array, B: Array) -> Array:
    dN, d0 = A.shape[-1], B.shape[-1]
    # row-major vec(A lam B) = (A kron B^T) vec(lam)
    return jnp.einsum("kab,kdc->acbd", A, B).reshape(dN * d0, dN * d0)


def _lineax_cg(net: DLN, op, rhs: Array, solver: lx.CG):
    """``lineax.CG`` on the normal system, with the preconditioner and warm start of `FiberCG`."""
    # Scale the right-hand side to max-norm one, so that CG's tolerances are relative.
    scale = jnp.max(jnp.abs(rhs))
    scale = jnp.where(scale > 0, scale, 1.0)
    b = rhs / scale
    # The preconditioner and the warm start change how CG gets there, not the solution: outside autodiff
    # (Lineax cannot differentiate through options; implicit differentiation of the solve needs only op, b).
    operator, precond = _lineax_operators(net, op, _jacobi(jax.lax.stop_gradient(op)))
    # Warm start at y0 = M^{-1} b, the exact solution at a balanced point: it saves one CG step
    # (measured at d = 64, N = 16: 27 -> 26 generic, 7 -> 6 near balance; benchmarks/README.md).
    y0 = jax.lax.stop_gradient(precond.mv(b))
    sol = lx.linear_solve(
        operator, b, solver, options={"preconditioner": precond, "y0": y0}, throw=False
    )
    return sol.value * scale, sol.result


def _lineax_dense(A: Array, B: Array, rhs: Array, solver):
    """Any other Lineax solver, on the dense ``(d_N d_0) x (d_N d_0)`` matrix of the normal operator
    (``A``, ``B``: the full Gram stacks, ``A_N = B_1 = I``, as `partial_grams`)."""
    op = lx.MatrixLinearOperator(_dense(A, B), lx.positive_semidefinite_tag)
    sol = lx.linear_solve(op, rhs.reshape(-1), solver, throw=False)
    return sol.value.reshape(rhs.shape), sol.result


def _checked_lineax(lam: Array, result) -> Array:
    lam = eqx.error_if(
        lam,
        result != lx.RESULTS.successful,
        "fiber gradient: the normal-system solve (dX dX^*) lam = dX(V) failed: it did not converge within "
        "max_steps, or the operator is singular for this solver. Is X (numerically) rank-deficient or very "
        "ill-conditioned? Pass solver=lineax.SVD() for the least-squares projection, or raise max_steps.",
    )
    return eqx.error_if(
        lam,
        ~jnp.all(jnp.isfinite(lam)),
        "fiber gradient: the normal-system solve produced non-finite values (is X rank-deficient? "
        "lineax.Cholesky cannot handle that; use lineax.CG or lineax.SVD).",
    )


# --------------------------------------------------------------------------------------------------
# The default solver: preconditioned CG stopped on the error of the projection (FiberCG)
# --------------------------------------------------------------------------------------------------


class FiberCG(eqx.Module):
    """Preconditioned conjugate gradients for the normal system, stopped on the error of the projection.

    The default solver of `fiber_tangent_projection`, `fiber_normal_projection`, `fiber_l2_gradient`,
    `solve_normal` and the fiber flows (see `default_fiber_solver`). It runs CG matrix-free on
    ``L(lam) = sum_k A_k lam B_k``, preconditioned by the Jacobi preconditioner of ``L`` in the eigenbases
    of ``sum_k A_k`` and ``sum_k B_k`` (`balanced_preconditioner`: the exact inverse at a balanced
    point), from the warm start ``M^{-1} b``.

    **Stopping rule.** CG's preconditioned residual ``gamma_k = <r_k, M^{-1} r_k>`` estimates the squared
    energy-norm error ``<e_k, L e_k> = ||dX^*(e_k)||^2`` of the iterate, which *is* the error of the
    projection ``Pi_N(V) = dX^*(lam)`` (and of ``Pi_T(V) = V - Pi_N(V)``). The estimate is exact up to
    the factor ``1 / lambda_min(M^{-1} L)``: 1 at a balanced point, ``1 + O(||G||)`` near one (where the
    preconditioner is nearly exact), and small in the cases of ``benchmarks/fiber_gradient.py``. CG stops
    at the first iterate with

    ``sqrt(gamma_k) <= max(min(rtol * min(||Pi_T(V)||, ||Pi_N(V)||), atol * ||V||), floor * ||V||)``,

    i.e. both parts of ``V`` to relative accuracy ``rtol``, or the whole to ``atol`` relative to ``||V||``,
    whichever is met first; or when the residual ``||b - L(lam_k)||`` is below ``atol ||b||`` or its own rounding
    level ``4 eps ||L|| ||lam_k||`` (where ``X`` is ill-conditioned, cond ~1e3 and up at depth 64, the energy
    estimate stalls at its rounding floor above the threshold; the projection is then as accurate as float64
    CG makes it). The norms of the parts are estimated along the way, from
    ``||Pi_N(V)||^2 = <lam_k, dX(V)>`` and ``||Pi_T||^2 = ||V||^2 - ||Pi_N||^2``; all down to ``floor``
    (``50 eps``) relative to ``V``, the rounding level of ``V - Pi_N(V)``: at a balanced point
    ``Pi_T(W) = 0``. A solve for a bare right-hand side (`solve_normal`, and the tangent solves of
    implicit differentiation) stops at ``sqrt(gamma_k) <= atol ||dX^*(lam_k)||``.

    Why not ``lineax.CG``: its stopping test is on the residual of ``lam`` elementwise, which is not the
    quantity the fiber flows need; near balance the rule above saves a step or two (docs/theory.md §3, seed 001
    eq. (1.17); the measured steps and costs are on the docs' performance page, docs/performance.md).

    Every ``stabilise_every`` steps the residual is recomputed from its definition (as in ``lineax.CG``),
    so that the recursively updated one cannot drift. The solve fails (an error at run time, also under
    ``jit``) after ``max_steps`` steps, on non-finite values, or when a residual is left in the directions
    the preconditioner treats as null (``X`` numerically but not exactly rank-deficient: an ill-posed
    system; use ``lineax.SVD()``).

    Differentiable: the solution is differentiated implicitly (``jax.custom_jvp``; the tangent solve
    ``L(dlam) = db - dL(lam)`` runs through ``jax.lax.custom_linear_solve``, so reverse mode works too).
    The preconditioner, the warm start and the stopping rule do not enter the derivative.
    """

    rtol: float = eqx.field(static=True, default=1e-10)
    atol: float = eqx.field(static=True, default=1e-12)
    max_steps: int = eqx.field(static=True, default=500)
    stabilise_every: int = eqx.field(static=True, default=10)

    def __check_init__(self):
        if not (self.rtol > 0 and self.atol > 0):
            raise ValueError(
                f"FiberCG: rtol and atol must be positive; got {self.rtol}, {self.atol}."
            )
        if self.max_steps < 1 or self.stabilise_every < 1:
            raise ValueError("FiberCG: max_steps and stabilise_every must be at least 1.")


def _products(net: DLN) -> tuple[Array, Array, Array, Array]:
    """``(P_1, P_in, R_in, R_N)``: ``P_k = W_N ... W_{k+1}`` and ``R_k = Q_k^* = W_1^* ... W_{k-1}^*``.

    ``P_in``, ``R_in`` stack ``k = 2..N-1``, aligned with ``net.inner``: shapes ``(N-2, d_N, m)`` and
    ``(N-2, d_0, m)``; ``P_1`` is ``d_N x m``, ``R_N`` is ``d_0 x m`` (``P_N = Q_1 = I``). Two scans, each
    emitting its carry before multiplying, so that no stack is copied afterwards. ``Q_k^*`` rather than ``Q_k``:
    every product below then has its batched operands in the layout XLA:CPU multiplies fastest (``Q^* Q`` as a
    batched product with a transposed left operand is slower than ``R R^*``; docs/performance.md).
    """
    p1, p_in = jax.lax.scan(lambda p, w: (dot(p, w), p), net.last, net.inner, reverse=True)
    rn, r_in = jax.lax.scan(lambda r, w: (dot(r, ct(w)), r), ct(net.first), net.inner)
    return p1, p_in, r_in, rn


def _operator_data(prods):
    """The normal operator, ready for `_apply_data`: ``(A_1, At, Bh, B_N)``.

    The middle terms ``k = 2..N-1`` are stacked so that ``sum_k A_k lam B_k = At @ reshape(lam @ Bh)``:
    ``At[a, i n + k] = (A_k)_{ai}`` and ``Bh[c, k d_0 + j] = (B_k)_{cj}`` (``n = N - 2`` terms), and ``lam @ Bh``
    reshaped to ``(d_N n, d_0)`` holds ``lam B_k`` in the rows ``i n + k``: two GEMMs instead of ``2 (N - 2)``
    small products (faster than the batched form; docs/performance.md).
    The terms ``A_1 lam`` and ``lam B_N`` (``B_1 = A_N = I``) are added on their own.
    """
    p1, p_in, r_in, rn = prods
    n, dN, d0 = p_in.shape[0], p1.shape[0], rn.shape[0]
    At = jnp.transpose(dot(p_in, ct(p_in)), (1, 2, 0)).reshape(dN, dN * n)
    Bh = jnp.transpose(dot(r_in, ct(r_in)), (1, 0, 2)).reshape(d0, n * d0)
    return dot(p1, ct(p1)), At, Bh, dot(rn, ct(rn))


def _apply_data(op, lam: Array) -> Array:
    A1, At, Bh, BN = op
    out = dot(A1, lam) + dot(lam, BN)
    if At.shape[1]:
        out = out + dot(At, dot(lam, Bh).reshape(At.shape[1], lam.shape[1]))
    return out


def _jacobi(op):
    """Bases ``u``, ``v`` (eigenvectors of ``sum_k A_k``, ``sum_k B_k``) and the inverse diagonal of ``L`` in them.

    The preconditioner of `balanced_preconditioner`, from `_operator_data`.
    """
    A1, At, Bh, BN = op
    dN, d0 = A1.shape[0], BN.shape[0]
    n = At.shape[1] // dN
    A3 = At.reshape(dN, dN, n)  # A3[a, i, k] = (A_k)_{ai}
    B3 = Bh.reshape(d0, n, d0)  # B3[c, k, j] = (B_k)_{cj}
    _, u = jnp.linalg.eigh(jnp.sum(A3, axis=-1) + A1 + jnp.eye(dN, dtype=A1.dtype))
    _, v = jnp.linalg.eigh(jnp.sum(B3, axis=1) + BN + jnp.eye(d0, dtype=BN.dtype))
    # u^* and v^* stored: a product with a transposed left operand is slower (XLA:CPU).
    uh, vh = jax.lax.optimization_barrier((ct(u), ct(v)))
    # diagonals a[i, k] = (u^* A_k u)_ii, b[j, k] = (v^* B_k v)_jj, from (u^* At)[c, i n + k] = (u^* A_k)_{ci}
    # and (v^* Bh)[c, k d_0 + j] = (v^* B_k)_{cj}: one GEMM and one batched matrix-vector product each.
    a_in = jnp.real(dot(jnp.swapaxes(u, 0, 1)[:, None, :], dot(uh, At).reshape(dN, dN, n))[:, 0, :])
    b_in = jnp.real(dot(dot(vh, Bh).reshape(d0, n, d0), jnp.swapaxes(v, 0, 1)[:, :, None])[:, :, 0])
    a1 = jnp.real(jnp.sum(jnp.conj(u) * dot(A1, u), axis=0))
    bn = jnp.real(jnp.sum(jnp.conj(v) * dot(BN, v), axis=0))
    diag = dot(a_in, jnp.swapaxes(b_in, 0, 1)) + a1[:, None] + bn[None, :]
    inv = jnp.where(diag > 8 * jnp.finfo(diag.dtype).eps * jnp.max(diag), 1.0 / diag, 0.0)
    return u, uh, v, vh, inv


def _pre_apply(pre, r: Array) -> Array:
    u, uh, v, vh, inv = pre
    return dot(dot(u, inv * dot(dot(uh, r), v)), vh)


def _pcg(op, b, pre, v2, cfg):
    """CG on ``L(lam) = b`` from ``M^{-1} b``. Returns ``(lam, steps, ok)``; see `FiberCG` for the rule.

    ``v2 = ||V||^2`` selects the projection rule; ``None``: relative to ``||dX^*(lam)||``.
    """
    rtol, atol, floor, max_steps, every, _ = cfg
    matvec = lambda x: _apply_data(op, x)
    pre_mv = lambda r: _pre_apply(pre, r)

    def threshold(y):  # squared: the bound on gamma = <r, M^{-1} r> ~ ||dX^*(error)||^2
        n2 = rdot(y, b)  # ~ ||Pi_N(V)||^2
        if v2 is None:
            return atol**2 * n2
        return jnp.maximum(
            jnp.minimum(rtol**2 * jnp.minimum(v2 - n2, n2), atol**2 * v2), floor**2 * v2
        )

    bb = rdot(b, b)
    # the rounding level of a computed residual b - L(y): ~ eps ||L|| ||y||, ||L|| from the largest diagonal entry of
    # L in the preconditioner's bases (a lower bound of it, and close to it)
    inv = pre[-1]
    eps = jnp.finfo(b.dtype).eps
    l_norm = 1.0 / jnp.min(jnp.where(inv > 0, inv, jnp.inf))

    def done(s):
        # The energy-norm rule, or the residual at atol ||b|| or at its rounding level 4 eps ||L|| ||y||: where X is
        # ill-conditioned the energy estimate stalls at its rounding floor above the threshold, and the residual
        # rule ends the solve at the accuracy float64 allows. gamma = inf (no residual yet) passes neither.
        y, r, _, g, _ = s
        res_floor = jnp.maximum(atol**2 * bb, (4 * eps * l_norm) ** 2 * rdot(y, y))
        return (g <= threshold(y)) | (jnp.isfinite(g) & (rdot(r, r) <= res_floor))

    def step(s):
        y, r, p, g, k = s
        lp = matvec(p)
        alpha = g / rdot(p, lp)
        y = y + alpha * p
        r = r - alpha * lp
        z = pre_mv(r)
        g_new = rdot(r, z)
        return y, r, z + (g_new / g) * p, g_new, k + 1

    def restart(s):
        # The residual from its definition (residual replacement: the direction p is kept; at the start, p = z).
        y, _, p, g, k = s
        r = b - matvec(y)
        z = pre_mv(r)
        return y, r, jnp.where(jnp.isinf(g), z, p), rdot(r, z), k

    def inner(s):
        k0 = s[-1]
        s = restart(s)
        return jax.lax.while_loop(
            lambda s: ~done(s) & (s[-1] < k0 + every) & (s[-1] < max_steps), step, s
        )

    y0 = pre_mv(b)  # the solution at a balanced point
    inf = jnp.asarray(jnp.inf, dtype=jnp.real(b).dtype)
    zero = jnp.zeros_like(b)
    # state: (y, r, p, gamma, steps); gamma = inf until the first residual
    s = (y0, zero, zero, inf, jnp.asarray(0))
    s = jax.lax.while_loop(lambda s: ~done(s) & (s[-1] < max_steps), inner, s)
    y, r, _, _, k = s
    # A residual in the directions the preconditioner leaves alone (inv = 0: null directions of L when X is
    # exactly rank-deficient) means an inconsistent, ill-posed system: X only numerically rank-deficient.
    _, uh, v, _, inv = pre
    rt = dot(dot(uh, r), v)
    null2 = jnp.sum(jnp.where(inv == 0, jnp.abs(rt) ** 2, 0))
    ok = done(s) & (null2 <= (1e3 * floor) ** 2 * rdot(b, b)) & jnp.all(jnp.isfinite(y))
    return y, k, ok


def _float0(x):
    return np.zeros(jnp.shape(x), dtype=jax.dtypes.float0)


@ft.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _fiber_cg_solve(cfg, op, b, pre, v2):
    return _pcg(op, b, pre, v2 if cfg[-1] else None, cfg)


@_fiber_cg_solve.defjvp
def _fiber_cg_solve_jvp(cfg, primals, tangents):
    # Implicit differentiation: L(dlam) = db - dL(lam), solved by the same CG (relative rule) inside
    # custom_linear_solve, whose transpose rule gives reverse mode. L^T = conj L conj (A_k, B_k Hermitian).
    op, b, pre, v2 = primals
    dop, db, _, _ = tangents
    lam, steps, ok = _fiber_cg_solve(cfg, *primals)
    tcfg = cfg[:-1] + (False,)
    rhs = db - jax.jvp(lambda o: _apply_data(o, lam), (op,), (dop,))[1]
    matvec = lambda x: _apply_data(op, x)

    def solve(_, c):
        return _pcg(op, c, pre, None, tcfg)[0]

    if jnp.iscomplexobj(b):
        dlam = jax.lax.custom_linear_solve(
            matvec, rhs, solve, lambda _, c: jnp.conj(solve(None, jnp.conj(c)))
        )
    else:
        dlam = jax.lax.custom_linear_solve(matvec, rhs, solve, symmetric=True)
    return (lam, steps, ok), (dlam, _float0(steps), _float0(ok))


def _fiber_cg(solver: FiberCG, prods, rhs: Array, v2) -> tuple[Array, Array, Array]:
    """``(lam, steps, ok)`` for ``L(lam) = rhs`` with `FiberCG`; ``prods`` from `_products`."""
    op = _operator_data(prods)
    pre = _jacobi(jax.lax.stop_gradient(op))
    floor = 50 * jnp.finfo(rhs.dtype).eps
    cfg = (
        solver.rtol,
        solver.atol,
        float(floor),
        solver.max_steps,
        solver.stabilise_every,
        v2 is not None,
    )
    return _fiber_cg_solve(
        cfg, op, rhs, pre, jnp.zeros((), jnp.real(rhs).dtype) if v2 is None else v2
    )


_FIBER_CG_ERROR = (
    "fiber gradient: the normal-system solve (dX dX^*) lam = dX(V) failed: preconditioned CG did not converge "
    "within max_steps, produced non-finite values, or the system is inconsistent. Is X (numerically) "
    "rank-deficient or very ill-conditioned? Pass solver=lineax.SVD() for the least-squares projection, or "
    "raise max_steps."
)


def _checked(lam, ok):
    return eqx.error_if(lam, ~ok, _FIBER_CG_ERROR)


def _normal_part(net: DLN, V: DLN | None, solver, rhs) -> DLN:
    """``Pi_N(V) = dX^*(lam)`` (``V = None``: ``V = W``), for every solver."""
    require_linear(net, "the fiber geometry")
    if solver is None:
        solver = default_fiber_solver(net.dtype)
    if net.depth == 1:  # dX = identity: Pi_N(V) = V
        if rhs is None:
            rhs = net.first if V is None else V.first
        return net.replace_arrays(rhs)
    if not isinstance(solver, (FiberCG, lx.CG)):
        P, Q = partial_products(net)
        A, B = grams_from_products(net, P, Q)
        if rhs is None:
            rhs = (
                net.depth * dot(P[-1], Q[-1])
                if V is None
                else differential_from_products(net, P, Q, V)
            )
        return adjoint_from_products(net, P, Q, _checked_lineax(*_lineax_dense(A, B, rhs, solver)))
    prods = p1, p_in, r_in, rn = _products(net)
    if rhs is None:
        if V is None:  # V = W: dX(W) = N X, since X is homogeneous of degree N in W
            rhs = net.depth * dot(p1, net.first)
        else:  # dX(V) = sum_k P_k V_k Q_k
            inner = jnp.sum(dot(dot(p_in, V.inner), ct(r_in)), axis=0)
            rhs = dot(p1, V.first) + inner + dot(V.last, ct(rn))
    if isinstance(solver, FiberCG):
        v2 = sum(sq_norm(x) for x in (net if V is None else V).arrays())
        lam, _, ok = _fiber_cg(solver, prods, rhs, v2)
        lam = _checked(lam, ok)
    else:
        lam = _checked_lineax(*_lineax_cg(net, _operator_data(prods), rhs, solver))
    # dX^*(lam)_k = P_k^* lam Q_k^*
    return net.replace_arrays(dot(ct(p1), lam), dot(dot(ct(p_in), lam[None]), r_in), dot(lam, rn))


@eqx.filter_jit
def solve_normal(
    net: DLN, rhs: Inexact[Array, "dN d0"], *, solver: lx.AbstractLinearSolver | None = None
) -> Inexact[Array, "dN d0"]:
    """Solve ``(dX dX^*)(lam) = rhs`` for ``lam`` (docs/theory.md §3). See the module docstring for ``solver``.

    Raises (at run time, also under ``jit``) if the solve fails or returns non-finite values.
    """
    require_linear(net, "the fiber geometry (solve_normal)")
    if solver is None:
        solver = default_fiber_solver(net.dtype)
    if net.depth == 1:  # dX dX^* = identity
        return rhs
    if isinstance(solver, FiberCG):
        lam, _, ok = _fiber_cg(solver, _products(net), rhs, None)
        return _checked(lam, ok)
    if isinstance(solver, lx.CG):
        return _checked_lineax(*_lineax_cg(net, _operator_data(_products(net)), rhs, solver))
    A, B = partial_grams(net)
    return _checked_lineax(*_lineax_dense(A, B, rhs, solver))


@eqx.filter_jit
def fiber_normal_projection(
    net: DLN, V: DLN, *, solver: lx.AbstractLinearSolver | None = None, rhs=None
) -> DLN:
    """``Pi_N(V) = dX^*(lam)``, the orthogonal projection of ``V`` onto ``range dX^*`` (docs/theory.md §3).

    ``rhs``, if given, must equal ``dX(V)`` (a caller that knows it in closed form saves a pass).
    """
    return _normal_part(net, V, solver, rhs)


@eqx.filter_jit
def fiber_tangent_projection(
    net: DLN, V: DLN, *, solver: lx.AbstractLinearSolver | None = None, rhs=None
) -> DLN:
    """``Pi_T(V) = V - dX^*(lam)`` with ``(dX dX^*)(lam) = dX(V)``: the orthogonal projection of ``V`` onto
    the tangent space ``ker dX`` of the fiber through ``net`` (docs/theory.md §3; Lemma 5 of seed 001).
    """
    normal = _normal_part(net, V, solver, rhs)
    return jax.tree_util.tree_map(lambda v, n: v - n, V, normal)


@eqx.filter_jit
def fiber_l2_gradient(net: DLN, *, solver: lx.AbstractLinearSolver | None = None) -> DLN:
    """``Pi_T(W)``, the gradient of ``1/2 ||W||^2`` on the fiber ((1.17), Lemma 5 of seed 001).

    Uses ``dX(W) = N X`` (``X`` is homogeneous of degree ``N``), which saves a pass.
    """
    normal = _normal_part(net, None, solver, None)
    return jax.tree_util.tree_map(jnp.subtract, net, normal)
