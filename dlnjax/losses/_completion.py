from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Int, PRNGKeyArray

from .._errors import InputTypeError, OptionError, ShapeError
from .._numerics import sqabs
from ._base import AbstractLoss, checked_array, checked_rank, checked_truth, random_low_rank


class MatrixCompletion(AbstractLoss):
    """Matrix completion ``E(X) = (1/|Omega|) sum_{(i,j) in Omega} |X_ij - M_ij|^2`` (docs/theory.md §5; seed 003).

    The mean of squared errors over the observed entries, without a ½ (Arora, Cohen, Hu & Luo 2019;
    Cohen, Menon & Veraszto). ``rows``, ``cols`` and ``values`` list the observed entries ``(i, j, M_ij)``;
    ``shape = (d_N, d_0)``. ``truth`` (optional) is the full matrix ``M`` for `test_error`.
    `MatrixCompletion.random` draws a low-rank instance.
    """

    rows: Int[Array, " n"]
    cols: Int[Array, " n"]
    values: Array
    _shape: tuple[int, int] = eqx.field(static=True)

    def __init__(self, rows, cols, values, shape, *, truth=None):
        shape = tuple(int(s) for s in shape)
        if len(shape) != 2 or min(shape) < 1:
            raise ShapeError(
                f"MatrixCompletion: shape must be two positive sizes (d_N, d_0); got {shape}."
            )
        rows = checked_array(rows, "MatrixCompletion: rows", 1)
        cols = checked_array(cols, "MatrixCompletion: cols", 1)
        values = checked_array(values, "MatrixCompletion: values", 1)
        if not (rows.shape == cols.shape == values.shape):
            raise ShapeError(
                f"MatrixCompletion: rows, cols and values must have the same length; got {rows.shape}, {cols.shape}, {values.shape}."
            )
        if rows.shape[0] == 0:
            raise ShapeError("MatrixCompletion: need at least one observed entry.")
        for name, idx, size in (("rows", rows, shape[0]), ("cols", cols, shape[1])):
            if not jnp.issubdtype(idx.dtype, jnp.integer):
                raise InputTypeError(
                    f"MatrixCompletion: {name} must be integer indices; got {idx.dtype}."
                )
            if not isinstance(idx, jax.core.Tracer):
                arr = np.asarray(idx)
                if arr.min() < 0 or arr.max() >= size:
                    raise ShapeError(
                        f"MatrixCompletion: {name} must lie in [0, {size}); got values in [{arr.min()}, {arr.max()}]."
                    )
        self.rows, self.cols, self.values, self._shape = rows, cols, values, shape
        self.truth = checked_truth(truth, shape, "MatrixCompletion")

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    @property
    def n_observed(self) -> int:
        return self.rows.shape[-1]

    def __call__(self, X) -> Array:
        self._check(X)
        return jnp.mean(sqabs(X[self.rows, self.cols] - self.values))

    def mask(self) -> Array:
        """The 0/1 matrix of observed entries (shape ``(d_N, d_0)``)."""
        return jnp.zeros(self.shape).at[self.rows, self.cols].set(1.0)

    @classmethod
    def random(
        cls, key: PRNGKeyArray, shape, rank: int, n_observed: int, *, norm: float = 1.0, dtype=None
    ) -> MatrixCompletion:
        """A random rank-``rank`` matrix ``M = U V^T`` (Gaussian factors) scaled to ``||M||_F = norm``, with
        ``n_observed`` distinct entries observed uniformly at random (the setting of Arora, Cohen, Hu & Luo
        2019: 100 x 100, rank 5, 2000 or 5000 entries, ``||M||_F = 1``)."""
        d_out, d_in = checked_rank(shape, rank, "MatrixCompletion.random")
        if not 1 <= n_observed <= d_out * d_in:
            raise OptionError(
                f"MatrixCompletion.random: n_observed must lie in [1, {d_out * d_in}]; got {n_observed}."
            )
        dtype = jnp.result_type(float) if dtype is None else dtype
        ku, kv, ko = jr.split(key, 3)
        M = random_low_rank((ku, kv), (d_out, d_in), rank, norm, dtype)
        flat = jr.choice(ko, d_out * d_in, (n_observed,), replace=False)
        rows, cols = flat // d_in, flat % d_in
        return cls(rows, cols, M[rows, cols], (d_out, d_in), truth=M)
