"""The recorded quantities of a sweep, as functions of one run's state.

Each quantity is a function ``state -> array`` built for one run (it closes over the run's loss data,
its ``kappa`` and, for padded runs, its live mask), so a sweep evaluates it inside the compiled,
vmapped program. For a padded run (frozen identity layers and masked blocks, `dlnjax._padding`) every
quantity equals that of the real network: the end-to-end quantities because padding leaves ``X(W)``
unchanged, the layer quantities through the masked versions.

- ``loss``: ``E(W) = dlnjax.network_loss(loss, W)``; ``objective``: ``E(W) + kappa/2 ||W||^2`` (the
  regularized loss (4.1) of seed 001);
- ``test_error``: ``loss.test_error(X(W))``, the relative distance to the ground truth;
- ``balancedness``: `dlnjax.balancedness`, ``||G||_F / ||W||^2`` (seed 001, (1.5));
- ``squared_norm``: ``||W||^2``; ``layer_norms``: `dlnjax.layer_norms` (``||W_k||_F^2``, NaN past the
  run's depth, so runs of different depth share one ``layer`` axis);
- ``grad_norm``: the norm of the gradient of the objective over the live weights;
- ``sharpness``: `dlnjax.sharpness` (Lanczos, ``record.sharpness_iterations`` steps; seed 004);
- ``effective_rank``, ``numerical_rank``: of ``X(W)`` (`dlnjax.effective_rank`, `dlnjax.numerical_rank`);
- ``singular_values``: the ``min(d_0, d_N)`` singular values of ``X(W)``, descending.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from .._diagnostics import effective_rank, layer_norms, numerical_rank, sharpness
from .._geometry import network_loss
from .._network import DLN, balancedness, end_to_end, squared_norm

__all__ = ["quantity_fns", "quantity_shape"]


def quantity_shape(
    name: str, n_layers: int, n_singular: int
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The extra (trailing) dims and sizes of a quantity beyond ``(run, time)``."""
    if name == "layer_norms":
        return ("layer",), (n_layers,)
    if name == "singular_values":
        return ("index",), (n_singular,)
    return (), ()


def _nan_pad(v, n):
    return (
        jnp.concatenate([v, jnp.full((n - v.shape[0],), jnp.nan, v.dtype)]) if v.shape[0] < n else v
    )


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
    from .._padding import padded_balancedness, padded_layer_norms, padded_squared_norm

    def X_of(state):
        return state if end_to_end_state else end_to_end(state)

    def sq_norm(net):
        return squared_norm(net) if live is None else padded_squared_norm(net, live)

    def objective(net):
        value = network_loss(loss, net)
        return value if kappa is None else value + 0.5 * kappa * sq_norm(net)

    def loss_value(state):
        return loss(state) if end_to_end_state else network_loss(loss, state)

    def grad_norm(net):
        g = jax.grad(objective)(net)
        if live is not None:
            g = jax.tree_util.tree_map(jnp.multiply, g, live)
        return jnp.sqrt(sum(jnp.sum(jnp.abs(x) ** 2) for x in g.arrays()))

    def singular_values(state):
        return jnp.linalg.svd(X_of(state), compute_uv=False)

    table = {
        "loss": loss_value,
        "objective": objective,
        "test_error": lambda s: loss.test_error(X_of(s)),
        "balancedness": (lambda n: balancedness(n))
        if live is None
        else (lambda n: padded_balancedness(n, live)),
        "squared_norm": sq_norm,
        "layer_norms": (lambda n: _nan_pad(layer_norms(n), n_layers))
        if live is None
        else (lambda n: _nan_pad(padded_layer_norms(n, live), n_layers)),
        "grad_norm": grad_norm,
        "sharpness": (lambda n: sharpness(loss, n, iterations=sharpness_iterations))
        if live is None
        else (lambda n: sharpness(loss, n, iterations=sharpness_iterations, mask=live)),
        "effective_rank": lambda s: effective_rank(X_of(s)),
        "numerical_rank": lambda s: numerical_rank(X_of(s)).astype(jnp.result_type(float)),
        "singular_values": singular_values,
    }
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown quantities {unknown}; known: {sorted(table)}")
    return {n: table[n] for n in names}
