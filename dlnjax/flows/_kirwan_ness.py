from __future__ import annotations

import jax.numpy as jnp

from .._network import DLN, moments, require_linear
from .._numerics import dot
from ._base import AbstractFlow


class KirwanNess(AbstractFlow):
    """The Kirwan-Ness flow ``dW_k/dt = 2 (W_k G_{k-1} - G_k W_k)``, ``G_0 = G_N = 0`` ((1.22) of seed 001).

    It is the Euclidean gradient flow of ``1/2 ||G||^2`` (Theorem 10), tangent to the fiber, so ``X``
    is constant. Along it ``d/dt 1/2 ||G||^2 = -||dW/dt||^2 = -4 ||w_G||^2``, with
    ``(w_G)_k = G_k W_k - W_k G_{k-1}``. Note: (2.31) of seed 001 prints ``-2 ||w_G||^2``; a direct
    computation (tested in ``tests/test_flows.py``) gives ``-4 ||w_G||^2``, since ``dW/dt = -2 w_G``.
    Explicit and cubic: no linear solve.
    """

    def __call__(self, t, net: DLN, args=None) -> DLN:
        if net.depth == 1:
            return net.replace_arrays(jnp.zeros_like(net.first))
        require_linear(net, "KirwanNess (a flow on the fibers of X)")
        G = moments(net)  # G_1 .. G_{N-1}
        v_first = -2 * dot(G[0], net.first)
        v_inner = 2 * (dot(net.inner, G[:-1]) - dot(G[1:], net.inner))
        v_last = 2 * dot(net.last, G[-1])
        return net.replace_arrays(v_first, v_inner, v_last)
