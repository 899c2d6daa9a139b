"""One exception type per kind of bad input (dlnjax/_errors.py), and the public surface (dlnjax.internal)."""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from conftest import rand_layers

import dlnjax
from dlnjax import flows
from dlnjax.losses import MatrixCompletion, Regression

KINDS = (
    dlnjax.ShapeError,
    dlnjax.NonFiniteError,
    dlnjax.OptionError,
    dlnjax.UnsupportedError,
    dlnjax.InputTypeError,
    dlnjax.ConfigError,
    dlnjax.StoreError,
)


def test_every_kind_is_a_value_error_and_distinct():
    for kind in KINDS:
        assert issubclass(kind, ValueError)
    assert issubclass(dlnjax.InputTypeError, TypeError)
    assert issubclass(dlnjax.ConfigError, dlnjax.OptionError)
    assert dlnjax.sweep.ConfigError is dlnjax.ConfigError
    base = [k for k in KINDS if k is not dlnjax.ConfigError]
    for a in base:
        for b in base:
            assert (a is b) == issubclass(a, b), (a, b)
    err = dlnjax.ConfigError("grid.depth", "bad")
    assert err.field == "grid.depth" and "grid.depth" in str(err)


def _loss(X):
    return jnp.sum(X**2)


CASES = [
    # (kind, call) — one raise site per kind and module
    (dlnjax.ShapeError, lambda: dlnjax.DLN([np.ones((3, 2)), np.ones((4, 4))])),
    (dlnjax.NonFiniteError, lambda: dlnjax.DLN([np.full((2, 2), np.nan)])),
    (dlnjax.NonFiniteError, lambda: dlnjax.fiber_center(np.full((2, 2), np.inf), 2)),
    (dlnjax.UnsupportedError, lambda: dlnjax.DLN([np.ones((2, 2)) * 1j], activation="relu")),
    (dlnjax.ShapeError, lambda: dlnjax.gaussian(jr.PRNGKey(0), (3,))),
    (dlnjax.OptionError, lambda: dlnjax.residual(jr.PRNGKey(0), 0, 3, 1.0)),
    (dlnjax.OptionError, lambda: dlnjax.end_to_end_operator(jnp.eye(2), jnp.eye(2), 0)),
    (dlnjax.InputTypeError, lambda: dlnjax.end_to_end_operator(_net(), jnp.eye(2), 2)),
    (dlnjax.ShapeError, lambda: dlnjax.effective_rank(jnp.ones(3))),
    (dlnjax.InputTypeError, lambda: dlnjax.sharpness(_loss, "net")),
    (
        dlnjax.UnsupportedError,
        lambda: dlnjax.sharpness(_loss, _net().replace_arrays(*(a * 1j for a in _net().arrays()))),
    ),
    (dlnjax.OptionError, lambda: dlnjax.sharpness(_loss, _net(), iterations=0)),
    (dlnjax.OptionError, lambda: dlnjax.train(_loss, _net(), optax.sgd(0.1), 0)),
    (
        dlnjax.OptionError,
        lambda: dlnjax.train(_loss, _net(), optax.sgd(0.1), 2, metrics=("speed",)),
    ),
    (dlnjax.InputTypeError, lambda: dlnjax.train(_loss, _net(), "sgd", 2)),
    (
        dlnjax.UnsupportedError,
        lambda: dlnjax.train(_loss, _net(), optax.sgd(0.1), 2, metrics=("test_error",)),
    ),
    (dlnjax.ShapeError, lambda: dlnjax.pad(_net(), 1, 4)),
    (dlnjax.UnsupportedError, lambda: dlnjax.pad(_net().with_activation("gelu"), 4, 4)),
    (dlnjax.UnsupportedError, lambda: dlnjax.end_to_end(_net().with_activation("relu"))),
    (dlnjax.ShapeError, lambda: dlnjax.forward(_net(), jnp.ones((3, 7)))),
    (dlnjax.OptionError, lambda: flows.Langevin(None, -1.0, 1.0)),
    (dlnjax.OptionError, lambda: flows.FiberSchatten(0.5)),
    (dlnjax.InputTypeError, lambda: flows.Masked(flows.Gradient(_loss), "mask")),
    (dlnjax.InputTypeError, lambda: flows.EndToEnd(3.0, 2)),
    (dlnjax.ShapeError, lambda: Regression(np.ones((3, 2)), np.ones((4, 1)))),
    (dlnjax.OptionError, lambda: MatrixCompletion.random(jr.PRNGKey(0), (3, 3), 5, 4)),
    (
        dlnjax.UnsupportedError,
        lambda: Regression(np.ones((3, 2)), np.ones((3, 1))).test_error(jnp.ones((1, 2))),
    ),
]


def _net():
    return dlnjax.DLN(rand_layers(0, (2, 3, 3, 2)))


@pytest.mark.parametrize(
    "kind, call", CASES, ids=[f"{i}-{c[0].__name__}" for i, c in enumerate(CASES)]
)
def test_raise_sites_raise_their_kind(kind, call):
    with pytest.raises(kind) as exc:
        call()
    assert type(exc.value) is kind  # exactly this kind, not merely a ValueError


def test_internal_holds_oracles_and_solver_internals_not_the_top_level():
    import dlnjax.internal as internal

    public = set(dir(dlnjax))
    for name in internal.MOVED + ("AbstractDelegatingSolver", "ElementwiseScale", "lanczos_top"):
        assert hasattr(internal, name)
        assert name not in public
    for name in internal.MOVED:  # the old names still resolve, with a warning
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert getattr(dlnjax, name) is getattr(internal, name)
        assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    with pytest.raises(AttributeError):
        dlnjax.no_such_name  # noqa: B018
    for name in ("DLN", "train", "simulate", "sharpness", "padded_objective", "ShapeError"):
        assert name in public
