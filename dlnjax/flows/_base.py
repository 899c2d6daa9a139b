from __future__ import annotations

import abc

import equinox as eqx

from .._network import DLN


class AbstractFlow(eqx.Module):
    """A vector field on weight tuples: ``flow(t, net, args) -> velocity`` (a `DLN` of the same widths)."""

    @abc.abstractmethod
    def __call__(self, t, net: DLN, args=None) -> DLN:
        raise NotImplementedError

    def stiff_preconditioner(self, t, y, args, gamma):
        """An approximation of ``(I - gamma J(y))^-1``, ``J`` the Jacobian of this field at ``y``, as a
        ``lineax.AbstractLinearOperator`` on the state, or ``None`` (the default: no preconditioner).

        `dlnjax.Stiff` preconditions the Krylov solves of its Newton systems ``(I - gamma J) delta = r`` with it.
        """
        return None
