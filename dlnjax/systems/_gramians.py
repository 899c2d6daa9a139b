"""Gramians of a stable continuous-time realization and its Hankel singular values (docs/theory.md §13).

The controllability Gramian ``P`` and the observability Gramian ``Q`` solve the Lyapunov equations

``A P + P A^* + B B^* = 0``,   ``A^* Q + Q A + C^* C = 0``,

and the Hankel singular values are ``sigma_i = sqrt(lambda_i(P Q))``, invariants of the transfer function.

**The Lyapunov solver.** JAX has no Bartels-Stewart (its Schur decomposition is CPU-only and not batched on
every backend), and the Kronecker form ``(I kron A + conj(A) kron I) vec P = -vec(B B^*)`` costs ``O(n^6)``.
`lyapunov` uses Roberts' matrix-sign-function iteration instead (Roberts 1971/1980; Benner & Quintana-Orti 1999):

``A_0 = A, Q_0 = Q;  A_{k+1} = (c A_k + (c A_k)^-1) / 2,  Q_{k+1} = (c Q_k + c^-1 A_k^-1 Q_k A_k^-*) / 2``

with the determinant scaling ``c = |det A_k|^(-1/n)``. For stable ``A``, ``A_k -> -I`` quadratically and
``Q_k -> 2 X``, ``X`` the solution of ``A X + X A^* + Q = 0``. ``O(n^3)`` per step, about 6-12 steps; jit- and
vmap-able (a ``lax.while_loop`` until ``||A_k + I||_1 <= 10 n eps``, at most ``max_steps``). For Hankel singular
values and balanced truncation the Gramians are computed in factored form (`lyapunov_factor`), which keeps the
relative accuracy of the small Hankel singular values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Inexact

from .._numerics import ct, dot
from ._system import LinearSystem

__all__ = [
    "lyapunov",
    "lyapunov_factor",
    "gramians",
    "gramian_factors",
    "hankel_singular_values",
    "h2_norm",
    "psd_factor",
]


def _sign_iteration(A, X0, update, max_steps):
    """Roberts' scaled sign iteration on ``A`` carrying ``X`` (``update(X, A_k^-1, c)``) until ``A_k -> -I``."""
    n = A.shape[-1]
    tol = 10 * n * jnp.finfo(A.dtype).eps
    eye = jnp.eye(n, dtype=A.dtype)

    def cond(state):
        Ak, _, k = state
        err = jnp.max(jnp.sum(jnp.abs(Ak + eye), axis=0))
        return (k < max_steps) & (err > tol)

    def body(state):
        Ak, X, k = state
        inv = jnp.linalg.inv(Ak)
        _, logdet = jnp.linalg.slogdet(Ak)
        c = jnp.exp(-jnp.real(logdet) / n)
        return (c * Ak + inv / c) / 2, update(X, inv, c), k + 1

    _, X, _ = jax.lax.while_loop(cond, body, (A, X0, jnp.array(0)))
    return X


def lyapunov(
    A: Inexact[Array, "n n"], Q: Inexact[Array, "n n"], *, max_steps: int = 50
) -> Inexact[Array, "n n"]:
    """The solution ``X`` of ``A X + X A^* + Q = 0`` for a stable (Hurwitz) ``A``, by the sign-function iteration.

    An unstable ``A`` has no such Gramian; there the iteration does not converge to ``-I`` and the result is not a
    solution: check the residual ``A X + X A^* + Q`` or the stability of ``A`` (``max Re lambda(A) < 0``).
    """
    dtype = jnp.result_type(A, Q)
    update = lambda X, inv, c: (c * X + dot(dot(inv, X), ct(inv)) / c) / 2
    X = _sign_iteration(A.astype(dtype), Q.astype(dtype), update, max_steps) / 2
    return (X + ct(X)) / 2


def _compress(Z):
    """An ``n x n`` factor ``R^*`` with ``R^* R = Z Z^*`` (QR of ``Z^*``, at least ``n`` rows: zero-padded)."""
    n, k = Z.shape
    if k < n:
        Z = jnp.concatenate([Z, jnp.zeros((n, n - k), Z.dtype)], axis=1)
    return ct(jnp.linalg.qr(ct(Z), mode="r"))


def lyapunov_factor(
    A: Inexact[Array, "n n"], B: Inexact[Array, "n m"], *, max_steps: int = 50
) -> Inexact[Array, "n n"]:
    """A square factor ``Z`` of the solution ``X = Z Z^*`` of ``A X + X A^* + B B^* = 0`` (``A`` stable).

    The factored sign iteration (Benner & Quintana-Orti 1999): ``Z_{k+1} = [sqrt(c) Z_k, A_k^-1 Z_k / sqrt(c)] / sqrt(2)``,
    compressed back to ``n`` columns by a QR decomposition each step; ``X = Z_oo Z_oo^* / 2``. ``X`` is never formed,
    so small singular values of ``Z`` keep their relative accuracy (``sqrt`` of a computed ``X`` would lose it).
    """
    dtype = jnp.result_type(A, B)
    update = lambda Z, inv, c: _compress(
        jnp.concatenate([jnp.sqrt(c) * Z, dot(inv, Z) / jnp.sqrt(c)], axis=1) / jnp.sqrt(2.0)
    )
    Z = _sign_iteration(A.astype(dtype), _compress(B.astype(dtype)), update, max_steps)
    return Z / jnp.sqrt(2.0)


def gramians(sys: LinearSystem) -> tuple[Array, Array]:
    """The controllability and observability Gramians ``(P, Q)`` of a stable ``sys`` (`lyapunov`)."""
    A, B, C = sys.arrays()
    P = lyapunov(A, dot(B, ct(B)))
    Q = lyapunov(ct(A), dot(ct(C), C))
    return P, Q


def gramian_factors(sys: LinearSystem) -> tuple[Array, Array]:
    """Square factors ``(L_P, L_Q)`` of the Gramians, ``P = L_P L_P^*``, ``Q = L_Q L_Q^*`` (`lyapunov_factor`)."""
    A, B, C = sys.arrays()
    return lyapunov_factor(A, B), lyapunov_factor(ct(A), ct(C))


def psd_factor(P: Inexact[Array, "n n"]) -> Inexact[Array, "n n"]:
    """A square factor ``L`` with ``P = L L^*`` of a Hermitian PSD matrix (``U sqrt(max(lambda, 0))`` from ``eigh``;
    unlike Cholesky, defined for singular ``P``)."""
    w, U = jnp.linalg.eigh(P)
    return U * jnp.sqrt(jnp.maximum(w, 0.0)).astype(U.dtype)[None, :]


def hankel_singular_values(sys: LinearSystem) -> Array:
    """The Hankel singular values ``sigma_1 >= ... >= sigma_n`` of a stable ``sys``: ``sqrt(lambda(P Q))``, computed
    as the singular values of ``L_Q^* L_P`` (`gramian_factors`)."""
    Lp, Lq = gramian_factors(sys)
    return jnp.linalg.svd(dot(ct(Lq), Lp), compute_uv=False)


def h2_norm(sys: LinearSystem) -> Array:
    """``||H||_2 = sqrt(Tr(C P C^*))`` of a stable ``sys`` (``P`` its controllability Gramian)."""
    A, B, C = sys.arrays()
    P = lyapunov(A, dot(B, ct(B)))
    return jnp.sqrt(jnp.maximum(jnp.real(jnp.trace(dot(dot(C, P), ct(C)))), 0.0))
