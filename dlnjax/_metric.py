"""The Riemannian geometry of the end-to-end matrix: the operator ``A_N(X)``, its metric and volume (docs/theory.md §5; seed 003).

On the balanced variety the gradient flow of ``E(X(W))`` pushes forward to ``dX/dt = -A_N(X)[grad E(X)]`` with

    A_N(X) Z = sum_{m=1..N} (X X^*)^((m-1)/N) Z (X^* X)^((N-m)/N)        (M^0 = I)

(Arora, Cohen & Hazan 2018; Cohen, Menon & Veraszto, seed 003). ``A_N(X)`` is self-adjoint and positive
semi-definite for ``<A, B> = Re Tr(A^* B)``; the metric of seed 003 is ``g^N_X(Z, Z) = <A_N(X)^{-1} Z, Z>``.
Infinite depth: ``A_N / N -> A_inf`` (time rescaled by ``N``).

Spectral form. With ``X X^* = U diag(lam) U^*`` (``d_N x d_N``) and ``X^* X = V diag(mu) V^*`` (``d_0 x d_0``),
``A_N(X) Z = U (a ∘ (U^* Z V)) V^*`` with the multiplier (docs/theory.md §3)

    a_N(x, y) = sum_{m=1..N} x^((m-1)/N) y^((N-m)/N) = (x - y) / (x^(1/N) - y^(1/N)),
    a_inf(x, y) = int_0^1 x^s y^(1-s) ds = (x - y) / (ln x - ln y)       (logarithmic mean),

evaluated at ``x = lam_i`` (``i = 1..d_N``), ``y = mu_j`` (``j = 1..d_0``). For rectangular ``X`` the larger Gram
matrix has ``|d_N - d_0|`` structural zero eigenvalues (set exactly to zero here); with ``0^0 = 1``,
``a_N(0, y) = y^((N-1)/N)`` for ``N >= 2`` (``a_1 = 1``), ``a_N(0, 0) = 0`` and ``a_inf(x, 0) = 0``.
Hence ``A_N(X)`` (finite ``N``) is singular exactly when ``ker X`` and ``ker X^*`` are both nontrivial, while
``A_inf(X)`` is singular at every ``X`` with a zero singular value, **including every rectangular X**: at
infinite depth, ``X`` cannot move in the directions ``u_i v_j^*`` with ``u_i ∈ ker X^*`` or ``v_j ∈ ker X``.

Cost. One SVD of ``X`` per evaluation, whatever ``N``; ``a`` is evaluated in closed form with a Taylor branch
where its arguments (nearly) coincide. (The SVD's cost on a small CPU depends on the BLAS threads: see
docs/performance.md.)

Accuracy. ``lam = sigma^2`` from the SVD carries absolute errors ~ ``eps ||X||_2 sigma``. Singular values below
``max(d_N, d_0) eps ||X||_2`` cannot be resolved and are set to exactly 0, like exact zeros, which would otherwise
come out as ~1e-16 (and ``(1e-16)^(1/N)`` is not small). (An earlier version took eigenvalues of the Gram
matrices, whose noise floor ``eps ||X||_2^2`` zeroed singular values below ~1e-8 ``||X||_2``; at infinite depth,
where ``a_inf(x, y)`` vanishes only logarithmically in ``y``, that froze small singular values of trajectories
started from tiny initializations.) Near a zero singular value the operator is intrinsically ill-conditioned at large
``N`` (``x -> x^(1/N)`` is steep at 0): a perturbation ``delta`` of ``X`` changes ``A_N(X)`` by up to
``~ delta^(2/N)``.

Differentiation. `end_to_end_operator` has a custom JVP (Daleckii–Krein: divided differences of ``a`` between
eigenvalues, derivatives where they coincide), so forward and reverse derivatives are finite and correct also at
repeated singular values and for rectangular ``X`` (where ``X X^*`` or ``X^* X`` has a repeated zero eigenvalue).
At a rank-deficient ``X`` beyond that (a zero singular value of a square ``X``) ``A_N`` is not differentiable for
``N >= 2`` (it involves ``sigma^(2/N)``); there the derivative returned is the one along rank-preserving
directions (the infinite derivatives of ``a`` at 0 are set to 0).
"""

