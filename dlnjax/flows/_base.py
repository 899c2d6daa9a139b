from __future__ import annotations

import abc

import equinox as eqx

from .._network import DLN


class AbstractFlow(eqx.Module):
    """A vector field on weight tuples: ``flow(t, net, args) -> velocity`` (a `DLN` of the same widths)."""

    @abc.abstractmethod
    def __call__(self, t, net: DLN, args=None) -> DLN:
        raise NotImplementedError
