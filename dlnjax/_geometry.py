"""Geometry of the fibers ``F_X = {W : X(W) = X}`` (docs/theory.md §1-3; §2 of Lindsey & Menon, seed 001).

Inner product on weight tuples: ``<A, B> = Re Tr(A^* B)`` summed over layers. ``dX`` is the
differential of the product map, ``dX^*`` its adjoint; the tangent space of the fiber is
``ker dX`` and the normal space ``range dX^*``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Inexact

from ._errors import InputTypeError, UnsupportedError
from ._fiber_operator import FiberProducts
from ._network import DLN, end_to_end, require_linear

__all__ = [
    "product_differential",
    "product_adjoint",
    "network_gradient",
    "network_loss",
    "partial_grams",
    "partial_products",
    "inner",
]


def inner(a: DLN, b: DLN) -> Array:
    """The real inner product ``<A, B> = sum_k Re Tr(A_k^* B_k)`` of two weight tuples (docs/theory.md §1)."""
    return sum(jnp.sum(jnp.real(jnp.conj(x) * y)) for x, y in zip(a.arrays(), b.arrays()))


def product_differential(net: DLN, V: DLN) -> Inexact[Array, "dN d0"]:
    """``dX(V) = sum_k P_k V_k Q_k``: the derivative of ``X = W_N ... W_1`` at ``net`` along ``V`` (docs/theory.md §1)."""
    return jax.jvp(end_to_end, (net,), (V,))[1]


def product_adjoint(net: DLN, Z: Inexact[Array, "dN d0"]) -> DLN:
    """``dX^*(Z)_k = P_k^* Z Q_k^*``: the adjoint of `product_differential` for ``Re Tr(A^* B)`` (docs/theory.md §1).

    (JAX's ``vjp`` of a complex-linear map is its transpose, hence the conjugations.)
    """
    _, vjp = jax.vjp(end_to_end, net)
    (out,) = vjp(jnp.conj(Z))
    return jax.tree_util.tree_map(jnp.conj, out)


def network_loss(loss: Callable, net: DLN) -> Array:
    """The training objective ``E(W)`` of a network: ``loss(X(W))`` for a linear network (docs/theory.md §1).

    For a network with a nonlinear activation there is no end-to-end matrix; the loss must then be a
    data loss with a ``network_loss(net)`` method (`dlnjax.losses.Regression`), which evaluates
    ``f(x) = W_N phi(... phi(W_1 x))`` on its inputs (docs/theory.md §6). The value must be a real scalar.
    """
    if net.activation.is_linear:
        value = loss(end_to_end(net))
    else:
        method = getattr(loss, "network_loss", None)
        if method is None:
            raise UnsupportedError(
                f"a network with activation {net.activation.name!r} has no end-to-end matrix, so the loss must "
                "be a data loss with a network_loss(net) method, such as dlnjax.losses.Regression; "
                f"got {type(loss).__name__}."
            )
        value = method(net)
    if jnp.ndim(value) != 0 or jnp.iscomplexobj(value):
        raise InputTypeError(
            f"loss must map X to a real scalar; got {jnp.result_type(value)} of shape {jnp.shape(value)}."
        )
    return value


def network_gradient(loss: Callable[[Array], Array], net: DLN) -> DLN:
    """``grad_W E(X(W))``, with ``grad_{W_k} E = P_k^* grad E(X) Q_k^*`` (docs/theory.md §1; (1.2) of seed 001).

    The gradient is for the real inner product ``Re Tr(A^* B)``: for complex weights it is the
    complex conjugate of what ``jax.grad`` returns, so that ``E(W - eps g)`` decreases. For a
    network with a nonlinear activation, the gradient of `network_loss`.
    """
    g = jax.grad(lambda n: network_loss(loss, n))(net)
    return jax.tree_util.tree_map(jnp.conj, g)


def partial_products(net: DLN) -> tuple[Array, Array]:
    """The partial products ``P_k = W_N ... W_{k+1}`` for ``k = 1..N-1`` and ``Q_k = W_{k-1} ... W_1`` for ``k = 2..N``.

    Stacked: ``P`` has shape ``(N-1, d_N, m)`` and ``Q`` shape ``(N-1, m, d_0)`` (docs/theory.md §1;
    ``P_N = I`` and ``Q_1 = I`` are left out). Two scans, O(N d^3) (`FiberProducts`, which the fiber solves
    use, keeps ``Q_k^*``). Depth one: empty stacks.
    """
    require_linear(net, "the fiber geometry (partial_products)")
    if net.depth == 1:
        dN, d0 = net.widths[-1], net.widths[0]
        return jnp.zeros((0, dN, dN), net.dtype), jnp.zeros((0, d0, d0), net.dtype)
    return FiberProducts(net).stacks()


def partial_grams(net: DLN) -> tuple[Array, Array]:
    """The Gram matrices ``A_k = P_k P_k^*`` (``d_N x d_N``) and ``B_k = Q_k^* Q_k`` (``d_0 x d_0``), ``k = 1..N``.

    ``P_k = W_N ... W_{k+1}`` and ``Q_k = W_{k-1} ... W_1`` (docs/theory.md §1), so the normal operator of
    the fiber is ``(dX dX^*)(lam) = sum_k A_k lam B_k`` (docs/theory.md §3). Stacked along the leading axis.
    """
    require_linear(net, "the fiber geometry (partial_grams)")
    if net.depth == 1:
        dN, d0 = net.widths[-1], net.widths[0]
        return jnp.eye(dN, dtype=net.dtype)[None], jnp.eye(d0, dtype=net.dtype)[None]
    return FiberProducts(net).grams()