from __future__ import annotations

import math
import operator
from functools import partial

import jax
import jax.numpy as jnp
from jaxtyping import Array, Inexact, Real

from ._errors import InputTypeError, OptionError, ShapeError
from ._network import DLN
from ._numerics import ct, dot

__all__ = [
    "end_to_end_operator",
    "end_to_end_operator_inverse",
    "end_to_end_metric",
    "log_volume_density",
    "end_to_end_multiplier",
]

# Below this |ln x - ln y| the multiplier is evaluated by its Taylor series (truncation error ~ L^4/120 <= 1e-18).
_TAYLOR = 1e-4


def check_depth(depth, who: str):
    """Return ``depth`` as an ``int >= 1`` or ``math.inf``; raise a clear ``ValueError`` otherwise."""
    if isinstance(depth, bool):
        raise OptionError(f"{who}: depth must be a positive integer or math.inf; got {depth!r}.")
    if isinstance(depth, float) and depth == math.inf:
        return math.inf
    try:
        n = operator.index(depth)
    except TypeError:
        raise OptionError(
            f"{who}: depth must be a positive integer or math.inf; got {depth!r}."
        ) from None
    if n < 1:
        raise OptionError(f"{who}: depth must be a positive integer or math.inf; got {n}.")
    return n


def check_matrix(X, who: str) -> Array:
    if isinstance(X, DLN):
        raise InputTypeError(
            f"{who}: expected the end-to-end matrix X (a 2-D array), got a DLN; use dlnjax.end_to_end(net)."
        )
    X = jnp.asarray(X)
    if X.ndim != 2:
        raise ShapeError(f"{who}: X must be a 2-D matrix of shape (d_N, d_0); got shape {X.shape}.")
    if not jnp.issubdtype(X.dtype, jnp.inexact):
        X = X.astype(float)
    return X


def _check_direction(Z, X: Array, who: str, name: str = "Z") -> Array:
    Z = jnp.asarray(Z)
    if Z.shape != X.shape:
        raise ShapeError(f"{who}: {name} must have the shape of X, {X.shape}; got {Z.shape}.")
    return Z


# --------------------------------------------------------------------------------------------------
# The multiplier a(x, y)
# --------------------------------------------------------------------------------------------------


