"""Projections onto the tangent and normal spaces of a fiber: the "fiber gradient" (MATH.md §3).

``Pi_T(V) = V - dX^*(lam)`` with ``(dX dX^*)(lam) = dX(V)``. The normal operator
``L(lam) = sum_k A_k lam B_k`` (``A_k = P_k P_k^*``, ``B_k = Q_k^* Q_k``) acts on ``d_N x d_0``
matrices and is Hermitian positive definite when ``dX`` is onto.

Solvers. Any Lineax solver may be passed:

- ``lineax.CG`` (the default, with ``rtol = atol = 1e-12`` in float64, ``1e-5`` in float32) is run
  matrix-free and preconditioned by the Jacobi preconditioner of ``L`` in the eigenbases of
  ``sum_k A_k`` and ``sum_k B_k``. At a balanced point these are the singular bases of ``X`` and ``L`` is exactly diagonal there, with the multipliers
  ``a_ij = sum_m sigma_i^(2(m-1)/N) sigma_j^(2(N-m)/N)`` of MATH.md §3, so the preconditioner is the
  exact inverse and CG converges in one step; nearby it needs a few.
- Any other Lineax solver (``lineax.Cholesky()``, ``lineax.LU()``, ``lineax.SVD()``, ...) gets the
  dense ``(d_N d_0) x (d_N d_0)`` matrix ``sum_k A_k (x) B_k^T``, built in O(N d^4).

Rank-deficient ``X``: ``dX`` is then not onto and ``L`` is singular, but ``dX(V)`` lies in its range.
The projection onto ``ker dX`` is still well defined: the least-squares projection. ``lineax.SVD()``
returns it always (its cutoff decides what counts as rank-deficient). The default CG returns it when
``X`` is exactly rank-deficient (zero singular values in the layers); when ``X`` is only numerically
rank-deficient (singular values ~1e-14 of the largest) the system is ill-posed, CG does not converge and
raises, naming ``lineax.SVD()`` as the remedy. ``lineax.Cholesky()`` raises at any rank-deficient ``X``. A solve that does not converge,
or produces non-finite values, raises an error at run time, also under ``jit``.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Inexact

from ._geometry import (
    adjoint_from_products,
    differential_from_products,
    grams_from_products,
    partial_grams,
    partial_products,
)
from ._network import DLN, _ct, _dot

__all__ = [
    "normal_operator",
    "balanced_preconditioner",
    "solve_normal",
    "fiber_normal_projection",
    "fiber_tangent_projection",
    "default_fiber_solver",
    "fiber_l2_gradient",
]


def default_fiber_solver(dtype) -> lx.CG:
    """Preconditioned CG with tolerances suited to ``dtype`` (1e-12 in double, 1e-5 in single precision)."""
    tol = 1e-12 if jnp.finfo(dtype).bits == 64 else 1e-5
    return lx.CG(rtol=tol, atol=tol, max_steps=500)


def _apply(A: Array, B: Array, lam: Array) -> Array:
    # sum_k A_k lam B_k, using A_N = I and B_1 = I (two matmuls fewer per application).
    n = A.shape[0]
    if n == 1:
        return lam
    middle = jnp.sum(_dot(_dot(A[1:-1], lam[None]), B[1:-1]), axis=0)
    return _dot(A[0], lam) + middle + _dot(lam, B[-1])


def _operator(net: DLN, A: Array, B: Array) -> lx.FunctionLinearOperator:
    struct = jax.ShapeDtypeStruct((net.widths[-1], net.widths[0]), net.dtype)
    return lx.FunctionLinearOperator(lambda lam: _apply(A, B, lam), struct, lx.positive_semidefinite_tag)


def normal_operator(net: DLN) -> lx.FunctionLinearOperator:
    """The normal operator ``(dX dX^*)(lam) = sum_k P_k P_k^* lam Q_k^* Q_k`` (MATH.md §3), as a Lineax operator."""
    return _operator(net, *partial_grams(net))


def _preconditioner(net: DLN, A: Array, B: Array) -> lx.FunctionLinearOperator:
    # Bases: eigenvectors of sum_k A_k and sum_k B_k. At a balanced point every A_k (B_k) is a
    # power of X X^* (X^* X), so these are the singular vectors of X and L is diagonal in them;
    # elsewhere we keep the diagonal of L in these bases. (Measured at d = 64, N = 16, generic
    # point: 27 CG steps, against 61 with the singular vectors of X and 580 unpreconditioned.)
    _, u = jnp.linalg.eigh(jnp.sum(A, axis=0))
    _, v = jnp.linalg.eigh(jnp.sum(B, axis=0))
    a = jnp.real(jnp.sum(jnp.conj(u) * _dot(A, u), axis=-2))  # a[k, i] = (u^* A_k u)_ii
    b = jnp.real(jnp.sum(jnp.conj(v) * _dot(B, v), axis=-2))
    diag = _dot(a.T, b)  # (dN, d0): the diagonal of L in the basis u_i v_j^*
    # Directions with a zero diagonal (exactly rank-deficient X) are null directions of L, not
    # reached by a consistent right-hand side: the pseudo-inverse leaves them alone.
    inv = jnp.where(diag > 8 * jnp.finfo(diag.dtype).eps * jnp.max(diag), 1.0 / diag, 0.0)
    struct = jax.ShapeDtypeStruct((net.widths[-1], net.widths[0]), net.dtype)
    fn = lambda r: _dot(_dot(u, inv * _dot(_dot(_ct(u), r), v)), _ct(v))
    return lx.FunctionLinearOperator(fn, struct, lx.positive_semidefinite_tag)


def balanced_preconditioner(net: DLN) -> lx.FunctionLinearOperator:
    """The Jacobi preconditioner of the normal operator in the eigenbases of ``sum_k A_k``, ``sum_k B_k`` (exact at balance)."""
    A, B = partial_grams(net)
    return _preconditioner(net, A, B)


def _dense(A: Array, B: Array) -> Array:
    dN, d0 = A.shape[-1], B.shape[-1]
    # row-major vec(A lam B) = (A kron B^T) vec(lam)
    return jnp.einsum("kab,kdc->acbd", A, B).reshape(dN * d0, dN * d0)


def _solve(net: DLN, A: Array, B: Array, rhs: Array, solver) -> Array:
    if solver is None:
        solver = default_fiber_solver(net.dtype)
    dN, d0 = net.widths[-1], net.widths[0]
    if isinstance(solver, lx.CG):
        # Scale the right-hand side to max-norm one, so that CG's tolerances are relative.
        scale = jnp.max(jnp.abs(rhs))
        scale = jnp.where(scale > 0, scale, 1.0)
        b = rhs / scale
        op = _operator(net, A, B)
        # The preconditioner and the warm start change how CG gets there, not the solution: outside autodiff
        # (Lineax cannot differentiate through options; implicit differentiation of the solve needs only op, b).
        pre = _preconditioner(net, jax.lax.stop_gradient(A), jax.lax.stop_gradient(B))
        # Warm start at y0 = M^{-1} b, the exact solution at a balanced point: it saves one CG step
        # (measured at d = 64, N = 16: 27 -> 26 generic, 7 -> 6 near balance; benchmarks/README.md).
        y0 = jax.lax.stop_gradient(pre.mv(b))
        sol = lx.linear_solve(op, b, solver, options={"preconditioner": pre, "y0": y0}, throw=False)
        lam = sol.value * scale
    else:
        op = lx.MatrixLinearOperator(_dense(A, B), lx.positive_semidefinite_tag)
        sol = lx.linear_solve(op, rhs.reshape(-1), solver, throw=False)
        lam = sol.value.reshape(dN, d0)
    lam = eqx.error_if(
        lam,
        sol.result != lx.RESULTS.successful,
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


def solve_normal(
    net: DLN, rhs: Inexact[Array, "dN d0"], *, solver: lx.AbstractLinearSolver | None = None
) -> Inexact[Array, "dN d0"]:
    """Solve ``(dX dX^*)(lam) = rhs`` for ``lam`` (MATH.md §3). See the module docstring for ``solver``.

    Raises (at run time, also under ``jit``) if the solve fails or returns non-finite values.
    """
    A, B = partial_grams(net)
    return _solve(net, A, B, rhs, solver)


def _normal_part(net: DLN, V: DLN | None, solver, rhs) -> DLN:
    P, Q = partial_products(net)
    A, B = grams_from_products(net, P, Q)
    if rhs is None:
        if V is None:  # V = W: dX(W) = N X, since X is homogeneous of degree N in W
            X = net.first if net.depth == 1 else _dot(P[-1], Q[-1])
            rhs = net.depth * X
        else:
            rhs = differential_from_products(net, P, Q, V)
    lam = _solve(net, A, B, rhs, solver)
    return adjoint_from_products(net, P, Q, lam)


def fiber_normal_projection(net: DLN, V: DLN, *, solver: lx.AbstractLinearSolver | None = None, rhs=None) -> DLN:
    """``Pi_N(V) = dX^*(lam)``, the orthogonal projection of ``V`` onto ``range dX^*`` (MATH.md §3).

    ``rhs``, if given, must equal ``dX(V)`` (a caller that knows it in closed form saves a pass).
    """
    return _normal_part(net, V, solver, rhs)


def fiber_tangent_projection(net: DLN, V: DLN, *, solver: lx.AbstractLinearSolver | None = None, rhs=None) -> DLN:
    """``Pi_T(V) = V - dX^*(lam)`` with ``(dX dX^*)(lam) = dX(V)``: the orthogonal projection of ``V`` onto
    the tangent space ``ker dX`` of the fiber through ``net`` (MATH.md §3; Lemma 5 of seed 001).
    """
    normal = _normal_part(net, V, solver, rhs)
    return jax.tree_util.tree_map(lambda v, n: v - n, V, normal)


def fiber_l2_gradient(net: DLN, *, solver: lx.AbstractLinearSolver | None = None) -> DLN:
    """``Pi_T(W)``, the gradient of ``1/2 ||W||^2`` on the fiber ((1.17), Lemma 5 of seed 001).

    Uses ``dX(W) = N X`` (``X`` is homogeneous of degree ``N``), which saves a pass.
    """
    normal = _normal_part(net, None, solver, None)
    return jax.tree_util.tree_map(jnp.subtract, net, normal)
