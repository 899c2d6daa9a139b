"""The normal operator of a fiber and its balanced preconditioner, built once from the partial products
(docs/theory.md §1, §3).

Three modules, each built from the one before:

- `FiberProducts`: the partial products ``P_k = W_N ... W_{k+1}`` and ``R_k = Q_k^* = W_1^* ... W_{k-1}^*``
  (``Q_k = W_{k-1} ... W_1``, docs/theory.md §1), computed once per network; from them ``dX(V)``, ``dX^*(lam)``,
  the Gram matrices ``A_k = P_k P_k^*``, ``B_k = Q_k^* Q_k`` and the normal operator. The one layout of the
  partial products in the package (`dlnjax.partial_products` and `dlnjax.partial_grams` are read from it).
- `NormalOperator`: ``L(lam) = (dX dX^*)(lam) = sum_k A_k lam B_k`` on ``d_N x d_0`` matrices (docs/theory.md §3),
  Hermitian positive semidefinite (definite when ``dX`` is onto), with an ``mv``.
- `BalancedPreconditioner`: the Jacobi preconditioner of ``L`` in the eigenbases ``u`` of ``sum_k A_k`` and ``v``
  of ``sum_k B_k``, ``M^{-1}(r) = u (inv * (u^* r v)) v^*``, with an ``mv``. At a balanced point those bases are
  the singular bases of ``X`` and ``L`` is diagonal in them, ``L(u_i v_j^*) = a_ij u_i v_j^*`` with
  ``a_ij = sum_m sigma_i^(2(m-1)/N) sigma_j^(2(N-m)/N)`` (docs/theory.md §3), so ``M^{-1} = L^{-1}`` exactly there.

All three are pytrees (Equinox modules): they pass through ``jit``, ``vmap`` and autodiff (the solvers of
``dlnjax/_fiber_solvers.py`` differentiate the solution of ``L(lam) = b`` through the arrays of the operator).
Depth one (``dX`` the identity) is left to the callers: every module here assumes ``N >= 2``.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Inexact

from ._errors import ShapeError
from ._network import DLN
from ._numerics import ct, dot

__all__ = ["FiberProducts", "NormalOperator", "BalancedPreconditioner"]


def _structure(rows: int, cols: int, dtype) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((rows, cols), dtype)


class FiberProducts(eqx.Module):
    """The partial products of a network of depth ``N >= 2``, built once (docs/theory.md §1).

    ``FiberProducts(net)`` runs two scans over ``net.inner``, each emitting its carry before multiplying (so no
    stack is copied afterwards):

    - `p1`: ``P_1 = W_N ... W_2`` (``d_N x m``); `p_in`: ``P_k``, ``k = 2..N-1``, shape ``(N-2, d_N, m)``;
    - `r_in`: ``R_k = Q_k^*``, ``k = 2..N-1``, shape ``(N-2, d_0, m)``; `rn`: ``R_N = Q_N^*`` (``d_0 x m``);

    ``P_N = Q_1 = I``. The stacks are aligned with ``net.inner`` (``W_k`` and ``P_k``, ``R_k`` share the index
    ``k - 2``). ``Q_k^*`` rather than ``Q_k``: every product below then has its batched operands in the layout
    XLA:CPU multiplies fastest (``Q^* Q`` as a batched product with a transposed left operand is slower than
    ``R R^*``; docs/performance.md).
    """

    net: DLN
    p1: Array
    p_in: Array
    r_in: Array
    rn: Array

    def __init__(self, net: DLN):
        if net.depth < 2:
            raise ShapeError(
                "FiberProducts: need depth at least 2 (at depth one dX is the identity)."
            )
        self.net = net
        self.p1, self.p_in = jax.lax.scan(
            lambda p, w: (dot(p, w), p), net.last, net.inner, reverse=True
        )
        self.rn, self.r_in = jax.lax.scan(lambda r, w: (dot(r, ct(w)), r), ct(net.first), net.inner)

    def differential(self, V: DLN) -> Inexact[Array, "dN d0"]:
        """``dX(V) = sum_k P_k V_k Q_k`` (docs/theory.md §1)."""
        inner = jnp.sum(dot(dot(self.p_in, V.inner), ct(self.r_in)), axis=0)
        return dot(self.p1, V.first) + inner + dot(V.last, ct(self.rn))

    def differential_of_weights(self) -> Inexact[Array, "dN d0"]:
        """``dX(W) = N X``: ``X`` is homogeneous of degree ``N`` in ``W`` (one product instead of ``N``)."""
        return self.net.depth * dot(self.p1, self.net.first)

    def adjoint(self, lam: Inexact[Array, "dN d0"]) -> DLN:
        """``dX^*(lam)_k = P_k^* lam Q_k^*`` (docs/theory.md §1), a network of the widths of ``net``."""
        return self.net.replace_arrays(
            dot(ct(self.p1), lam), dot(dot(ct(self.p_in), lam[None]), self.r_in), dot(lam, self.rn)
        )

    def stacks(self) -> tuple[Array, Array]:
        """``P_k`` for ``k = 1..N-1`` and ``Q_k`` for ``k = 2..N``, stacked (the layout of `dlnjax.partial_products`)."""
        P = jnp.concatenate([self.p1[None], self.p_in])
        Q = ct(jnp.concatenate([self.r_in, self.rn[None]]))
        return P, Q

    def grams(self) -> tuple[Array, Array]:
        """``A_k = P_k P_k^*`` and ``B_k = Q_k^* Q_k = R_k R_k^*`` for ``k = 1..N``, stacked (``A_N = B_1 = I``)."""
        eye_n = jnp.eye(self.p1.shape[0], dtype=self.p1.dtype)[None]
        eye_0 = jnp.eye(self.rn.shape[0], dtype=self.rn.dtype)[None]
        A = jnp.concatenate([dot(self.p1, ct(self.p1))[None], dot(self.p_in, ct(self.p_in)), eye_n])
        B = jnp.concatenate([eye_0, dot(self.r_in, ct(self.r_in)), dot(self.rn, ct(self.rn))[None]])
        return A, B

    def normal_operator(self) -> NormalOperator:
        """The normal operator ``dX dX^*`` of the fiber through ``net``."""
        return NormalOperator(self)


class NormalOperator(eqx.Module):
    """The normal operator ``L(lam) = (dX dX^*)(lam) = sum_k A_k lam B_k`` of a fiber (docs/theory.md §3).

    ``A_k = P_k P_k^*`` (``d_N x d_N``), ``B_k = Q_k^* Q_k`` (``d_0 x d_0``), ``k = 1..N``, from `FiberProducts`.
    ``L`` acts on ``d_N x d_0`` matrices; it is Hermitian positive semidefinite for ``<A, B> = Re Tr(A^* B)``, and
    definite iff ``dX`` is onto (``X`` of full rank with inner widths at least ``rank X``).

    Stored for `mv`: `A1` ``= A_1``, `BN` ``= B_N`` (``B_1 = A_N = I``: those terms are ``A_1 lam`` and
    ``lam B_N``) and the middle terms ``k = 2..N-1`` stacked, ``At[a, i n + k] = (A_k)_{ai}`` and
    ``Bh[c, k d_0 + j] = (B_k)_{cj}`` (``n = N - 2``), so that ``sum_k A_k lam B_k = At @ reshape(lam @ Bh)``:
    ``lam @ Bh`` reshaped to ``(d_N n, d_0)`` holds ``lam B_k`` in the rows ``i n + k``. Two GEMMs instead of
    ``2 (N - 2)`` small products (faster than the batched form; docs/performance.md).
    """

    A1: Array
    At: Array
    Bh: Array
    BN: Array

    def __init__(self, products: FiberProducts):
        p1, p_in, r_in, rn = products.p1, products.p_in, products.r_in, products.rn
        n, dN, d0 = p_in.shape[0], p1.shape[0], rn.shape[0]
        self.At = jnp.transpose(dot(p_in, ct(p_in)), (1, 2, 0)).reshape(dN, dN * n)
        self.Bh = jnp.transpose(dot(r_in, ct(r_in)), (1, 0, 2)).reshape(d0, n * d0)
        self.A1 = dot(p1, ct(p1))
        self.BN = dot(rn, ct(rn))

    @property
    def structure(self) -> jax.ShapeDtypeStruct:
        """The ``d_N x d_0`` matrices ``L`` acts on."""
        return _structure(self.A1.shape[0], self.BN.shape[0], self.A1.dtype)

    def mv(self, lam: Inexact[Array, "dN d0"]) -> Inexact[Array, "dN d0"]:
        """``L(lam) = A_1 lam + lam B_N + sum_{k=2}^{N-1} A_k lam B_k``."""
        out = dot(self.A1, lam) + dot(lam, self.BN)
        if self.At.shape[1]:
            out = out + dot(self.At, dot(lam, self.Bh).reshape(self.At.shape[1], lam.shape[1]))
        return out

    def _middle(self) -> tuple[Array, Array]:
        """The middle Grams as ``A3[a, i, k] = (A_k)_{ai}`` and ``B3[c, k, j] = (B_k)_{cj}``, ``k = 2..N-1``."""
        dN, d0 = self.A1.shape[0], self.BN.shape[0]
        n = self.At.shape[1] // dN
        return self.At.reshape(dN, dN, n), self.Bh.reshape(d0, n, d0)

    def as_matrix(self) -> Inexact[Array, "dN*d0 dN*d0"]:
        """The dense ``(d_N d_0) x (d_N d_0)`` matrix ``sum_k A_k (x) B_k^T`` of ``L`` on row-major ``vec(lam)``.

        ``vec(A lam B) = (A (x) B^T) vec(lam)``; O(N d^4) to build.
        """
        dN, d0 = self.A1.shape[0], self.BN.shape[0]
        A3, B3 = self._middle()
        eye_n, eye_0 = jnp.eye(dN, dtype=self.A1.dtype), jnp.eye(d0, dtype=self.BN.dtype)
        dense = (
            jnp.einsum("abk,dkc->acbd", A3, B3, precision=jax.lax.Precision.HIGHEST)
            + jnp.einsum("ab,dc->acbd", self.A1, eye_0, precision=jax.lax.Precision.HIGHEST)
            + jnp.einsum("ab,dc->acbd", eye_n, self.BN, precision=jax.lax.Precision.HIGHEST)
        )
        return dense.reshape(dN * d0, dN * d0)

    def as_lineax(self) -> lx.FunctionLinearOperator:
        """``L`` as a Lineax operator (tagged positive semidefinite)."""
        return lx.FunctionLinearOperator(self.mv, self.structure, lx.positive_semidefinite_tag)

    def preconditioner(self) -> BalancedPreconditioner:
        """The balanced (Jacobi) preconditioner of ``L``; see `BalancedPreconditioner`."""
        return BalancedPreconditioner(self)


class BalancedPreconditioner(eqx.Module):
    """The Jacobi preconditioner of ``L = dX dX^*`` in the eigenbases of ``sum_k A_k`` and ``sum_k B_k``
    (docs/theory.md §3): ``M^{-1}(r) = u (inv * (u^* r v)) v^*``.

    ``u``, ``v``: eigenvectors of ``I + sum_k A_k`` and ``I + sum_k B_k`` (the identity shifts nothing but keeps
    ``eigh`` away from an exactly singular matrix); ``inv[i, j] = 1 / (u_i^* L(u_i v_j^*) v_j)``, the inverse of the
    diagonal of ``L`` in the product basis ``u_i v_j^*``, and 0 where that diagonal is below
    ``8 eps max(diagonal)`` (the null directions of ``L`` when ``X`` is exactly rank-deficient). At a balanced point
    ``L`` is diagonal in this basis, with the multipliers ``a_ij`` of docs/theory.md §3: ``M^{-1} = L^{-1}`` exactly,
    and preconditioned CG converges in one step; nearby in a few.

    ``u^*`` and ``v^*`` are stored as well: a product with a transposed left operand is slower (XLA:CPU).
    """

    u: Array
    uh: Array
    v: Array
    vh: Array
    inv: Array

    def __init__(self, operator: NormalOperator):
        A1, At, Bh, BN = operator.A1, operator.At, operator.Bh, operator.BN
        dN, d0 = A1.shape[0], BN.shape[0]
        n = At.shape[1] // dN
        A3, B3 = operator._middle()
        _, u = jnp.linalg.eigh(jnp.sum(A3, axis=-1) + A1 + jnp.eye(dN, dtype=A1.dtype))
        _, v = jnp.linalg.eigh(jnp.sum(B3, axis=1) + BN + jnp.eye(d0, dtype=BN.dtype))
        uh, vh = jax.lax.optimization_barrier((ct(u), ct(v)))
        # diagonals a[i, k] = (u^* A_k u)_ii, b[j, k] = (v^* B_k v)_jj, from (u^* At)[c, i n + k] = (u^* A_k)_{ci}
        # and (v^* Bh)[c, k d_0 + j] = (v^* B_k)_{cj}: one GEMM and one batched matrix-vector product each.
        a_in = jnp.real(
            dot(jnp.swapaxes(u, 0, 1)[:, None, :], dot(uh, At).reshape(dN, dN, n))[:, 0, :]
        )
        b_in = jnp.real(
            dot(dot(vh, Bh).reshape(d0, n, d0), jnp.swapaxes(v, 0, 1)[:, :, None])[:, :, 0]
        )
        a1 = jnp.real(jnp.sum(jnp.conj(u) * dot(A1, u), axis=0))
        bn = jnp.real(jnp.sum(jnp.conj(v) * dot(BN, v), axis=0))
        diag = dot(a_in, jnp.swapaxes(b_in, 0, 1)) + a1[:, None] + bn[None, :]
        self.inv = jnp.where(diag > 8 * jnp.finfo(diag.dtype).eps * jnp.max(diag), 1.0 / diag, 0.0)
        self.u, self.uh, self.v, self.vh = u, uh, v, vh

    @property
    def structure(self) -> jax.ShapeDtypeStruct:
        return _structure(self.u.shape[0], self.v.shape[0], self.u.dtype)

    def mv(self, r: Inexact[Array, "dN d0"]) -> Inexact[Array, "dN d0"]:
        """``M^{-1}(r) = u (inv * (u^* r v)) v^*``."""
        return dot(dot(self.u, self.inv * dot(dot(self.uh, r), self.v)), self.vh)

    def coordinates(self, r: Inexact[Array, "dN d0"]) -> Inexact[Array, "dN d0"]:
        """``u^* r v``: ``r`` in the product basis ``u_i v_j^*``."""
        return dot(dot(self.uh, r), self.v)

    def operator_norm(self) -> Array:
        """``max_ij L_ij``, the largest diagonal entry of ``L`` in the product basis: a lower bound of ``||L||``,
        close to it (``L`` is nearly diagonal there)."""
        return 1.0 / jnp.min(jnp.where(self.inv > 0, self.inv, jnp.inf))

    def as_lineax(self) -> lx.FunctionLinearOperator:
        """``M^{-1}`` as a Lineax operator (tagged positive semidefinite), e.g. for ``lineax.CG``'s ``preconditioner``."""
        return lx.FunctionLinearOperator(self.mv, self.structure, lx.positive_semidefinite_tag)
