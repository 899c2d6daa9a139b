"""Pointwise activations for networks ``f(x) = W_N phi(W_{N-1} ... phi(W_1 x))`` (docs/theory.md §6; seed 002).

A `DLN` is linear by default (``phi`` the identity). For the training path (`dlnjax.train`,
`dlnjax.flows.Gradient` with a data loss such as `dlnjax.losses.Regression`) a network may carry a
positively homogeneous activation (ReLU, leaky ReLU: the setting of Du, Hu & Lee, seed 002) or GELU
(the nonlinear experiment of Marion & Chizat, seed 004). The end-to-end matrix and the fiber
geometry are defined for linear networks only and raise a clear error otherwise.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ._errors import InputTypeError, OptionError, UnsupportedError

__all__ = ["Activation", "as_activation"]

_NAMES = ("identity", "relu", "leaky_relu", "gelu")


@dataclasses.dataclass(frozen=True)
class Activation:
    """A pointwise activation ``phi``: one of ``"identity"``, ``"relu"``, ``"leaky_relu"``, ``"gelu"``.

    Hashable, so a network stores it as static data. ``negative_slope`` is the slope of leaky
    ReLU on the negative half-line (ignored by the others). ``phi(0) = 0`` for all of them, so the
    zero padding of non-uniform widths stays inert.
    """

    name: str = "identity"
    negative_slope: float = 0.01

    def __post_init__(self):
        if self.name not in _NAMES:
            raise OptionError(f"activation must be one of {_NAMES}; got {self.name!r}.")
        if self.name == "leaky_relu" and not (0.0 <= float(self.negative_slope) < 1.0):
            raise OptionError(
                f"leaky_relu: negative_slope must lie in [0, 1); got {self.negative_slope}."
            )

    @property
    def is_linear(self) -> bool:
        return self.name == "identity"

    @property
    def is_homogeneous(self) -> bool:
        """Positively homogeneous of degree one (``phi(c x) = c phi(x)`` for ``c > 0``): the setting of seed 002."""
        return self.name != "gelu"

    def __call__(self, x):
        if self.name == "identity":
            return x
        if jnp.iscomplexobj(x):
            raise UnsupportedError(
                f"activation {self.name!r} needs real weights; got complex values."
            )
        if self.name == "relu":
            return jax.nn.relu(x)
        if self.name == "leaky_relu":
            return jax.nn.leaky_relu(x, self.negative_slope)
        return jax.nn.gelu(x, approximate=False)


def as_activation(activation: str | Activation | None) -> Activation:
    """``"relu"``, ``"leaky_relu"``, ``"gelu"``, ``"identity"``/``None`` or an `Activation` -> an `Activation`."""
    if activation is None:
        return Activation()
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        return Activation(activation)
    raise InputTypeError(
        f"activation must be a name {_NAMES} or an Activation; got {type(activation).__name__}."
    )
