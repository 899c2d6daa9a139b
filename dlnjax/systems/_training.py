"""Training linear state-space models: fitting ``(A, B, C)`` to the Markov parameters of a target (the SSM analogy of
§1.3.1 of Lindsey & Menon, seed 001; docs/theory.md §13).

The loss `MarkovLoss` depends on the realization only through its transfer function, so the gradient flow
(`SystemGradient`) conserves the moment map, the regularized flow (`SystemRegularized`) scales it by
``exp(-2 kappa t)`` and Langevin noise (`SystemLangevin`) drives its mean to ``(m - p) I / (beta kappa)``. The flows
are integrated by `dlnjax.simulate`; `fit` runs discrete steps of any Optax optimizer.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Inexact

from .._errors import InputTypeError, OptionError, ShapeError
from .._numerics import sq_norm
from ._moment import moment_map
from ._system import LinearSystem, markov_parameters

__all__ = ["MarkovLoss", "FitResult", "fit"]


class MarkovLoss(eqx.Module):
    """``E(A, B, C) = 1/2 sum_{j < K} ||C A^j B - h_j||^2``: the misfit of the first ``K`` Markov parameters.

    ``target`` holds ``h_0, ..., h_{K-1}`` (shape ``(K, p, m)``); `MarkovLoss.of` takes them from a target system.
    A function of the transfer function only (the Markov parameters are its Laurent coefficients at infinity).
    """

    target: Inexact[Array, "K p m"]

    def __check_init__(self):
        if jnp.ndim(self.target) != 3:
            raise ShapeError(
                f"MarkovLoss: target must have shape (K, p, m); got {jnp.shape(self.target)}."
            )

    @classmethod
    def of(cls, system: LinearSystem, k: int) -> MarkovLoss:
        """The loss of fitting the first ``k`` Markov parameters of ``system``."""
        return cls(markov_parameters(system, k))

    def __call__(self, sys: LinearSystem) -> Array:
        if sys.p != self.target.shape[-2] or sys.m != self.target.shape[-1]:
            raise ShapeError(
                f"MarkovLoss: the system is {sys.p} x {sys.m} (p x m), the target {self.target.shape[1:]}."
            )
        return sq_norm(markov_parameters(sys, self.target.shape[0]) - self.target) / 2


class FitResult(eqx.Module):
    """The result of `fit`: the final `system`, the `history` (``loss``, ``moment``: ``mu`` at every recorded step) and
    the recorded `steps`."""

    system: LinearSystem
    history: dict[str, Array]
    steps: Array


def fit(
    loss: Callable[[LinearSystem], Array],
    sys0: LinearSystem,
    optimizer: optax.GradientTransformation,
    steps: int,
    *,
    every: int = 1,
    kappa: float = 0.0,
) -> FitResult:
    """Train ``sys0`` on ``loss + kappa/2 ||x||^2`` with an Optax optimizer for ``steps`` steps (one ``lax.scan``).

    With ``optax.sgd(eta)`` this is gradient descent ``x <- x - eta (grad E + kappa x)``; complex systems step along the
    conjugate of ``jax.grad`` (the real inner product). Records the loss and the moment map every ``every`` steps
    (and at step 0). Under ``jax.vmap`` over ``sys0`` (or the loss data) every output gains a batch axis.
    """
    if not isinstance(sys0, LinearSystem):
        raise InputTypeError(f"fit: sys0 must be a LinearSystem; got {type(sys0).__name__}.")
    for name, v in (("steps", steps), ("every", every)):
        if not isinstance(v, int) or v < 1:
            raise OptionError(f"fit: {name} must be a positive int; got {v!r}.")
    if steps % every:
        raise OptionError(f"fit: every must divide steps; got steps={steps}, every={every}.")
    objective = lambda s: loss(s) + kappa / 2 * sum(sq_norm(a) for a in s.arrays())
    grad = lambda s: jax.tree_util.tree_map(jnp.conj, jax.grad(objective)(s))

    def step(carry, _):
        s, state = carry
        updates, state = optimizer.update(grad(s), state, s)
        return (optax.apply_updates(s, updates), state), None

    def block(carry, _):
        carry, _ = jax.lax.scan(step, carry, None, length=every)
        return carry, (loss(carry[0]), moment_map(carry[0]))

    carry = (sys0, optimizer.init(sys0))
    (final, _), (losses, moments) = jax.lax.scan(block, carry, None, length=steps // every)
    history = {
        "loss": jnp.concatenate([loss(sys0)[None], losses]),
        "moment": jnp.concatenate([moment_map(sys0)[None], moments]),
    }
    return FitResult(system=final, history=history, steps=jnp.arange(0, steps + 1, every))
