from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Inexact

from .._errors import InputTypeError
from .._metric import apply_multiplier, check_depth, check_matrix, end_to_end_multiplier, spectrum
from .._numerics import ct, dot
from ._base import AbstractFlow


class EndToEnd(AbstractFlow):
    """The learning flow of the end-to-end matrix, ``dX/dt = -A_N(X)[grad E(X)] - N kappa X`` (docs/theory.md §5; seed 003).

    The state is the end-to-end matrix ``X`` itself (a ``d_N x d_0`` array, real or complex), not a `DLN`:
    ``dlnjax.simulate(EndToEnd(loss, depth), X0, ts)``. For a balanced network (``G_k = 0``, e.g.
    ``dlnjax.fiber_center(X0, N)``) the weight flow ``Gradient(loss)`` (``Regularized(loss, kappa)``) keeps
    ``G = 0`` and its end-to-end matrix follows this flow exactly (Arora, Cohen & Hazan 2018; seed 003), with

        A_N(X) Z = sum_{m=1..N} (X X^*)^((m-1)/N) Z (X^* X)^((N-m)/N)

    (`dlnjax.end_to_end_operator`). ``depth=math.inf`` gives the rescaled infinite-depth limit
    ``dX/dtau = -A_inf(X)[grad E(X)] - kappa X`` with ``A_inf = lim A_N / N`` (the logarithmic-mean multiplier)
    in the time ``tau = N t``: ``X_N(tau / N) -> X_inf(tau)`` as ``N -> inf`` (measured error O(1/N)).

    Cost: one SVD of ``X`` per evaluation, whatever ``N``. Differentiable (``jax.grad``
    through `dlnjax.simulate` is finite and correct also at repeated singular values; see `dlnjax._metric`).

    **Arguments:**

    - `loss`: a JAX-traceable callable ``X -> real scalar``. For complex ``X`` the gradient is taken for the real
      inner product ``Re Tr(A^* B)`` (the conjugate of ``jax.grad``), as in `dlnjax.network_gradient`.
    - `depth`: ``N``, a positive integer, or ``math.inf``. Anything else raises ``ValueError``.
    - `kappa`: weight decay of the underlying weight flow ``dW/dt = -grad_W E - kappa W`` ((4.1) of seed 001);
      it adds ``-N kappa X`` (``-kappa X`` at ``depth=math.inf``). Default 0.
    """

    loss: Callable
    depth: int | float = eqx.field(static=True)
    kappa: float = 0.0

    def __init__(self, loss: Callable, depth, kappa: float = 0.0):
        if not callable(loss):
            raise InputTypeError(
                f"EndToEnd: loss must be a callable X -> real scalar; got {type(loss).__name__}."
            )
        self.loss = loss
        self.depth = check_depth(depth, "EndToEnd")
        self.kappa = kappa

    def gradient(self, X: Inexact[Array, "dN d0"]) -> Inexact[Array, "dN d0"]:
        """``grad E(X)`` for the real inner product ``Re Tr(A^* B)``."""
        X = check_matrix(X, "EndToEnd")

        def objective(x):
            value = self.loss(x)
            if jnp.ndim(value) != 0 or jnp.iscomplexobj(value):
                raise InputTypeError(
                    f"EndToEnd: loss must map X to a real scalar; got {jnp.result_type(value)} of shape {jnp.shape(value)}."
                )
            return value

        return jnp.conj(jax.grad(objective)(X))

    def __call__(self, t, X: Inexact[Array, "dN d0"], args=None) -> Inexact[Array, "dN d0"]:
        X = check_matrix(X, "EndToEnd")
        g = self.gradient(X).astype(X.dtype)
        v = -g if self.depth == 1 else -apply_multiplier(X, g, self.depth, False, None)
        if isinstance(self.kappa, (int, float)) and self.kappa == 0:
            return v
        decay = self.kappa if self.depth == math.inf else self.depth * self.kappa
        return v - decay * X

    def stiff_preconditioner(self, t, X, args, gamma):
        """``(I + gamma (rho A_N(X) + N kappa))^-1``: the inverse of the Newton matrix ``I - gamma J`` of `dlnjax.Stiff`
        with the loss Hessian replaced by ``rho I``.

        The Jacobian of the field is ``J Z = -A_N(X)[H Z] - (D A_N(X)[Z]) grad E - N kappa Z`` (``H`` the loss Hessian).
        Near a fit ``grad E`` is small and the stiff part is ``-A_N(X) H``; ``rho = <X, H X> / <X, X>`` (the Hessian's
        Rayleigh quotient along ``X``, clipped at 0) turns it into ``-rho A_N(X)``, which is diagonal in the singular
        bases of ``X`` with the multipliers ``a_N(sigma_i^2, sigma_j^2)``: the preconditioner costs one SVD and four
        products per application. Exact for ``E = c ||X - M||^2`` and ``N = 1``; for matrix completion
        ``H = (2/|Omega|) P_Omega`` and ``rho`` is the mean of ``H`` on the directions of ``X``.
        """
        X = jax.lax.stop_gradient(check_matrix(X, "EndToEnd"))
        _, HX = jax.jvp(self.gradient, (X,), (X,))
        nx = jnp.sum(jnp.abs(X) ** 2)
        rho = jnp.where(
            nx > 0, jnp.sum(jnp.real(jnp.conj(X) * HX)) / jnp.where(nx > 0, nx, 1.0), 0.0
        )
        rho = jnp.maximum(rho, 0.0)
        lam, U, mu, V = spectrum(X)
        a = end_to_end_multiplier(lam[:, None], mu[None, :], self.depth)
        decay = self.kappa if self.depth == math.inf else self.depth * self.kappa
        den = 1.0 + gamma * (rho * a + decay)
        scale = jnp.where(den > 0, 1.0 / jnp.where(den > 0, den, 1.0), 1.0)
        return lx.FunctionLinearOperator(
            _SpectralScaling(U, scale.astype(X.real.dtype), V), jax.eval_shape(lambda: X)
        )

    def stiff_error_scale(self, X, rtol, atol):
        """State errors in tolerance units for `dlnjax.Stiff`: ``E -> (U^* E V)_ij / (atol + rtol max(sigma_i, sigma_j))``.

        In the singular bases of ``X`` each component of an error is measured against the singular values it couples,
        so that a singular value still at the initialization scale is resolved to ``rtol`` of itself (an elementwise
        scale ``atol + rtol |X_ij|`` would let it drift by ``rtol ||X||``, and its escape time with it), down to the
        SVD's resolution ``max(d_N, d_0) eps ||X||_2``, which is added to the scale.
        """
        X = jax.lax.stop_gradient(check_matrix(X, "EndToEnd"))
        lam, U, mu, V = spectrum(X)
        big = jnp.maximum(jnp.sqrt(lam)[:, None], jnp.sqrt(mu)[None, :])
        # the SVD resolves components only to ~ max(d_N, d_0) eps ||X||_2: no tighter tolerance than that
        floor = max(X.shape) * jnp.finfo(X.dtype).eps * jnp.sqrt(jnp.max(lam))
        return _SpectralScaling(
            U, (1.0 / (atol + floor + rtol * big)).astype(X.real.dtype), V, back=False
        )


class _SpectralScaling(eqx.Module):
    """``Z -> U (s ∘ (U^* Z V)) V^*`` (``back=False``: ``Z -> s ∘ (U^* Z V)``)."""

    U: Array
    s: Array
    V: Array
    back: bool = eqx.field(static=True, default=True)

    def __call__(self, Z):
        Zh = self.s * dot(dot(ct(self.U), Z), self.V)
        return dot(dot(self.U, Zh), ct(self.V)) if self.back else Zh
