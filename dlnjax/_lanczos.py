"""The largest eigenvalue of a symmetric operator by Lanczos with full reorthogonalization (`dlnjax.sharpness`).

Matrix-free (only products ``v -> H v`` on flat vectors), a fixed number of steps (jit- and vmap-friendly),
robust to breakdown: an invariant Krylov subspace (a low-rank operator, or as many steps as dimensions) is
handled by restarting with a fresh orthogonal vector, never NaN. The operator may live on a subspace (a 0/1
mask applied by ``matvec`` and to the start vectors): once that subspace is exhausted the remaining steps add
nothing, and never a spurious eigenvalue.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox.internal as eqxi
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._numerics import dot

__all__ = ["lanczos_top"]


def _safe_normalize(v: Array) -> Array:
    n = jnp.linalg.norm(v)
    ok = n > 0
    return jnp.where(ok, v / jnp.where(ok, n, 1.0), 0.0)


def _orthogonalizer(fused: bool) -> Callable[[Array, Array], Array]:
    """Classical Gram-Schmidt twice against the rows of ``Q`` ("twice is enough"), for the rows of ``V``.

    ``fused``: written as multiply-and-sum (small sizes: fast under vmap), else as matmuls.
    """

    def orthogonalize(V, Q):
        for _ in range(2):
            if fused:
                C = jnp.sum(V[:, None, :] * Q[None, :, :], axis=-1)
                V = V - jnp.sum(C[:, :, None] * Q[None, :, :], axis=1)
            else:
                V = V - dot(dot(V, Q.T), Q)
        return V

    return orthogonalize


def _tridiagonal_top(alpha, beta, spent, last_beta, zero) -> tuple[Array, Array]:
    """The top eigenvalue of the Lanczos tridiagonal and its residual bound ``|beta_k s_k|``."""
    # A spent step has alpha = beta = 0, a spurious Ritz value 0 (the top one if H is negative definite on the
    # masked space). Move it to a Gershgorin lower bound of the other steps' block: below all its eigenvalues.
    coupling = jnp.abs(beta) + jnp.abs(jnp.concatenate([zero[None], beta[:-1]]))
    floor = jnp.min(jnp.where(spent, jnp.inf, alpha - coupling))
    floor = jnp.where(jnp.all(spent), zero, floor)
    alpha = jnp.where(spent, floor, alpha)
    T = jnp.diag(alpha) + jnp.diag(beta[:-1], 1) + jnp.diag(beta[:-1], -1)
    theta, S = jnp.linalg.eigh(T)
    return theta[-1], jnp.abs(last_beta * S[-1, -1])


def lanczos_top(
    matvec: Callable[[Array], Array], fresh: Array
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """``(theta, error)``: the top Ritz value of ``matvec`` after ``k = fresh.shape[0] - 1`` Lanczos steps.

    **Arguments:**

    - `matvec`: ``v -> H v`` on flat vectors of size ``p``, ``H`` symmetric (restricted to a subspace by the
      caller: then ``matvec`` must vanish off it).
    - `fresh`: ``(k + 1, p)`` random vectors in that subspace: row 0 starts the iteration, row ``j + 1`` is
      the restart candidate after a breakdown at step ``j`` (drawn at once outside the loop: one random call
      keeps compilation short).

    **Returns:** the largest eigenvalue of the tridiagonal (the largest algebraic Ritz value) and the residual
    bound ``|beta_k s_k|`` of the top Ritz pair: some eigenvalue of ``H`` lies within it (exact arithmetic).
    Each step costs one ``matvec`` and ``O(k p)`` for the reorthogonalization.
    """
    k, p = fresh.shape[0] - 1, fresh.shape[1]
    dtype = fresh.dtype
    eps = jnp.finfo(dtype).eps
    orthogonalize = _orthogonalizer((k + 1) * p <= 1 << 16)
    zero = jnp.zeros((), dtype)

    def restart_vector(j, Q):
        r = orthogonalize(fresh[j + 1][None], Q)[0]
        # The live space is exhausted when the candidate is (to round-off) in the span of the basis: then its
        # remainder is ~eps of its norm; otherwise at least ~1/sqrt(p) of it.
        left = jnp.linalg.norm(r) / jnp.maximum(
            jnp.linalg.norm(fresh[j + 1]), jnp.finfo(dtype).tiny
        )
        return jnp.where(left > eps**0.5, _safe_normalize(r), 0.0)

    def body(j, state):
        Q, alpha, beta, anorm, _, spent = state
        q = Q[j]
        spent = spent.at[j].set(
            jnp.all(q == 0)
        )  # the masked space was exhausted at an earlier step
        w = matvec(q)
        anorm = jnp.maximum(anorm, jnp.linalg.norm(w))
        alpha = alpha.at[j].set(jnp.vdot(q, w, precision=jax.lax.Precision.HIGHEST))
        w = orthogonalize(w[None], Q)[0]  # removes alpha_j q_j and beta_{j-1} q_{j-1} from w too
        b = jnp.linalg.norm(w)
        # Breakdown (an invariant subspace was found): continue with a fresh vector orthogonal to the basis and
        # a zero coupling; the Ritz values stay those of H on the enlarged subspace.
        broken = b <= eps**0.75 * anorm
        # Only computed when some run of a vmapped batch breaks down (an unbatched predicate keeps the cond a
        # real branch under vmap): the candidate's orthogonalization was a third of a step's cost.
        r = jax.lax.cond(
            eqxi.unvmap_any(broken),
            lambda _: restart_vector(j, Q),
            lambda _: jnp.zeros_like(w),
            None,
        )
        q_next = jnp.where(broken, r, _safe_normalize(w))
        b = jnp.where(broken, zero, b)
        Q = Q.at[j + 1].set(q_next)
        return Q, alpha, beta.at[j].set(b), anorm, b, spent

    Q = (
        jnp.zeros((k + 1, p), dtype).at[0].set(_safe_normalize(fresh[0]))
    )  # row k: the residual direction
    alpha = jnp.zeros((k,), dtype)
    beta = jnp.zeros((k,), dtype)  # beta[j] couples q_j and q_{j+1}; 0 at a restart
    state = (Q, alpha, beta, zero, zero, jnp.zeros((k,), bool))
    _, alpha, beta, _, last_beta, spent = jax.lax.fori_loop(0, k, body, state)
    return _tridiagonal_top(alpha, beta, spent, last_beta, zero)
