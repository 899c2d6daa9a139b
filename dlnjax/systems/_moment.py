"""The moment map of realizations and the tangent projection onto the orbit (docs/theory.md §13).

The unitary group ``U(n)`` acts on realizations by (1.10) of Lindsey & Menon (seed 001) with ``M`` unitary, keeping
``f(x) = 1/2 (||A||^2 + ||B||^2 + ||C||^2)``. Differentiating ``f(e^(t xi) . x)`` at ``t = 0`` gives
``<xi . x, x> = Re Tr(xi mu)`` with the moment map

``mu(A, B, C) = [A, A^*] + B B^* - C^* C = A A^* - A^* A + B B^* - C^* C``   (Hermitian, ``n x n``),

just as ``G_1 = W_1 W_1^* - W_2^* W_2`` arises for the network ((1.11)-(1.13)); with ``A = 0`` the realization is the
depth-two network ``W_1 = B, W_2 = C`` and ``mu = G_1``. Since ``x -> xi . x`` is self-adjoint for Hermitian ``xi``,
``d mu(V) = 2 Herm(orbit_tangent_adjoint(x, V))``: so ``mu`` is conserved by the gradient flow of any loss of the
transfer function (its gradient is normal to the orbit), and ``mu' = -2 kappa mu`` along the regularized flow.

The tangent space of the orbit is ``{xi . x}``; the orthogonal projection of ``V`` onto it is ``xi . x`` with
``N(xi) = orbit_tangent_adjoint(x, V)``, where ``N = L^* L`` (``L xi = xi . x``) is

``N(xi) = xi (A A^* + B B^*) - A xi A^* - A^* xi A + (A^* A + C^* C) xi``,

a Hermitian positive semidefinite operator on ``n x n`` matrices (the analogue of the operator ``H`` of Lemma 5),
definite when the Lie-algebra stabilizer of ``x`` is trivial (e.g. a minimal realization). For ``V = x`` the
right-hand side is ``mu``: the regularizing flow ``x' = -Pi_T(x)`` is ``-xi . x`` with ``N(xi) = mu``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Inexact

from .._numerics import ct, dot
from ._system import LinearSystem, orbit_tangent, orbit_tangent_adjoint

DENSE_MAX = 20  # the largest n solved densely by default (dense measured faster through n = 20: benchmarks/systems.py)
_ITERATIVE = tuple(
    c for c in (lx.CG, lx.GMRES, lx.BiCGStab, getattr(lx, "NormalCG", None)) if isinstance(c, type)
)

__all__ = [
    "moment_map",
    "orbit_normal_operator",
    "orbit_normal_matrix",
    "orbit_preconditioner",
    "orbit_solve",
    "orbit_tangent_projection",
]


def moment_map(sys: LinearSystem) -> Inexact[Array, "*batch n n"]:
    """``mu = A A^* - A^* A + B B^* - C^* C``: the moment map of the unitary action on realizations (docs/theory.md §13).

    Zero exactly at the norm-balanced realizations (the critical points, and minima, of
    ``||M A M^-1||^2 + ||M B||^2 + ||C M^-1||^2`` over ``M``; §1.3.1 of seed 001). With ``A = 0`` it is the moment
    ``G_1 = W_1 W_1^* - W_2^* W_2`` of the network ``(W_1, W_2) = (B, C)``.
    """
    A, B, C = sys.arrays()
    return dot(A, ct(A)) - dot(ct(A), A) + dot(B, ct(B)) - dot(ct(C), C)


def orbit_normal_operator(sys: LinearSystem, xi: Inexact[Array, "n n"]) -> Inexact[Array, "n n"]:
    """``N(xi) = L^*(L xi)`` with ``L xi = xi . (A, B, C)`` (`dlnjax.systems.orbit_tangent`): the normal operator of
    the orbit's tangent space, ``xi (A A^* + B B^*) - A xi A^* - A^* xi A + (A^* A + C^* C) xi``."""
    A, B, C = sys.arrays()
    right = dot(A, ct(A)) + dot(B, ct(B))
    left = dot(ct(A), A) + dot(ct(C), C)
    return dot(xi, right) - dot(dot(A, xi), ct(A)) - dot(dot(ct(A), xi), A) + dot(left, xi)


def orbit_normal_matrix(sys: LinearSystem) -> Inexact[Array, "n2 n2"]:
    """The ``n^2 x n^2`` matrix of `orbit_normal_operator` acting on row-major ``vec(xi)`` (Hermitian PSD).

    ``vec(L xi R) = (L kron R^T) vec(xi)`` row-major, so it is
    ``I kron (A A^* + B B^*)^T - A kron conj(A) - A^* kron A^T + (A^* A + C^* C) kron I``.
    """
    A, B, C = sys.arrays()
    eye = jnp.eye(sys.n, dtype=A.dtype)
    right = dot(A, ct(A)) + dot(B, ct(B))
    left = dot(ct(A), A) + dot(ct(C), C)
    return (
        jnp.kron(eye, right.T)
        - jnp.kron(A, jnp.conj(A))
        - jnp.kron(ct(A), A.T)
        + jnp.kron(left, eye)
    )