def end_to_end_multiplier(x: Real[Array, ...], y: Real[Array, ...], depth) -> Real[Array, ...]:
    """The multiplier ``a_N(x, y) = sum_{m=1..N} x^((m-1)/N) y^((N-m)/N)`` (``0^0 = 1``), or for
    ``depth=math.inf`` the logarithmic mean ``a_inf(x, y) = (x - y)/(ln x - ln y)`` (docs/theory.md §3, §5; seed 003).

    ``x, y >= 0`` are eigenvalues of ``X X^*`` and ``X^* X`` (squared singular values); broadcasts. Closed form
    ``a_N = p^((N-1)/N) expm1(L)/expm1(L/N)``, ``a_inf = p expm1(L)/L`` with ``p = max(x, y)``,
    ``L = ln(min/max) <= 0``, and a Taylor series for ``|L| < 1e-4``: cost independent of ``N``, smooth at
    ``x = y`` (derivatives included). At 0: ``a_N(x, 0) = x^((N-1)/N)``, ``a_N(0, 0) = 0`` (``N >= 2``),
    ``a_1 = 1``, ``a_inf(x, 0) = 0``; there the (infinite) derivative in the vanishing argument is returned as 0.
    """
    depth = check_depth(depth, "end_to_end_multiplier")
    x, y = jnp.asarray(x), jnp.asarray(y)
    dtype = jnp.result_type(x, y, float)
    x, y = x.astype(dtype), y.astype(dtype)
    if depth == 1:
        return jnp.ones(jnp.broadcast_shapes(x.shape, y.shape), dtype)
    p, q = jnp.maximum(x, y), jnp.minimum(x, y)
    pos_p, pos_q = p > 0, q > 0
    p_safe = jnp.where(pos_p, p, 1.0)
    q_safe = jnp.where(pos_q, q, p_safe)
    L = jnp.log(q_safe) - jnp.log(p_safe)  # <= 0
    small = jnp.abs(L) < _TAYLOR
    Ls = jnp.where(small, -1.0, L)  # safe off the Taylor branch
    if depth == math.inf:
        # expm1(L)/L = 1 + L/2 + L^2/6 + L^3/24 + ...
        taylor = 1.0 + L * (1.0 / 2 + L * (1.0 / 6 + L / 24))
        K = jnp.where(small, taylor, jnp.expm1(Ls) / Ls)
        K = jnp.where(pos_q, K, 0.0)  # a_inf(x, 0) = 0
        scale = p_safe
    else:
        n = float(depth)
        # expm1(L)/expm1(L/N) = sum_{k<N} e^{kL/N} = N [1 + L (N-1)/(2N) + L^2 (N-1)(2N-1)/(12N^2) + L^3 (N-1)^2/(24 N^2)] + O(L^4)
        c1 = (n - 1) / (2 * n)
        c2 = (n - 1) * (2 * n - 1) / (12 * n * n)
        c3 = (n - 1) ** 2 / (24 * n * n)
        taylor = n * (1.0 + L * (c1 + L * (c2 + L * c3)))
        K = jnp.where(small, taylor, jnp.expm1(Ls) / jnp.expm1(Ls / n))
        K = jnp.where(pos_q, K, 1.0)  # a_N(x, 0) = x^((N-1)/N): only the term m = N survives
        scale = jnp.exp(((n - 1) / n) * jnp.log(p_safe))
    return jnp.where(pos_p, scale * K, 0.0)


def _multiplier_partials(lam, mu, depth, inverse: bool, rcond):
    """``phi``, ``dphi/dx`` and ``dphi/dy`` on the grid ``(lam_i, mu_j)``; ``phi = a``, or ``1/a`` (pseudo-inverse)."""
    x = jnp.broadcast_to(lam[:, None], (lam.shape[0], mu.shape[0]))
    y = jnp.broadcast_to(mu[None, :], x.shape)
    f = lambda x, y: end_to_end_multiplier(x, y, depth)
    a, ax = jax.jvp(lambda x: f(x, y), (x,), (jnp.ones_like(x),))
    _, ay = jax.jvp(lambda y: f(x, y), (y,), (jnp.ones_like(y),))
    if not inverse:
        return a, ax, ay
    keep = _keep(a, rcond)
    inv = jnp.where(keep, 1.0 / jnp.where(keep, a, 1.0), 0.0)
    return inv, -ax * inv**2, -ay * inv**2


def _keep(a, rcond):
    if rcond is None:
        rcond = 10 * max(a.shape) * jnp.finfo(a.dtype).eps
    return a > rcond * jnp.max(a)


# --------------------------------------------------------------------------------------------------
# Spectral data of X
# --------------------------------------------------------------------------------------------------


