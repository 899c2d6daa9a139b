from __future__ import annotations

import abc

import diffrax
import equinox as eqx
import lineax as lx

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


class AbstractStochasticFlow(AbstractFlow):
    """A stochastic flow: the Ito SDE ``dW = flow(t, W) dt + diffusion(t, W) dB``.

    Calling the flow gives the drift; `diffusion` the noise coefficient, a linear operator from the
    Brownian increment ``dB`` (shaped like the state) to the state. `dlnjax.simulate` integrates every
    subclass as an SDE (it needs ``key=`` and a step ``dt0=``) and every other `AbstractFlow` as an ODE.
    Examples: `Langevin`, and `Masked` of a stochastic flow (`MaskedStochastic`).
    """

    @abc.abstractmethod
    def diffusion(self, t, net: DLN, args=None) -> lx.AbstractLinearOperator:
        """The noise coefficient at ``(t, net)``: a ``lineax`` operator ``dB -> noise``."""
        raise NotImplementedError

    def default_solver(self):
        """The Diffrax solver `dlnjax.simulate` uses when given none: ``diffrax.Heun()`` (a flow may override it,
        e.g. `FiberLangevin`, whose steps are projected back onto the fiber)."""
        return diffrax.Heun()
