"""The posterior on the balanced manifold: the analogue of `dlnjax.flows.FiberLangevin` on ``G = 0``
(§4.2-4.3 of Lindsey & Menon, seed 001; docs/theory.md §11, "The posterior on balanced networks").

Real square ``d x d`` layers, depth ``N``. Every full-rank balanced network is ``W_k = U_k Lambda U_{k-1}^T``,
``k = 1..N``, with ``U_0, ..., U_N`` orthogonal and ``Lambda = diag(lambda)``, ``lambda_i > 0`` (so
``X = U_N Lambda^N U_0^T``). In these coordinates the surface measure of the balanced manifold ``M`` is

``dH_M = c_{d,N} prod_{i<j} sqrt((lambda_i^2 - lambda_j^2)(lambda_i^(2N) - lambda_j^(2N))) dlambda dU_0 ... dU_N``

(``dU_k`` Haar; derived in docs/theory.md §11), so the prior ``exp(-beta kappa ||W||^2 / 2)`` restricted to ``M``
(``||W||^2 = N sum_i lambda_i^2`` there) is the product of independent Haar ``U_k`` and the law of ``lambda`` with
log-density `balanced_log_density`. Conditioned on ``X`` as well (the posterior (4.5) restricted to balanced
networks, the ``beta -> infinity`` limit of the fiber posterior), only ``U_1, ..., U_{N-1}`` remain: the uniform
law on the balanced orbit ``O_X``, `balanced_orbit_sample`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, PRNGKeyArray

from ._errors import OptionError, UnsupportedError
from ._init import fiber_center, group_action, orthogonal
from ._network import DLN
from ._numerics import dot

__all__ = ["balanced_log_density", "balanced_orbit_sample", "balanced_posterior_sample"]


def balanced_log_density(lam: Array, depth: int, beta_kappa) -> Array:
    """The log-density (up to a constant) of the singular values ``lambda`` of the layers under the prior
    restricted to the balanced manifold (docs/theory.md §11):

    ``-beta kappa N sum_i lambda_i^2 / 2 + 1/2 sum_{i<j} [log|lambda_i^2 - lambda_j^2|
    + log|lambda_i^(2N) - lambda_j^(2N)|]``

    for ``lambda_i > 0`` (``-inf`` otherwise), with respect to Lebesgue measure on ``R_+^d`` (unordered). At
    ``N = 1`` it is the law of the singular values of a real Gaussian ``d x d`` matrix of variance
    ``1 / (beta kappa)`` per entry.
    """
    lam = jnp.asarray(lam)
    sq = lam**2
    i, j = jnp.triu_indices(lam.shape[-1], k=1)
    pair = jnp.log(jnp.abs(sq[..., i] - sq[..., j])) + jnp.log(
        jnp.abs(sq[..., i] ** depth - sq[..., j] ** depth)
    )
    out = -0.5 * beta_kappa * depth * jnp.sum(sq, axis=-1) + 0.5 * jnp.sum(pair, axis=-1)
    return jnp.where(jnp.all(lam > 0, axis=-1), out, -jnp.inf)


def _haar(key: PRNGKeyArray, d: int, n: int, dtype) -> Array:
    """``n`` independent Haar-distributed ``d x d`` orthogonal (or unitary) matrices, shape ``(n, d, d)``."""
    return jnp.stack(orthogonal(key, (d,) * (n + 1), dtype=dtype).layers)


def balanced_orbit_sample(key: PRNGKeyArray, X: Array, depth: int, n: int) -> DLN:
    """``n`` independent draws of the uniform law on the balanced orbit ``O_X`` (a batched `DLN`, leading axis ``n``).

    The posterior (4.5) of seed 001 restricted to balanced networks: on ``O_X = F_X ∩ M_0`` the density
    ``exp(-beta kappa ||W||^2 / 2)`` is constant (Theorem 1), so the law is the normalized surface measure of the orbit,
    for every ``beta kappa``; it is also the ``beta kappa -> infinity`` limit of the fiber posterior
    (`dlnjax.flows.FiberLangevin`). ``O_X = U . C`` (``C = fiber_center(X, depth)``, ``U`` in the unitary group
    ``U(r)^(N-1)``, ``r = min(d_N, d_0)``, acting by (1.6)) and the unitary action is an isometry, so the pushforward of
    Haar measure is an invariant probability measure on the orbit, hence the normalized surface measure (the invariant
    one is unique on a homogeneous space). Real ``X``: orthogonal ``U_k``; complex: unitary. ``X`` of full rank.
    """
    if n < 1:
        raise OptionError(f"balanced_orbit_sample: n must be >= 1; got {n}.")
    C = fiber_center(X, depth)
    if depth == 1:
        return jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (n,) + a.shape), C)
    return _orbit(key, C, n)


@eqx.filter_jit
def _orbit(key, C: DLN, n: int) -> DLN:
    r = C.widths[1]
    return jax.vmap(lambda k: group_action(_haar(k, r, C.depth - 1, C.dtype), C))(jr.split(key, n))


def _metropolis(key, lam0, depth, beta_kappa, steps, step):
    """Random-walk Metropolis on ``u = log lambda`` (target ``f(e^u) e^{sum u}``), ``steps`` steps from ``lam0``."""
    target = lambda u: balanced_log_density(jnp.exp(u), depth, beta_kappa) + jnp.sum(u)

    def one(carry, k):
        u, lp, accepted = carry
        kp, ka = jr.split(k)
        v = u + step * jr.normal(kp, u.shape, u.dtype)
        lv = target(v)
        take = jnp.log(jr.uniform(ka, (), u.dtype)) < lv - lp
        return (jnp.where(take, v, u), jnp.where(take, lv, lp), accepted + take), None

    u0 = jnp.log(lam0)
    (u, _, accepted), _ = jax.lax.scan(one, (u0, target(u0), 0), jr.split(key, steps))
    return jnp.exp(u), accepted / steps


def balanced_posterior_sample(
    key: PRNGKeyArray,
    d: int,
    depth: int,
    beta_kappa,
    n: int,
    *,
    steps: int = 400,
    step: float | None = None,
    dtype=None,
) -> tuple[DLN, Array]:
    """``n`` draws of the prior ``exp(-beta kappa ||W||^2 / 2)`` restricted to the balanced manifold ``M``.

    Real square ``d x d`` layers, depth ``N``: the density with respect to the surface measure of
    ``M = {G(W) = 0, X(W) of full rank}`` (docs/theory.md §11). Each draw is ``W_k = U_k Lambda U_{k-1}^T`` with
    ``U_0, ..., U_N`` independent Haar orthogonal matrices and ``lambda`` from `balanced_log_density`, sampled by
    ``n`` independent random-walk Metropolis chains in ``log lambda`` (``steps`` steps each, proposal scale ``step``,
    default ``1 / sqrt(d)``, from independent half-normal starts of the right scale). For ``d = 1`` the law of
    ``lambda`` is half-normal of variance ``1 / (N beta kappa)`` and the chains are not needed (exact draws).

    Returns ``(net, acceptance)``: a batched `DLN` (leading axis ``n``) and each chain's acceptance rate.
    """
    if n < 1 or d < 1 or depth < 1 or steps < 1:
        raise OptionError(
            f"balanced_posterior_sample: need n, d, depth, steps >= 1; got {n}, {d}, {depth}, {steps}."
        )
    dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise UnsupportedError("balanced_posterior_sample: only real weights are supported.")
    if step is None:
        step = 1.0 / d**0.5
    return _posterior(key, d, depth, jnp.asarray(beta_kappa, dtype), n, steps, float(step), dtype)


@eqx.filter_jit
def _posterior(key, d, depth, beta_kappa, n, steps, step, dtype):
    kl, km, ku = jr.split(key, 3)
    scale = 1.0 / jnp.sqrt(depth * jnp.asarray(beta_kappa, dtype))
    lam0 = scale * jnp.abs(jr.normal(kl, (n, d), dtype))
    if d == 1:
        lam, acceptance = lam0, jnp.ones((n,), dtype)
    else:
        run = lambda k, l0: _metropolis(k, l0, depth, beta_kappa, steps, step)
        lam, acceptance = jax.vmap(run)(jr.split(km, n), lam0)
    U = jax.vmap(lambda k: _haar(k, d, depth + 1, dtype))(jr.split(ku, n))  # (n, N+1, d, d)
    layers = [
        dot(U[:, k + 1] * lam[:, None, :], jnp.swapaxes(U[:, k], -1, -2)) for k in range(depth)
    ]
    return _stacked(layers), acceptance


def _stacked(layers: list[Array]) -> DLN:
    """A batched `DLN` from per-layer arrays with a leading batch axis."""
    return jax.vmap(lambda *ls: DLN(list(ls)))(*layers)
