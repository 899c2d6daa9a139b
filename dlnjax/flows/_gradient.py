from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from .._errors import InputTypeError
from .._geometry import network_gradient
from .._network import DLN
from ._base import AbstractFlow


def _check_linear(net: DLN):
    if not isinstance(net, DLN):
        raise InputTypeError(f"flows act on a dlnjax.DLN; got {type(net).__name__}.")


class Gradient(AbstractFlow):
    """The gradient flow ``dW/dt = -grad_W E(X(W))`` ((1.2) of Lindsey & Menon, seed 001).

    ``loss`` is any JAX-traceable callable ``X -> real scalar``. For complex weights the gradient
    is taken for the real inner product ``Re Tr(A^* B)``. Conserves every moment ``G_k`` (docs/theory.md §2).
    """

    loss: Callable

    def __call__(self, t, net: DLN, args=None) -> DLN:
        _check_linear(net)
        return jax.tree_util.tree_map(jnp.negative, network_gradient(self.loss, net))


class Regularized(AbstractFlow):
    """Gradient flow of the regularized loss, ``dW/dt = -grad_W E - kappa W`` ((4.1) of seed 001).

    Along it ``G(t) = exp(-2 kappa t) G(0)`` for every loss ``E`` (docs/theory.md §4).
    """

    loss: Callable
    kappa: float

    def __call__(self, t, net: DLN, args=None) -> DLN:
        _check_linear(net)
        g = network_gradient(self.loss, net)
        return jax.tree_util.tree_map(lambda gk, w: -gk - self.kappa * w, g, net)
