"""The paper's block-tridiagonal formulation of the fiber gradient (Lemma 5 of Lindsey & Menon, seed 001).

Tangent vectors of the fiber are ``(w_a)_k = a_k W_k - W_k a_{k-1}`` (``a_0 = a_N = 0``) and the
fiber gradient of ``1/2 ||W||^2`` is ``w_b`` with ``H(b) = G`` ((2.19); docs/theory.md §3), where

``H_k(c) = -W_k c_{k-1} W_k^* + c_k W_k W_k^* + W_{k+1}^* W_{k+1} c_k - W_{k+1}^* c_{k+1} W_{k+1}``.

This is an independent route to `fiber_tangent_projection(net, net)`: it works on the
``(N-1)`` blocks ``d_k x d_k`` rather than on the ``d_N x d_0`` normal system, loops in Python
and solves densely. It is meant for cross-checks and small networks, not for speed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import lineax as lx

from ._network import DLN, moments
from ._numerics import ct, dot

__all__ = ["lemma5_operator", "tangent_vector", "fiber_l2_gradient_lemma5"]


def tangent_vector(net: DLN, a: tuple) -> tuple:
    """``w_a``: ``(w_a)_k = a_k W_k - W_k a_{k-1}`` with ``a_0 = a_N = 0`` (seed 001, §2.3), as a tuple of layers."""
    W = net.layers
    n = len(W)
    out = []
    for k in range(n):  # layer W_{k+1}; a[k] is a_{k+1}
        v = jnp.zeros_like(W[k])
        if k < n - 1:
            v = v + dot(a[k], W[k])
        if k > 0:
            v = v - dot(W[k], a[k - 1])
        out.append(v)
    return tuple(out)


def lemma5_operator(net: DLN, c: tuple) -> tuple:
    """``H(c)`` of (2.19)/(2.25) of seed 001 for ``c = (c_1, ..., c_{N-1})``, ``c_k`` of size ``d_k``."""
    W = net.layers
    n = len(W)
    out = []
    for k in range(1, n):  # H_k, with W_k = W[k-1], W_{k+1} = W[k]
        wk, wk1 = W[k - 1], W[k]
        h = dot(c[k - 1], dot(wk, ct(wk))) + dot(dot(ct(wk1), wk1), c[k - 1])
        if k > 1:
            h = h - dot(dot(wk, c[k - 2]), ct(wk))
        if k < n - 1:
            h = h - dot(dot(ct(wk1), c[k]), wk1)
        out.append(h)
    return tuple(out)


def fiber_l2_gradient_lemma5(net: DLN) -> tuple:
    """The fiber gradient of ``1/2 ||W||^2`` as ``w_b`` with ``H(b) = G`` (Lemma 5), as a tuple of layers.

    ``H`` is solved densely by SVD (least squares, so that singular ``H`` -- rectangular widths
    beyond ``rank X`` -- still gives the unique ``w_b``).
    """
    d = net.widths
    if net.depth == 1:  # the fiber is a point
        return (jnp.zeros_like(net.first),)
    G = moments(net)
    g = tuple(G[k, : d[k + 1], : d[k + 1]] for k in range(net.depth - 1))
    struct = tuple(jax.ShapeDtypeStruct(x.shape, x.dtype) for x in g)
    op = lx.FunctionLinearOperator(lambda c: lemma5_operator(net, c), struct)
    b = lx.linear_solve(op, g, lx.SVD()).value
    return tangent_vector(net, b)
