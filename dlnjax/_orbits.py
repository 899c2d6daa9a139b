"""The orbit picture of a fiber: Kempf-Ness and hidden convexity (§3 of Lindsey & Menon, seed 001;
docs/theory.md §10).

The group ``GL(d_1) x ... x GL(d_{N-1})`` acts on weight tuples by (1.6) (`dlnjax.group_action`), preserving
``X``. For a point ``W`` the Kempf-Ness function is

``psi_W(A) = ||A . W||^2``  ((3.4) of seed 001),

and its Schatten-p analogue ``psi_W^p(A) = sum_k ||(A . W)_k||_p`` ((3.8)). Along one-parameter subgroups
``tau -> exp(tau a) . W`` (``a = (a_1, ..., a_{N-1})``, ``a_k`` a ``d_k x d_k`` matrix, an element of the Lie
algebra ``gl``):

- first derivative at the identity (Lemma 2, Remark 18): ``d/dtau psi = 2 sum_k Re Tr(G_k a_k)``; it vanishes on
  skew-Hermitian ``a`` (the unitary directions) and, over Hermitian ``a``, exactly when ``G = 0``: the moment map
  is ``G`` (``2G`` with this normalization of ``psi``);
- second derivative: ``d^2/dtau^2 psi = 2 ||w_a||^2 + 2 <W, ddot w_a>``; for Hermitian ``a`` it is
  ``4 ||w_a||^2 >= 0`` at every point of the orbit, so ``psi`` is convex along every Hermitian direction (the
  hidden convexity of Theorems 13-14 and 19); ``(w_a)_k = a_k W_k - W_k a_{k-1}`` ((2.3), ``a_0 = a_N = 0``);
- at a critical point (``G = 0``) the Hessian of ``a -> psi_W(exp a)`` is ``H(a, a) = 4 ||w_h||^2`` with
  ``h = (a + a^*)/2``: positive semidefinite, and zero exactly on the skew-Hermitian directions plus the Lie
  algebra of the stabilizer of ``W`` (trivial for full-rank ``X`` with inner widths ``rank X``: Theorem 14 (2)).

The Schatten-p version is convex along Hermitian directions as well: ``z -> psi^p(exp(z a) . W)`` is
plurisubharmonic (a norm composed with a holomorphic map) and independent of ``Im z`` (``exp(i theta a)`` is unitary),
hence convex in ``Re z`` (Theorem 19, Azad-Loeb; Theorem 20).
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jaxtyping import Array

from ._errors import ShapeError
from ._geometry import inner
from ._init import group_action
from ._network import DLN, moments, require_linear
from ._numerics import dot, rdot, tree_sq_norm
from .flows._fiber import schatten_regularizer

__all__ = [
    "lie_algebra_shapes",
    "exp_action",
    "orbit_norm",
    "orbit_schatten",
    "orbit_tangent",
    "orbit_derivative",
    "orbit_second_derivative",
    "orbit_hessian",
    "kirwan_ness_rates",
]


def lie_algebra_shapes(net: DLN) -> tuple[tuple[int, int], ...]:
    """The shapes ``(d_k, d_k)``, ``k = 1..N-1``, of an element ``a`` of the Lie algebra of the group (1.6)."""
    return tuple((d, d) for d in net.widths[1:-1])


def _check_algebra(a: Sequence[Array], net: DLN, what: str) -> list[Array]:
    require_linear(net, what)
    shapes = lie_algebra_shapes(net)
    if len(a) != len(shapes):
        raise ShapeError(f"{what}: need N - 1 = {len(shapes)} matrices a_k; got {len(a)}.")
    out = [jnp.asarray(x) for x in a]
    for k, (x, s) in enumerate(zip(out, shapes), start=1):
        if x.shape != s:
            raise ShapeError(f"{what}: a_{k} must have shape {s}; got {x.shape}.")
    return out


def exp_action(a: Sequence[Array], net: DLN, tau=1.0) -> DLN:
    """``exp(tau a) . W``: the one-parameter subgroup through ``a`` acting by (1.6) (``(2.1)`` of seed 001)."""
    a = _check_algebra(a, net, "exp_action")
    if not a:
        return net
    dtype = jnp.result_type(net.dtype, *a)
    return group_action([jsl.expm(tau * x.astype(dtype)) for x in a], net)


def orbit_norm(A: Sequence[Array], net: DLN) -> Array:
    """``psi_W(A) = ||A . W||^2``, the Kempf-Ness function of the orbit of ``W`` ((3.4) of seed 001)."""
    return _sq_norm(group_action(list(A), net))


def _sq_norm(net: DLN) -> Array:
    # ``sum |w|^2`` as ``Re(w conj w)``: smooth (``jnp.abs(w) ** 2`` has a wrong second derivative at ``w = 0``,
    # where ``abs`` is not differentiable, and the centre ``C`` has zero entries).
    return tree_sq_norm(net.arrays())


def orbit_schatten(A: Sequence[Array], net: DLN, p: float) -> Array:
    """``psi^p_W(A) = sum_k ||(A . W)_k||_p``, the Schatten-p version of `orbit_norm` ((3.8), Theorem 20)."""
    return schatten_regularizer(group_action(list(A), net), p)


def orbit_tangent(a: Sequence[Array], net: DLN) -> DLN:
    """``w_a = d/dtau exp(tau a) . W`` at ``tau = 0``: ``(w_a)_k = a_k W_k - W_k a_{k-1}``, ``a_0 = a_N = 0`` ((2.3))."""
    a = _check_algebra(a, net, "orbit_tangent")
    layers = net.layers
    n = len(layers)
    out = []
    for k, w in enumerate(layers):  # layer k + 1
        v = dot(a[k], w) if k < n - 1 else jnp.zeros_like(w)
        if k > 0:
            v = v - dot(w, a[k - 1])
        out.append(v)
    return DLN(out)


def orbit_derivative(a: Sequence[Array], net: DLN) -> Array:
    """``d/dtau psi_W(exp(tau a))`` at ``0`` ``= 2 sum_k Re Tr(G_k a_k)`` (Lemma 2 and Remark 18 of seed 001).

    Computed from the moments ``G_k`` (`dlnjax.moments`); zero on skew-Hermitian ``a`` and, for every Hermitian
    ``a``, exactly when ``W`` is balanced.
    """
    a = _check_algebra(a, net, "orbit_derivative")
    G = moments(net)
    return 2 * sum(rdot(G[k, : x.shape[0], : x.shape[1]], x) for k, x in enumerate(a))


def orbit_second_derivative(a: Sequence[Array], net: DLN) -> Array:
    """``d^2/dtau^2 psi_W(exp(tau a))`` at ``0`` ``= 2 ||w_a||^2 + 2 <W, ddot w_a>`` (docs/theory.md §10).

    ``(ddot w_a)_k = a_k^2 W_k - 2 a_k W_k a_{k-1} + W_k a_{k-1}^2``. For Hermitian ``a`` it equals
    ``4 ||w_a||^2 >= 0``: ``psi`` is convex along Hermitian directions (hidden convexity, Theorem 19).
    """
    w_a = orbit_tangent(a, net)
    w_aa = orbit_tangent(a, w_a)  # (a_k (w_a)_k - (w_a)_k a_{k-1}) = a^2 W - 2 a W a' + W a'^2
    return 2 * _sq_norm(w_a) + 2 * inner(net, w_aa)


def _algebra_from_real(theta: Array, net: DLN, complex_: bool) -> list[Array]:
    shapes = lie_algebra_shapes(net)
    half = sum(s[0] * s[1] for s in shapes)
    out, i = [], 0
    for s in shapes:
        n = s[0] * s[1]
        x = theta[i : i + n].reshape(s)
        if complex_:
            x = x + 1j * theta[half + i : half + i + n].reshape(s)
        i += n
        out.append(x)
    return out


def orbit_hessian(net: DLN) -> tuple[Array, callable]:
    """The Hessian at the identity of ``a -> psi_W(exp a)`` in real coordinates of the Lie algebra.

    Returns ``(H, to_algebra)``: ``H`` is the dense symmetric ``n x n`` matrix (``n = sum_k d_k^2`` real entries,
    twice that for complex weights: the real parts of all ``a_k``, then their imaginary parts, row-major);
    ``to_algebra(theta)`` maps a coordinate vector to the tuple ``a``. ``theta^T H theta`` is
    `orbit_second_derivative` of ``to_algebra(theta)`` (``exp(tau a) = I + tau a + tau^2 a^2 / 2 + ...``), so ``H``
    is built from that quadratic form (no matrix exponential). At a balanced ``W`` (a critical point) ``H`` is
    positive semidefinite and its kernel is the skew-Hermitian directions plus the stabilizer's Lie algebra
    (Theorem 14 (2) of seed 001; docs/theory.md §10). Dense: for small widths.
    """
    require_linear(net, "orbit_hessian")
    complex_ = jnp.iscomplexobj(net.first)
    n = sum(s[0] * s[1] for s in lie_algebra_shapes(net)) * (2 if complex_ else 1)
    to_algebra = lambda theta: _algebra_from_real(theta, net, complex_)
    H = _quadratic_form_matrix(net, n, complex_)
    return H, to_algebra


@eqx.filter_jit
def _quadratic_form_matrix(net: DLN, n: int, complex_: bool) -> Array:
    q = lambda theta: orbit_second_derivative(_algebra_from_real(theta, net, complex_), net)
    H = 0.5 * jax.hessian(q)(jnp.zeros(n, jnp.real(net.first).dtype))
    return 0.5 * (H + H.T)


def kirwan_ness_rates(singular_values: Array, depth: int) -> Array:
    """The decay rates of the Kirwan-Ness flow (1.22) linearized at the balanced orbit (docs/theory.md §10).

    At the centre ``C`` (``W_k W_k^* = W_{k+1}^* W_{k+1} = Lambda^2``, ``lambda_i^2 = sigma_i^(2/N)``) the moments
    obey ``dG_k/dt = -2 dG(w_G)_k + O(G^2)``, entrywise in the singular bases
    ``g_k' = -4 [(lambda_i^2 + lambda_j^2) g_k - lambda_i lambda_j (g_{k-1} + g_{k+1})]``, ``g_0 = g_N = 0``: a
    tridiagonal Toeplitz system in ``k`` with eigenvalues

    ``r_ijm = 4 [lambda_i^2 + lambda_j^2 - 2 lambda_i lambda_j cos(m pi / N)]``, ``m = 1..N-1``.

    Returned as an array of shape ``(r, r, N-1)`` (``r`` singular values; pairs ``(i, j)`` and ``(j, i)`` both, as for
    complex ``G``; a real symmetric ``G`` has the pairs ``i <= j``). The slowest rate is
    ``8 sigma_min^(2/N) (1 - cos(pi / N)) ~ 4 pi^2 sigma_min^(2/N) / N^2``, against the uniform rate 2 of the
    L2 regularizing flow (Theorem 2).
    """
    s = jnp.asarray(singular_values)
    lam2 = s ** (2.0 / depth)
    lam = jnp.sqrt(lam2)
    cos = jnp.cos(jnp.arange(1, depth) * jnp.pi / depth)
    return 4 * (
        (lam2[:, None] + lam2[None, :])[..., None]
        - 2 * (lam[:, None] * lam[None, :])[..., None] * cos
    )
