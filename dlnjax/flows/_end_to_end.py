from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Inexact

from .._metric import _apply, _check_matrix, check_depth
from ._base import AbstractFlow


class EndToEnd(AbstractFlow):
    """The learning flow of the end-to-end matrix, ``dX/dt = -A_N(X)[grad E(X)] - N kappa X`` (MATH.md §5; seed 003).

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
            raise TypeError(f"EndToEnd: loss must be a callable X -> real scalar; got {type(loss).__name__}.")
        self.loss = loss
        self.depth = check_depth(depth, "EndToEnd")
        self.kappa = kappa

    def gradient(self, X: Inexact[Array, "dN d0"]) -> Inexact[Array, "dN d0"]:
        """``grad E(X)`` for the real inner product ``Re Tr(A^* B)``."""
        X = _check_matrix(X, "EndToEnd")

        def objective(x):
            value = self.loss(x)
            if jnp.ndim(value) != 0 or jnp.iscomplexobj(value):
                raise ValueError(
                    f"EndToEnd: loss must map X to a real scalar; got {jnp.result_type(value)} of shape {jnp.shape(value)}."
                )
            return value

        return jnp.conj(jax.grad(objective)(X))

    def __call__(self, t, X: Inexact[Array, "dN d0"], args=None) -> Inexact[Array, "dN d0"]:
        X = _check_matrix(X, "EndToEnd")
        g = self.gradient(X).astype(X.dtype)
        v = -g if self.depth == 1 else -_apply(X, g, self.depth, False, None)
        if isinstance(self.kappa, (int, float)) and self.kappa == 0:
            return v
        decay = self.kappa if self.depth == math.inf else self.depth * self.kappa
        return v - decay * X