def orbit_solve(
    sys: LinearSystem,
    rhs: Inexact[Array, "n n"],
    solver: lx.AbstractLinearSolver | None = None,
    *,
    throw: bool = True,
) -> Inexact[Array, "n n"]:
    """Solve ``N(xi) = rhs`` (`orbit_normal_operator`) with Lineax.

    ``solver=None`` (the default): for ``n <= DENSE_MAX = 20`` Cholesky of the dense ``n^2 x n^2`` matrix
    (`orbit_normal_matrix`), ``O(n^6)`` (measured faster than the preconditioned CG through ``n = 20``: 1.6 against
    4.5 ms at ``n = 20``, benchmarks/README.md); above, ``lineax.CG`` at ``rtol = 1e3 eps`` preconditioned by
    `orbit_preconditioner`. A direct Lineax solver
    (``lineax.Cholesky()``, ``lineax.LU()``, ...) is applied to the dense matrix, an iterative one (CG, GMRES,
    BiCGStab, NormalCG) matrix-free to `orbit_normal_operator`, ``O(n^3)`` per iteration; ``lineax.CG`` is
    preconditioned by `orbit_preconditioner` (timings: ``benchmarks/systems.py``, benchmarks/README.md).
    ``N`` is singular when ``x`` has a nontrivial Lie-algebra stabilizer (never for a minimal realization); there
    the dense Cholesky gives non-finite values (``throw=False``) or raises (``throw=True``).
    """
    n = sys.n
    if solver is None:
        if n <= DENSE_MAX:
            solver = lx.Cholesky()
        else:
            tol = 1e3 * jnp.finfo(rhs.dtype).eps
            solver = lx.CG(rtol=tol, atol=tol * jnp.max(jnp.abs(rhs)), max_steps=10 * n * n)
    if not isinstance(solver, _ITERATIVE):
        op = lx.MatrixLinearOperator(orbit_normal_matrix(sys), lx.positive_semidefinite_tag)
        return lx.linear_solve(op, rhs.reshape(-1), solver, throw=throw).value.reshape(n, n)
    struct = jax.ShapeDtypeStruct((n, n), rhs.dtype)
    op = lx.FunctionLinearOperator(
        lambda xi: orbit_normal_operator(sys, xi),
        struct,
        (lx.symmetric_tag, lx.positive_semidefinite_tag),
    )
    options = {"preconditioner": orbit_preconditioner(sys)} if isinstance(solver, lx.CG) else {}
    return lx.linear_solve(op, rhs, solver, options=options, throw=throw).value


def orbit_preconditioner(sys: LinearSystem) -> lx.FunctionLinearOperator:
    """The inverse of the Sylvester part ``xi -> xi R + L xi`` of `orbit_normal_operator` (``R = A A^* + B B^*``,
    ``L = A^* A + C^* C``; the cross terms ``A xi A^* + A^* xi A`` dropped), as a Lineax operator: with
    ``R = U diag(r) U^*``, ``L = V diag(l) V^*`` it maps ``Y`` to ``V [(V^* Y U)_ij / (l_i + r_j)] U^*``, ``O(n^3)``.
    `orbit_solve` preconditions ``lineax.CG`` with it.
    """
    A, B, C = sys.arrays()
    r, U = jnp.linalg.eigh(dot(A, ct(A)) + dot(B, ct(B)))
    l, V = jnp.linalg.eigh(dot(ct(A), A) + dot(ct(C), C))
    denom = (l[:, None] + r[None, :]).astype(A.dtype)
    apply = lambda Y: dot(dot(V, dot(dot(ct(V), Y), U) / denom), ct(U))
    struct = jax.ShapeDtypeStruct((sys.n, sys.n), A.dtype)
    return lx.FunctionLinearOperator(
        apply, struct, (lx.symmetric_tag, lx.positive_semidefinite_tag)
    )


def orbit_tangent_projection(
    sys: LinearSystem,
    V: LinearSystem,
    solver: lx.AbstractLinearSolver | None = None,
    *,
    throw: bool = True,
) -> LinearSystem:
    """``Pi_T(V)``: the orthogonal projection (induced metric) of ``V`` onto the tangent space of the orbit at ``sys``.

    ``xi . x`` with ``N(xi) = L^*(V)`` (`orbit_solve`; ``solver``, ``throw`` as there). For ``V = sys`` this is the
    regularizing direction: ``L^*(x) = mu``.
    """
    xi = orbit_solve(sys, orbit_tangent_adjoint(sys, V), solver, throw=throw)
    return orbit_tangent(sys, xi)
