"""Losses ``E(X)`` of the end-to-end matrix (docs/theory.md §5–7): callables ``X -> real scalar``, jit and vmap friendly.

Each is an Equinox module holding its data (a pytree), with ``test_error(X)`` against a ground
truth when one is given. Conventions (stated in each docstring): `MatrixCompletion`, `MatrixSensing`
and `Regression` are means of squared errors without a ½ (seeds 003, 004); `Factorization` is
``½ ||X - target||_F^2`` (seed 002).
"""

from ._base import AbstractLoss as AbstractLoss
from ._completion import MatrixCompletion as MatrixCompletion
from ._factorization import Factorization as Factorization
from ._regression import Regression as Regression
from ._sensing import MatrixSensing as MatrixSensing
