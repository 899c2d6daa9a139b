"""The recorded quantities: one table shared by `dlnjax.train` (its built-in metrics) and the sweeps.

Each entry of `QUANTITIES` is a `Quantity`: a function ``fn(run, state, grad) -> array`` of one run's state,
with what it needs. ``run`` (a `Run`) holds the run's loss, its ``kappa`` and, for a padded run, its live
mask; ``state`` is a `dlnjax.DLN` (or, for `dlnjax.flows.EndToEnd`, the end-to-end matrix itself);
``grad`` is the gradient of the objective when the caller already has it (`dlnjax.train` does), else
``None``. For a padded run (``run.live``: frozen identity layers and masked blocks, `dlnjax.pad`) every
quantity equals that of the real network: the end-to-end quantities because padding leaves ``X(W)``
unchanged, the layer quantities through the ``padded_*`` variants.

- ``loss``: ``E(W) = dlnjax.network_loss(loss, W)``; ``objective``: ``E(W) + kappa/2 ||W||^2`` (the
  regularized loss (4.1) of seed 001; `objective`);
- ``test_error``: ``loss.test_error(X(W))``, the relative distance to the ground truth;
- ``balancedness``: `dlnjax.balancedness`, ``||G||_F / ||W||^2`` (seed 001, (1.5));
- ``squared_norm``: ``||W||^2``; ``layer_norms``: `dlnjax.layer_norms` (``||W_k||_F^2``; NaN past the
  run's depth up to ``run.n_layers``, so runs of different depth share one ``layer`` axis);
- ``grad_norm``: the norm of the gradient of the objective over the trainable entries (``run.grad_mask``,
  by default the live ones);
- ``sharpness``: `dlnjax.sharpness` (Lanczos, ``run.sharpness_iterations`` steps; seed 004);
- ``effective_rank``, ``numerical_rank``: of ``X(W)`` (`dlnjax.effective_rank`, `dlnjax.numerical_rank`);
- ``singular_values``: the ``min(d_0, d_N)`` singular values of ``X(W)``, descending.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._diagnostics import effective_rank, layer_norms, numerical_rank, sharpness
from ._errors import OptionError
from ._geometry import network_loss
from ._network import DLN, balancedness, end_to_end, squared_norm
from ._numerics import tree_sq_norm
from ._padding import (
    check_padded_pair,
    padded_balancedness,
    padded_layer_norms,
    padded_squared_norm,
)

__all__ = ["QUANTITIES", "Quantity", "Run", "check_names", "objective", "padded_objective"]


def objective(loss: Callable, net: DLN, kappa=None, live: DLN | None = None) -> Array:
    """``E(W) + kappa/2 ||W||^2`` (``E`` = `dlnjax.network_loss`; just ``E`` when ``kappa`` is ``None``).

    With ``live`` (a padded run) the weight decay counts the real network only (`dlnjax.padded_squared_norm`).
    """
    value = network_loss(loss, net)
    if kappa is None:
        return value
    sq = squared_norm(net) if live is None else padded_squared_norm(net, live)
    return value + 0.5 * kappa * sq


def padded_objective(
    loss: Callable, net: DLN, live: DLN, kappa: float | Array | None = None
) -> Float[Array, ""]:
    """The objective ``E(W) + kappa/2 ||W||^2`` of the real network inside ``net`` (one network).

    ``E`` is `dlnjax.network_loss`, unchanged by padding; the weight decay uses `padded_squared_norm` (the
    frozen layers do not count). ``dlnjax.train``'s own ``"objective"`` metric of a padded run includes the
    frozen layers' constant ``kappa/2 (N_max - N) d_1``; its gradient on the live entries, and so the masked
    trajectory, is the same.
    """
    check_padded_pair(net, live, "padded_objective")
    return objective(loss, net, kappa, live)


@dataclasses.dataclass(frozen=True)
class Run:
    """What the quantities of one run depend on besides its state.

    - `loss`: the loss ``X -> real scalar``.
    - `kappa`: the weight decay of the objective (``None``: none).
    - `live`: the 0/1 mask of a padded run (``None``: not padded): layer quantities of the real network.
    - `grad_mask`: the entries ``grad_norm`` counts (``None``: those of `live`, or all).
    - `n_layers`: pad ``layer_norms`` with NaN to this length (``None``: no padding).
    - `sharpness_iterations`: the Lanczos steps of ``sharpness``.
    - `end_to_end_state`: the state is the end-to-end matrix ``X`` (`dlnjax.flows.EndToEnd`), not a `DLN`.
    """

    loss: Callable
    kappa: Array | float | None = None
    live: DLN | None = None
    grad_mask: DLN | None = None
    n_layers: int | None = None
    sharpness_iterations: int = 20
    end_to_end_state: bool = False


@dataclasses.dataclass(frozen=True)
class Quantity:
    """A recorded quantity: ``fn(run, state, grad=None)`` and what it needs.

    `layers`: needs the layers (not just ``X``); `loss`: needs a data loss; `linear`: needs the end-to-end
    matrix of a linear network; `trailing`: the name of its one trailing dimension (``None``: a scalar);
    `train`: a built-in metric of `dlnjax.train`.
    """

    fn: Callable
    layers: bool = False
    loss: bool = False
    linear: bool = False
    trailing: str | None = None
    train: bool = True


def _X(run: Run, state):
    return state if run.end_to_end_state else end_to_end(state)


def _nan_pad(v, n):
    if n is None or v.shape[-1] >= n:
        return v
    return jnp.concatenate([v, jnp.full(v.shape[:-1] + (n - v.shape[-1],), jnp.nan, v.dtype)], -1)


def _loss(run: Run, state, grad=None):
    return run.loss(state) if run.end_to_end_state else network_loss(run.loss, state)


def _objective(run: Run, net: DLN, grad=None):
    return objective(run.loss, net, run.kappa, run.live)


def _test_error(run: Run, state, grad=None):
    return run.loss.test_error(_X(run, state))


def _balancedness(run: Run, net: DLN, grad=None):
    return balancedness(net) if run.live is None else padded_balancedness(net, run.live)


def _squared_norm(run: Run, net: DLN, grad=None):
    return squared_norm(net) if run.live is None else padded_squared_norm(net, run.live)


def _layer_norms(run: Run, net: DLN, grad=None):
    norms = layer_norms(net) if run.live is None else padded_layer_norms(net, run.live)
    return _nan_pad(norms, run.n_layers)


def _grad_norm(run: Run, net: DLN, grad=None):
    if grad is None:
        grad = jax.grad(lambda n: objective(run.loss, n, run.kappa, run.live))(net)
        grad = jax.tree_util.tree_map(jnp.conj, grad)
    mask = run.live if run.grad_mask is None else run.grad_mask
    arrays = grad.arrays()
    if mask is not None:
        arrays = jax.tree_util.tree_map(jnp.multiply, arrays, mask.arrays())
    return jnp.sqrt(tree_sq_norm(arrays))


def _sharpness(run: Run, net: DLN, grad=None):
    return sharpness(run.loss, net, iterations=run.sharpness_iterations, mask=run.live)


def _effective_rank(run: Run, state, grad=None):
    return effective_rank(_X(run, state))


def _numerical_rank(run: Run, state, grad=None):
    return numerical_rank(_X(run, state)).astype(jnp.result_type(float))


def _singular_values(run: Run, state, grad=None):
    return jnp.linalg.svd(_X(run, state), compute_uv=False)


QUANTITIES: dict[str, Quantity] = {
    "loss": Quantity(_loss, loss=True),
    "objective": Quantity(_objective, layers=True, loss=True),
    "test_error": Quantity(_test_error, loss=True, linear=True),
    "balancedness": Quantity(_balancedness, layers=True),
    "squared_norm": Quantity(_squared_norm, layers=True),
    "layer_norms": Quantity(_layer_norms, layers=True, trailing="layer"),
    "grad_norm": Quantity(_grad_norm, layers=True, loss=True),
    "sharpness": Quantity(_sharpness, layers=True, loss=True, train=False),
    "effective_rank": Quantity(_effective_rank, linear=True, train=False),
    "numerical_rank": Quantity(_numerical_rank, linear=True, train=False),
    "singular_values": Quantity(_singular_values, linear=True, trailing="index", train=False),
}
"""The recorded quantities by name (see the module docstring)."""


def check_names(names, what: str) -> tuple[str, ...]:
    """``names`` as a tuple, each a key of `QUANTITIES` (else `dlnjax.OptionError` naming ``what``)."""
    names = (names,) if isinstance(names, str) else tuple(names)
    unknown = [n for n in names if n not in QUANTITIES]
    if unknown:
        raise OptionError(f"{what}: unknown quantities {unknown}; known: {sorted(QUANTITIES)}.")
    return names
