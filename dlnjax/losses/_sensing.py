from __future__ import annotations

import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, PRNGKeyArray

from .._errors import OptionError, ShapeError
from .._numerics import sqabs
from ._base import AbstractLoss, checked_array, checked_rank, checked_truth, random_low_rank


class MatrixSensing(AbstractLoss):
    """Matrix sensing ``E(X) = (1/m) sum_i |<A_i, X> - y_i|^2`` with ``<A, X> = sum_jk A_jk X_jk``.

    The mean of squared errors, without a ½ (as `MatrixCompletion`, which is the special case of
    ``A_i`` a matrix unit). ``measurements`` has shape ``(m, d_N, d_0)``, ``values`` shape ``(m,)``;
    ``truth`` (optional) is the matrix sensed, for `test_error`. `MatrixSensing.random` draws
    Gaussian measurements of a random low-rank matrix.
    """

    measurements: Array
    values: Array

    def __init__(self, measurements, values, *, truth=None):
        measurements = checked_array(measurements, "MatrixSensing: measurements", 3)
        values = checked_array(values, "MatrixSensing: values", 1)
        if measurements.shape[0] != values.shape[0] or values.shape[0] == 0:
            raise ShapeError(
                "MatrixSensing: need as many values as measurement matrices (at least one); "
                f"got measurements {measurements.shape} and values {values.shape}."
            )
        self.measurements, self.values = measurements, values
        self.truth = checked_truth(truth, measurements.shape[1:], "MatrixSensing")

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.measurements.shape[1:])

    def __call__(self, X) -> Array:
        self._check(X)
        pred = jnp.einsum("ijk,jk->i", self.measurements, X, precision="highest")
        return jnp.mean(sqabs(pred - self.values))

    @classmethod
    def random(
        cls,
        key: PRNGKeyArray,
        shape,
        rank: int,
        n_measurements: int,
        *,
        norm: float = 1.0,
        dtype=None,
    ):
        """Gaussian measurements ``A_i`` (entries N(0, 1)) of a random rank-``rank`` ``M`` with ``||M||_F = norm``."""
        d_out, d_in = checked_rank(shape, rank, "MatrixSensing.random")
        if n_measurements < 1:
            raise OptionError(
                f"MatrixSensing.random: n_measurements must be positive; got {n_measurements}."
            )
        dtype = jnp.result_type(float) if dtype is None else dtype
        ku, kv, ka = jr.split(key, 3)
        M = random_low_rank((ku, kv), (d_out, d_in), rank, norm, dtype)
        A = jr.normal(ka, (n_measurements, d_out, d_in), dtype)
        return cls(A, jnp.einsum("ijk,jk->i", A, M, precision="highest"), truth=M)