def spectrum(X: Array):
    """``(lam, U, mu, V)`` with ``X X^* = U diag(lam) U^*`` and ``X^* X = V diag(mu) V^*``; ``lam, mu >= 0``.

    From one SVD ``X = U diag(sigma) V^*`` (full bases), so that ``lam = sigma^2`` is resolved down to
    ``(eps ||X||_2)^2``: eigenvalues of the Gram matrices themselves would carry absolute errors
    ``~ eps ||X||_2^2``, and at infinite depth a small ``lam`` lost in that noise matters, because
    ``a_inf(x, y) = (x - y)/ln(x/y)`` vanishes only logarithmically as ``y -> 0`` (zeroing it freezes the
    directions that couple a small singular value to the large ones). Singular values below the SVD's noise
    floor ``max(d_N, d_0) eps ||X||_2`` count as exact zeros (so do the ``|d_N - d_0|`` structural zeros of the
    larger Gram matrix): an exact zero would otherwise come out as ~1e-16, and ``(1e-16)^(1/N)`` is not small.
    Returned in ascending order. The decomposition is not differentiated (the custom JVP below does that).
    """
    X = jax.lax.stop_gradient(X)
    dN, d0 = X.shape
    r = min(dN, d0)
    U, sigma, Vh = jnp.linalg.svd(X, full_matrices=True)  # sigma descending, length r
    floor = max(dN, d0) * jnp.finfo(sigma.dtype).eps * sigma[0]
    sq = jnp.where(sigma > floor, sigma, 0.0)[::-1] ** 2  # ascending
    lam = jnp.concatenate([jnp.zeros(dN - r, sq.dtype), sq])
    mu = jnp.concatenate([jnp.zeros(d0 - r, sq.dtype), sq])
    U = jnp.concatenate([U[:, r:], U[:, :r][:, ::-1]], axis=1)
    V = ct(Vh)
    V = jnp.concatenate([V[:, r:], V[:, :r][:, ::-1]], axis=1)
    return lam, U, mu, V


def _to_basis(U, Z, V):
    return dot(dot(ct(U), Z), V)


def _from_basis(U, Zh, V):
    return dot(dot(U, Zh), ct(V))


def _divided(vals, f, fprime, axis_pair):
    """Divided differences ``(f_a - f_b)/(v_a - v_b)`` over the pair of grid indices, derivative mean where close."""
    rel = jnp.finfo(vals.dtype).eps ** (
        1.0 / 3
    )  # balances cancellation (eps/h) and the O(h^2) mean error
    if axis_pair == "x":  # D[i, k, j] = (f[i, j] - f[k, j]) / (v_i - v_k)
        dv = vals[:, None] - vals[None, :]
        big = jnp.maximum(vals[:, None], vals[None, :])
        df = f[:, None, :] - f[None, :, :]
        mean = 0.5 * (fprime[:, None, :] + fprime[None, :, :])
        dv = dv[:, :, None]
        big = big[:, :, None]
    else:  # D[i, k, j] = (f[i, k] - f[i, j]) / (v_k - v_j)
        dv = vals[:, None] - vals[None, :]
        big = jnp.maximum(vals[:, None], vals[None, :])
        df = f[:, :, None] - f[:, None, :]
        mean = 0.5 * (fprime[:, :, None] + fprime[:, None, :])
        dv = dv[None]
        big = big[None]
    close = jnp.abs(dv) <= rel * big
    return jnp.where(close, mean, df / jnp.where(close, 1.0, dv))


@partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def apply_multiplier(X, Z, depth, inverse, rcond):
    """``U (phi ∘ (U^* Z V)) V^*`` with ``phi = a`` (``A_N(X) Z``) or ``phi = 1/a`` (``A_N(X)^+ Z``)."""
    lam, U, mu, V = spectrum(X)
    a = end_to_end_multiplier(lam[:, None], mu[None, :], depth)
    phi = (
        jnp.where(_keep(a, rcond), 1.0 / jnp.where(_keep(a, rcond), a, 1.0), 0.0) if inverse else a
    )
    return _from_basis(U, phi * _to_basis(U, Z, V), V)


