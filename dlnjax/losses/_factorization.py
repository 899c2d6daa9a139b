from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array

from .._numerics import sqabs
from ._base import AbstractLoss, checked_array


class Factorization(AbstractLoss):
    """Matrix factorization ``E(X) = 1/2 ||X - target||_F^2`` (with the ½; seed 002 §5, asymmetric factorization).

    ``target`` has shape ``(d_N, d_0)``; it is also the ground truth of `test_error`. The gradient is
    ``X - target``.
    """

    target: Array

    def __init__(self, target):
        self.target = checked_array(target, "Factorization: target", 2)
        self.truth = self.target

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.target.shape)

    def __call__(self, X) -> Array:
        self._check(X)
        return 0.5 * jnp.sum(sqabs(X - self.target))
