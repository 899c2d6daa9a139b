"""Coordinates on a fiber: the constructive Lemma 1 of Lindsey & Menon (seed 001; docs/theory.md §10).

For ``X`` of full rank ``r = min(d_N, d_0)`` and inner widths ``r``, the fiber ``F_X`` is one orbit of the action
(1.6): every ``W`` on it is ``A . C`` with ``C = fiber_center(X, N)``. `fiber_coordinates` computes that ``A``;
`fiber_point_with_moments` uses the coordinates ``A = exp(h)``, ``h`` Hermitian, to find a point of the fiber with
prescribed moments ``G`` (a point of the slice ``F_X ∩ M_G`` of Figure 1.2).
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, Inexact

from ._errors import OptionError, ShapeError
from ._init import fiber_center
from ._network import DLN, end_to_end, moments, require_linear
from ._numerics import ct, dot
from ._orbits import exp_action

__all__ = ["fiber_coordinates", "fiber_point_with_moments"]


def _check_orbit_widths(widths: Sequence[int], what: str) -> int:
    r = min(widths[0], widths[-1])
    if any(d != r for d in widths[1:-1]):
        raise ShapeError(
            f"{what}: the fiber is one group orbit (Lemma 1 of seed 001) only for inner widths equal to "
            f"min(d_0, d_N) = {r} (and X of full rank); got widths {tuple(widths)}. With wider inner layers the "
            "fiber is a union of orbits (Remark 4)."
        )
    return r


def fiber_coordinates(net: DLN) -> tuple[Array, ...]:
    """The ``A = (A_1, ..., A_{N-1})`` with ``group_action(A, fiber_center(X, N)) = W`` (Lemma 1 of seed 001).

    ``X = X(W)`` must have full rank ``r = min(d_N, d_0)`` and the inner widths must equal ``r`` (``ShapeError``
    otherwise; a rank-deficient ``X`` gives non-finite entries). With ``C = fiber_center(X, N)``
    (``C_1 = Lambda V^*``, ``C_k = Lambda``): ``A_1 = W_1 C_1^+`` and ``A_k = W_k A_{k-1} Lambda^{-1}``,
    ``k = 2..N-1`` (only ``Lambda`` is inverted; ``C_1^+ = C_1^* Lambda^{-2}``). The seed's proof writes
    ``A_{N-1} = Q_N Lambda W_N^{-1}``, which inverts the order: ``C_N A_{N-1}^{-1} = W_N`` gives
    ``A_{N-1} = W_N^{-1} Q_N Lambda`` (docs/theory.md §9).
    """
    require_linear(net, "fiber_coordinates")
    if net.depth == 1:
        return ()
    _check_orbit_widths(net.widths, "fiber_coordinates")
    c = fiber_center(end_to_end(net), net.depth)
    c1 = c.layers[0]
    lam2 = jnp.real(jnp.sum(c1 * jnp.conj(c1), axis=1))  # diag(C_1 C_1^*) = Lambda^2
    lam = jnp.sqrt(lam2)
    layers = net.layers
    A = [dot(layers[0], ct(c1)) / lam2[None, :].astype(c1.dtype)]
    for w in layers[1:-1]:
        A.append(dot(w, A[-1]) / lam[None, :].astype(c1.dtype))
    return tuple(A)


def _hermitian(theta: Array, d: int, n: int, complex_: bool) -> list[Array]:
    size = d * d
    out = []
    for k in range(n):
        b = theta[k * size : (k + 1) * size].reshape(d, d)
        if complex_:
            off = n * size
            b = b + 1j * theta[off + k * size : off + (k + 1) * size].reshape(d, d)
        out.append(0.5 * (b + ct(b)))
    return out


def fiber_point_with_moments(
    X: Inexact[Array, "dN d0"],
    depth: int,
    G: Inexact[Array, "N-1 r r"],
    *,
    steps: int = 4,
    rtol: float = 1e-12,
    atol: float = 1e-12,
    max_steps: int = 256,
) -> DLN:
    """A point ``W = exp(h) . C`` of the fiber of ``X`` with moments ``G(W) = G`` (a point of ``F_X ∩ M_G``).

    ``h = (h_1, ..., h_{N-1})`` Hermitian, ``C = fiber_center(X, depth)``: the fiber coordinates of Lemma 1
    restricted to their non-compact part (the unitary part ``exp(skew)`` only conjugates the moments). ``h`` solves
    the least-squares problem ``min ||G(exp(h) . C) - G||^2`` by Levenberg-Marquardt (Optimistix), along the
    homotopy ``G_s = (s / steps) G``, ``s = 1..steps``, from ``h = 0`` (``G(C) = 0``). ``G`` must be attainable
    (e.g. the moments of another point of the fiber); where the solve ends with moments off ``G`` by more than
    ``1e3 sqrt(eps) (1 + max |G|)`` (``G`` unattainable, or a stalled solve) it raises at run time
    (``eqx.error_if``). Widths: ``min(d_0, d_N)`` inside, as `fiber_coordinates`.
    """
    c = fiber_center(X, depth)
    if depth == 1:
        return c
    r = _check_orbit_widths(c.widths, "fiber_point_with_moments")
    G = jnp.asarray(G)
    if G.shape != (depth - 1, r, r):
        raise ShapeError(
            f"fiber_point_with_moments: G must have shape {(depth - 1, r, r)}; got {G.shape}."
        )
    if steps < 1:
        raise OptionError(f"fiber_point_with_moments: steps must be >= 1; got {steps}.")
    complex_ = jnp.iscomplexobj(c.first) or jnp.iscomplexobj(G)
    dtype = jnp.result_type(c.dtype, G.dtype)
    n = depth - 1
    point = lambda theta: exp_action(_hermitian(theta, r, n, complex_), c)

    def residual(theta, target):
        diff = (moments(point(theta)) - target).reshape(-1)
        return jnp.concatenate([jnp.real(diff), jnp.imag(diff)]) if complex_ else diff

    solver = optx.LevenbergMarquardt(rtol=rtol, atol=atol)
    theta = jnp.zeros(n * r * r * (2 if complex_ else 1), jnp.real(jnp.zeros((), dtype)).dtype)
    for s in range(1, steps + 1):
        target = (s / steps) * G.astype(dtype)
        theta = optx.least_squares(residual, solver, theta, args=target, max_steps=max_steps).value
    W = point(theta)
    miss = jnp.max(jnp.abs(moments(W) - G.astype(dtype)))
    bound = 1e3 * jnp.finfo(dtype).eps ** 0.5 * (1.0 + jnp.max(jnp.abs(G)))
    return eqx.error_if(
        W,
        ~(miss <= bound),
        "fiber_point_with_moments: no point of the fiber with these moments was found (G unattainable, or the "
        "least-squares solve stalled; try more homotopy steps).",
    )