@apply_multiplier.defjvp
def _apply_jvp(depth, inverse, rcond, primals, tangents):
    # Daleckii–Krein: with Phi(X) Z = sum_m f_m(X X^*) Z g_m(X^* X) and phi(x, y) = sum_m f_m(x) g_m(y),
    #   U^* d[Phi Z] V = phi ∘ dZ^ + sum_k D1[i,k,j] dB^[i,k] Z^[k,j] + sum_k Z^[i,k] dC^[k,j] D2[i,k,j],
    # dB = dX X^* + X dX^*, dC = dX^* X + X^* dX (hats: in the eigenbases), D1, D2 the divided differences of
    # phi in its first / second argument. Exact at repeated eigenvalues, where they become derivatives.
    X, Z = primals
    dX, dZ = tangents
    lam, U, mu, V = spectrum(X)
    phi, px, py = _multiplier_partials(lam, mu, depth, inverse, rcond)
    Zh = _to_basis(U, Z, V)
    out = _from_basis(U, phi * Zh, V)
    dB = dot(dX, ct(X)) + dot(X, ct(dX))
    dC = dot(ct(dX), X) + dot(ct(X), dX)
    dBh = dot(dot(ct(U), dB), U)
    dCh = dot(dot(ct(V), dC), V)
    D1 = _divided(lam, phi, px, "x")  # (dN, dN, d0)
    D2 = _divided(mu, phi, py, "y")  # (dN, d0, d0)
    hi = jax.lax.Precision.HIGHEST
    t = phi * _to_basis(U, dZ, V)
    t = t + jnp.einsum("ikj,ik,kj->ij", D1, dBh, Zh, precision=hi)
    t = t + jnp.einsum("ikj,ik,kj->ij", D2, Zh, dCh, precision=hi)
    return out, _from_basis(U, t, V)


# --------------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------------


def _prepare(who, X, depth, *Zs):
    depth = check_depth(depth, who)
    X = check_matrix(X, who)
    names = ["Z"] if len(Zs) == 1 else [f"Z{k + 1}" for k in range(len(Zs))]
    Zs = [_check_direction(Z, X, who, name) for Z, name in zip(Zs, names)]
    dtype = jnp.result_type(X, *Zs)
    return depth, X.astype(dtype), [Z.astype(dtype) for Z in Zs]


def end_to_end_operator(
    X: Inexact[Array, "dN d0"], Z: Inexact[Array, "dN d0"], depth
) -> Inexact[Array, "dN d0"]:
    """``A_N(X) Z = sum_{m=1..N} (X X^*)^((m-1)/N) Z (X^* X)^((N-m)/N)`` (docs/theory.md §5; seed 003).

    ``depth`` is ``N`` (a positive integer) or ``math.inf``, for the rescaled limit
    ``A_inf = lim A_N / N``, ``A_inf(X) Z = int_0^1 (X X^*)^s Z (X^* X)^(1-s) ds``. The end-to-end matrix of a
    balanced network trained by the gradient flow of ``E`` follows ``dX/dt = -A_N(X)[grad E(X)]``.
    Real or complex, square or rectangular ``X``; cost of one SVD whatever ``N``. Differentiable in ``X``
    and ``Z`` (custom JVP, exact at repeated singular values; see the module docstring).
    """
    depth, X, (Z,) = _prepare("end_to_end_operator", X, depth, Z)
    if depth == 1:
        return Z
    return apply_multiplier(X, Z, depth, False, None)


def end_to_end_operator_inverse(
    X: Inexact[Array, "dN d0"], Z: Inexact[Array, "dN d0"], depth, *, rcond: float | None = None
) -> Inexact[Array, "dN d0"]:
    """``A_N(X)^+ Z``: the (pseudo-)inverse of `end_to_end_operator` (docs/theory.md §5; seed 003).

    In the eigenbases of ``X X^*`` and ``X^* X`` this divides by the multiplier ``a_ij``. Where ``A_N(X)`` is
    singular (finite ``N``: ``X`` with both ``ker X`` and ``ker X^*`` nontrivial; ``N = inf``: any zero singular
    value, hence every rectangular ``X``) it is the Moore–Penrose pseudo-inverse: multipliers
    ``a_ij <= rcond * max a`` (default ``rcond = 10 max(d_N, d_0) eps``) count as zero and their components are
    dropped. Differentiable like `end_to_end_operator` (away from the cutoff).
    """
    depth, X, (Z,) = _prepare("end_to_end_operator_inverse", X, depth, Z)
    if depth == 1:
        return Z
    return apply_multiplier(X, Z, depth, True, None if rcond is None else float(rcond))


