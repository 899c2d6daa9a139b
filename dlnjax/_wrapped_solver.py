"""The base of dlnjax's Diffrax solvers that wrap another one (`dlnjax.Stiff`'s error scaling, `FiberProjected`)."""

from __future__ import annotations

import diffrax as dfx
import equinox as eqx

__all__ = ["AbstractForwardingSolver"]


class AbstractForwardingSolver(dfx.AbstractWrappedSolver):
    """A Diffrax solver that forwards everything but ``step`` to the solver it wraps (its field ``solver``).

    Not adaptive by itself: a wrapper that passes the wrapped solver's error estimate on also subclasses
    ``diffrax.AbstractAdaptiveSolver`` (`dlnjax.internal.AbstractDelegatingSolver`), so that Diffrax still refuses
    an adaptive step-size controller for a wrapper that has no error estimate.
    """

    solver: eqx.AbstractVar[dfx.AbstractSolver]

    @property
    def term_structure(self):
        return self.solver.term_structure

    @property
    def interpolation_cls(self):  # pyright: ignore
        return self.solver.interpolation_cls

    @property
    def term_compatible_contr_kwargs(self):
        return self.solver.term_compatible_contr_kwargs

    def order(self, terms):
        return self.solver.order(terms)

    def strong_order(self, terms):
        return self.solver.strong_order(terms)

    def error_order(self, terms):
        return self.solver.error_order(terms)

    def init(self, terms, t0, t1, y0, args):
        return self.solver.init(terms, t0, t1, y0, args)

    def func(self, terms, t0, y0, args):
        return self.solver.func(terms, t0, y0, args)
