from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array

from .._errors import OptionError, ShapeError, UnsupportedError
from .._numerics import check_finite, matmul, sqabs


def checked_array(x, what: str, ndim: int | tuple[int, ...], dtype=None) -> Array:
    if not hasattr(x, "shape"):
        x = np.asarray(x)
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if jnp.ndim(x) not in ndims:
        raise ShapeError(
            f"{what} must have {' or '.join(map(str, ndims))} dimensions; got shape {jnp.shape(x)}."
        )
    x = jnp.asarray(x, dtype)
    if jnp.issubdtype(x.dtype, jnp.inexact):
        check_finite(x, what)
    return x


class AbstractLoss(eqx.Module):
    """A loss ``E(X)`` of the end-to-end matrix ``X`` (shape ``(d_N, d_0)``): a real scalar, jit and vmap friendly.

    Subclasses hold their data as arrays (so a loss is a pytree: ``jax.vmap`` over data works) and
    an optional ground truth ``truth``; ``test_error(X)`` is the relative Frobenius distance
    ``||X - truth||_F / ||truth||_F`` and raises without a ground truth.
    """

    truth: Array | None

    @property
    def shape(self) -> tuple[int, int]:
        raise NotImplementedError

    def _check(self, X) -> None:
        if jnp.shape(X) != tuple(self.shape):
            raise ShapeError(
                f"{type(self).__name__}: X must have shape {tuple(self.shape)} (d_N, d_0); got {jnp.shape(X)}."
            )

    def test_error(self, X) -> Array:
        """``||X - truth||_F / ||truth||_F``: the relative recovery error against the ground truth."""
        if self.truth is None:
            raise UnsupportedError(
                f"{type(self).__name__}: test_error needs a ground truth; build the loss with truth=."
            )
        self._check(X)
        num = jnp.sqrt(jnp.sum(sqabs(X - self.truth)))
        den = jnp.sqrt(jnp.sum(sqabs(self.truth)))
        return num / jnp.where(den > 0, den, 1.0)


def checked_truth(truth, shape, what: str):
    if truth is None:
        return None
    truth = checked_array(truth, f"{what}: truth", 2)
    if tuple(truth.shape) != tuple(shape):
        raise ShapeError(f"{what}: truth must have shape {tuple(shape)}; got {tuple(truth.shape)}.")
    return truth


def checked_rank(shape, rank: int, what: str) -> tuple[int, int]:
    """``shape`` as ``(d_out, d_in)``; `OptionError` (naming ``what``) unless ``1 <= rank <= min(shape)``."""
    d_out, d_in = (int(s) for s in shape)
    if not 1 <= rank <= min(d_out, d_in):
        raise OptionError(f"{what}: rank must lie in [1, {min(d_out, d_in)}]; got {rank}.")
    return d_out, d_in


def random_low_rank(keys, shape: tuple[int, int], rank: int, norm: float, dtype) -> Array:
    """``M = U V^T`` with Gaussian factors ``U`` (``d_out x rank``) and ``V^T`` (``rank x d_in``) drawn with
    the two ``keys``, scaled to ``||M||_F = norm``."""
    (d_out, d_in), (ku, kv) = shape, keys
    M = matmul(jr.normal(ku, (d_out, rank), dtype), jr.normal(kv, (rank, d_in), dtype))
    return norm * M / jnp.linalg.norm(M)
