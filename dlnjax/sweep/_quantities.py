"""The recorded quantities of a sweep, as functions of one run's state.

The quantities are those of the one table shared with `dlnjax.train` (``dlnjax._quantities.QUANTITIES``,
where each is defined): here they are bound to one run (its loss data, its ``kappa`` and, for padded runs,
its live mask, through which every layer quantity is that of the real network), so a sweep evaluates them
inside the compiled, vmapped program.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from .._network import DLN
from .._quantities import QUANTITIES, Run, check_names

__all__ = ["quantity_fns", "quantity_shape"]


def quantity_shape(
    name: str, n_layers: int, n_singular: int
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The extra (trailing) dims and sizes of a quantity beyond ``(run, time)``."""
    trailing = QUANTITIES[name].trailing
    if trailing is None:
        return (), ()
    return (trailing,), ({"layer": n_layers, "index": n_singular}[trailing],)


def quantity_fns(
    names: Sequence[str],
    loss,
    *,
    kappa=None,
    live: DLN | None = None,
    n_layers: int,
    sharpness_iterations: int = 20,
    end_to_end_state: bool = False,
) -> dict[str, Callable]:
    """``{name: fn(state)}`` for one run.

    ``state`` is a `DLN` (or, with ``end_to_end_state``, the end-to-end matrix ``X`` itself: the state of
    `dlnjax.flows.EndToEnd`). ``live`` is the 0/1 mask of a padded run (``None``: not padded).
    ``kappa`` (``None`` or a scalar) enters ``objective`` and ``grad_norm``.
    """
    names = check_names(names, "quantity_fns")
    run = Run(
        loss,
        kappa=kappa,
        live=live,
        n_layers=n_layers,
        sharpness_iterations=sharpness_iterations,
        end_to_end_state=end_to_end_state,
    )
    return {n: partial(QUANTITIES[n].fn, run) for n in names}
