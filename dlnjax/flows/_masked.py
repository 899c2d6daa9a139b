from __future__ import annotations

import jax
import jax.numpy as jnp
import lineax as lx

from .._errors import InputTypeError, ShapeError
from .._network import DLN
from ._base import AbstractFlow, AbstractStochasticFlow


def _check_mask(mask, net: DLN, what: str) -> None:
    if not isinstance(net, DLN):
        raise InputTypeError(f"{what} acts on a dlnjax.DLN; got {type(net).__name__}.")
    if mask.widths != net.widths:
        raise ShapeError(f"{what}: the mask has widths {mask.widths} but the network {net.widths}.")


def _apply(mask: DLN, tree: DLN) -> DLN:
    return jax.tree_util.tree_map(lambda m, v: v * jnp.asarray(m, jnp.result_type(v)), mask, tree)


class Masked(AbstractFlow):
    """The flow ``dW/dt = M ⊙ flow(t, W)``: ``flow`` with the entries where the 0/1 network ``M`` is 0 frozen.

    ``mask`` is a `DLN` of the widths of the state, entries 0 or 1 (an array leaf: under ``jax.vmap`` each
    run may have its own). With ``(padded, live) = dlnjax.pad(net, ...)``,
    ``simulate(Masked(flow, live), padded, ts)`` is, after `dlnjax.unpad`, the trajectory of ``flow`` from
    ``net`` (for a flow that acts entrywise on the gradient, e.g. `Gradient`, `Regularized`, `Langevin`:
    its velocity on the live entries is the real one).

    A stochastic ``flow`` (an `AbstractStochasticFlow`, e.g. `Langevin`) gives a stochastic masked flow
    (``Masked(langevin, mask)`` is a `MaskedStochastic`) whose noise is masked too, so no noise reaches a
    frozen entry; a deterministic one gives a deterministic flow (`dlnjax.simulate` tells them apart by
    type).
    """

    flow: AbstractFlow
    mask: DLN

    def __new__(cls, flow=None, mask=None, *args, **kwargs):
        # One constructor for both: the stochastic subclass exactly when the wrapped flow is stochastic.
        if cls is Masked and isinstance(flow, AbstractStochasticFlow):
            cls = MaskedStochastic
        return super().__new__(cls)

    def __check_init__(self):
        if not isinstance(self.mask, DLN):
            raise InputTypeError(
                f"Masked: mask must be a dlnjax.DLN of 0/1 entries; got {type(self.mask).__name__}."
            )
        if not callable(self.flow):
            raise InputTypeError(
                f"Masked: flow must be a vector field flow(t, net, args); got {type(self.flow).__name__}."
            )

    def __call__(self, t, net: DLN, args=None) -> DLN:
        _check_mask(self.mask, net, "Masked")
        return _apply(self.mask, self.flow(t, net, args))


class MaskedStochastic(Masked, AbstractStochasticFlow):
    """`Masked` of a stochastic flow: drift and noise both multiplied by the mask (built by ``Masked(flow, mask)``)."""

    def diffusion(self, t, net: DLN, args=None) -> lx.AbstractLinearOperator:
        _check_mask(self.mask, net, "Masked")
        op = self.flow.diffusion(t, net, args)
        return lx.FunctionLinearOperator(lambda db: _apply(self.mask, op.mv(db)), op.in_structure())
