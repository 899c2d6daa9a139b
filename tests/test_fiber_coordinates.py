"""Fiber coordinates (Lemma 1 of seed 001; docs/theory.md §10): W = A . C for W on the fiber of a full-rank X, and
fiber points with prescribed moments. References: explicit numpy products and moments."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import explicit_moments, explicit_product, rand_invertible, rand_matrix

import dlnjax


def _apply(A, C):
    """Explicit (1.6): W_1 -> A_1 W_1, W_k -> A_k W_k A_{k-1}^{-1}, W_N -> W_N A_{N-1}^{-1}."""
    A = [None] + list(A) + [None]
    out = []
    for k, w in enumerate(C, start=1):
        v = w if A[k] is None else A[k] @ w
        out.append(v if A[k - 1] is None else v @ np.linalg.inv(A[k - 1]))
    return out


@pytest.mark.parametrize(
    "widths,is_complex",
    [((3, 3, 3, 3), False), ((3, 3, 3, 3), True), ((5, 2, 2, 2), True), ((2, 2, 2, 4), False)],
)
def test_lemma_1_coordinates_reproduce_the_point(widths, is_complex):
    rng = np.random.default_rng(7)
    X = rand_matrix(rng, (widths[-1], widths[0]), is_complex)
    N = len(widths) - 1
    c = dlnjax.fiber_center(jnp.asarray(X), N)
    A_true = [rand_invertible(rng, d, is_complex) for d in widths[1:-1]]
    W = dlnjax.DLN(_apply(A_true, [np.asarray(w) for w in c.layers]))
    A = dlnjax.fiber_coordinates(W)
    back = _apply([np.asarray(a) for a in A], [np.asarray(w) for w in c.layers])
    for b, w in zip(back, W.layers):
        assert np.max(np.abs(b - np.asarray(w))) <= 1e-12 * np.max(np.abs(np.asarray(w)))
    # the coordinates are unique (trivial stabilizer): they are the A we drew
    for a, t in zip(A, A_true):
        assert np.max(np.abs(np.asarray(a) - t)) <= 1e-11 * np.max(np.abs(t))


def test_coordinates_reject_wider_inner_layers():
    W = dlnjax.DLN([np.ones((4, 3)), np.ones((3, 4))])
    with pytest.raises(dlnjax.ShapeError, match="one group orbit"):
        dlnjax.fiber_coordinates(W)


@pytest.mark.parametrize("is_complex", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_fiber_point_with_prescribed_moments(is_complex):
    rng = np.random.default_rng(8)
    X = rand_matrix(rng, (3, 3), is_complex)
    c = [np.asarray(w) for w in dlnjax.fiber_center(jnp.asarray(X), 3).layers]
    target = explicit_moments(_apply([rand_invertible(rng, 3, is_complex) for _ in range(2)], c))
    W = dlnjax.fiber_point_with_moments(jnp.asarray(X), 3, jnp.asarray(np.stack(target)))
    layers = [np.asarray(w) for w in W.layers]
    assert np.max(np.abs(explicit_product(layers) - X)) <= 1e-12 * np.max(np.abs(X))
    G = explicit_moments(layers)
    scale = max(np.max(np.abs(t)) for t in target)
    assert max(np.max(np.abs(g - t)) for g, t in zip(G, target)) <= 1e-10 * scale
