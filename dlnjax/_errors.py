"""The exceptions of dlnjax: one type per kind of bad input.

Every check of the package raises one of these, so that a caller can catch a kind of mistake without
matching messages. All are subclasses of ``ValueError`` (`InputTypeError` of ``TypeError`` too), so
code that catches ``ValueError`` keeps working.

- `ShapeError`: arrays whose shapes or widths do not fit (layers that do not chain, a mask of other
  widths, a matrix of the wrong size, a batch where one network is expected).
- `NonFiniteError`: an input holding ``nan`` or ``inf`` (concrete input; traced input is checked at
  run time by ``equinox.error_if``, which raises Equinox's runtime error instead).
- `OptionError`: an option out of its range or not among its choices (``steps < 1``, an unknown metric
  name, a non-positive ``kappa``).
- `UnsupportedError`: a well-formed input that the operation does not support (complex weights where
  only real ones are, a nonlinear network where an end-to-end matrix is needed, a loss without the
  ground truth a metric needs).
- `InputTypeError`: an argument of the wrong type (not a `dlnjax.DLN`, not callable, not an Optax
  optimizer); also a ``TypeError``.
- `ConfigError`: a sweep config field that cannot run (an `OptionError` naming the field).
- `StoreError`: a results directory (or Dataset) that is not a complete sweep result.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "InputTypeError",
    "NonFiniteError",
    "OptionError",
    "ShapeError",
    "StoreError",
    "UnsupportedError",
]


class ShapeError(ValueError):
    """Arrays whose shapes, widths or number of dimensions do not fit together."""


class NonFiniteError(ValueError):
    """An input that holds non-finite values (``nan`` or ``inf``)."""


class OptionError(ValueError):
    """An option whose value is out of its range or not one of its choices."""


class UnsupportedError(ValueError):
    """A well-formed input that the operation does not support (e.g. complex weights, a nonlinear network)."""


class InputTypeError(TypeError, ValueError):
    """An argument of the wrong type (e.g. not a `dlnjax.DLN`). Both a ``TypeError`` and a ``ValueError``."""


class ConfigError(OptionError):
    """A sweep config that cannot run; ``field`` names the offending entry (e.g. ``"grid.depth"``)."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"config field {field!r}: {message}")


class StoreError(ValueError):
    """A results directory or Dataset that is not a (complete) sweep result."""