def end_to_end_metric(
    X: Inexact[Array, "dN d0"],
    Z1: Inexact[Array, "dN d0"],
    Z2: Inexact[Array, "dN d0"],
    depth,
    *,
    rcond: float | None = None,
) -> Real[Array, ""]:
    """The Riemannian metric ``g^N_X(Z1, Z2) = <A_N(X)^{-1} Z1, Z2> = Re Tr((A_N(X)^{-1} Z1)^* Z2)`` (docs/theory.md §5; seed 003).

    The gradient flow of ``E`` for this metric is ``dX/dt = -A_N(X)[grad E(X)]``. ``depth=math.inf`` uses
    ``A_inf = lim A_N / N``. Where ``A_N(X)`` is singular the metric is infinite in the kernel directions; this
    returns the pseudo-inverse value (those components ignored; ``rcond`` as in `end_to_end_operator_inverse`).
    """
    depth, X, (Z1, Z2) = _prepare("end_to_end_metric", X, depth, Z1, Z2)
    W = (
        Z1
        if depth == 1
        else apply_multiplier(X, Z1, depth, True, None if rcond is None else float(rcond))
    )
    return jnp.sum(jnp.real(jnp.conj(W) * Z2))


def log_volume_density(X: Inexact[Array, "dN d0"], depth) -> Real[Array, ""]:
    """Log of the Riemannian volume density of ``(F^{d_N x d_0}, g^N)`` at ``X`` (docs/theory.md §5; seed 003).

    The density is taken with respect to Lebesgue measure on the entries of ``X`` (real and imaginary parts:
    coordinates orthonormal for ``Re Tr(A^* B)``), so it is ``sqrt(det G)`` with ``G`` the matrix of
    ``A_N(X)^{-1}``, exactly, with no further constant:

        log rho_N(X) = -(c/2) sum_{i=1..d_N} sum_{j=1..d_0} ln a_N(lam_i, mu_j),   c = 1 (real X), 2 (complex X),

    ``lam`` the ``d_N`` eigenvalues of ``X X^*`` and ``mu`` the ``d_0`` of ``X^* X`` (for rectangular ``X`` the
    larger set holds ``|d_N - d_0|`` zeros). ``depth=math.inf`` uses ``A_inf = lim A_N / N``, i.e.
    ``rho_inf = lim N^{c d_N d_0 / 2} rho_N``. The density is ``+inf`` where ``A_N(X)`` is singular (finite ``N``:
    ``ker X`` and ``ker X^*`` both nontrivial; ``N = inf``: any zero singular value, so every rectangular ``X``).
    Differentiable in ``X`` (also at repeated singular values: it is a symmetric function of the eigenvalues).
    """
    depth = check_depth(depth, "log_volume_density")
    X = check_matrix(X, "log_volume_density")
    c = 2.0 if jnp.iscomplexobj(X) else 1.0
    if depth == 1:
        return jnp.zeros((), jnp.finfo(X.dtype).dtype)
    lam, U, mu, V = spectrum(X)
    lam, mu = _eigenvalues_with_derivative(X, lam, U, mu, V)
    a = end_to_end_multiplier(lam[:, None], mu[None, :], depth)
    return -0.5 * c * jnp.sum(jnp.log(a))


def _eigenvalues_with_derivative(X, lam, U, mu, V):
    """The Gram eigenvalues with first derivatives attached: ``d lam_i = (U^* dB U)_ii``, ``d mu_j = (V^* dC V)_jj``.

    Exact for symmetric functions of the eigenvalues (as the log-density is), also at repeated eigenvalues, where
    differentiating ``eigh`` would not be. Structural zeros keep zero derivative.
    """
    lam_d = jnp.sum(jnp.abs(dot(ct(U), X)) ** 2, axis=1)  # (U^* X X^* U)_ii, U held fixed
    mu_d = jnp.sum(jnp.abs(dot(X, V)) ** 2, axis=0)  # (V^* X^* X V)_jj
    lam_d = lam_d - jax.lax.stop_gradient(lam_d)  # value 0, derivative d lam_i
    mu_d = mu_d - jax.lax.stop_gradient(mu_d)
    lam_d = jnp.where(lam > 0, lam_d, 0.0)  # zeros (structural or below the floor) stay put
    mu_d = jnp.where(mu > 0, mu_d, 0.0)
    return lam + lam_d, mu + mu_d
