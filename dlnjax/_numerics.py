"""Shared numerics of the package: products in a stated precision, conjugate transposes, squared
norms and moduli, and the finiteness check of inputs.

Every product of the package goes through `dot` (``HIGHEST`` precision: float32 and float64 inputs
are multiplied at their own precision, never in TF32 or bfloat16 passes on accelerators).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ._errors import NonFiniteError

__all__ = ["check_finite", "ct", "dot", "matmul", "rdot", "sq_norm", "sqabs", "tree_sq_norm"]


def check_finite(x, what: str):
    """Raise a clear error if ``x`` (an array or a pytree of them) holds non-finite values.

    Concrete input is checked at once (`dlnjax.NonFiniteError`, a ``ValueError``; no compilation);
    traced input at run time with ``eqx.error_if`` (an ``EquinoxRuntimeError``).
    """
    leaves = jax.tree_util.tree_leaves(x)
    if not any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        if not all(np.all(np.isfinite(np.asarray(leaf))) for leaf in leaves):
            raise NonFiniteError(f"{what} holds non-finite values (nan or inf).")
        return x
    bad = jnp.any(jnp.stack([~jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))
    return eqx.error_if(x, bad, f"{what} holds non-finite values (nan or inf).")


_SMALL_K = 8  # largest contraction length written as a multiply-and-sum
_SMALL_MKN = 4096  # largest m * k * n (per leading index) of the broadcast product


def dot(a, b):
    """``a @ b`` (``jnp.matmul`` semantics, ``HIGHEST`` precision), real or complex.

    Tiny products (contraction length ``k <= 8``, ``m k n <= 4096``, both operands at least 2-D;
    chosen by static shape) are written as a broadcast multiply-and-sum
    ``sum(a[..., :, :, None] * b[..., None, :, :], axis=-2)``: XLA:CPU fuses it into one loop
    kernel, where a ``dot`` becomes a batched-GEMM call per matrix under ``jax.vmap``. Every other
    shape goes to ``jnp.matmul`` (BLAS-sized blocks; d = 32, 100 never take the small path). Both are exact products summed in working precision.

    By default XLA 0.10 hands the batched elementwise/reduce fusions to YNNPACK, which is slow on
    these tiny shapes; ``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=individual_dot`` (set before
    JAX starts) keeps them in XLA's own fused loops. Measurements: docs/performance.md, "Lab notes".
    """
    if (
        jnp.ndim(a) >= 2
        and jnp.ndim(b) >= 2
        and jnp.shape(a)[-1] <= _SMALL_K
        and jnp.shape(a)[-2] * jnp.shape(a)[-1] * jnp.shape(b)[-1] <= _SMALL_MKN
        and jnp.issubdtype(jnp.result_type(a, b), jnp.inexact)
    ):
        if jnp.shape(a)[-1] != jnp.shape(b)[-2]:  # the error message of matmul
            return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)
        return jnp.sum(jnp.asarray(a)[..., :, :, None] * jnp.asarray(b)[..., None, :, :], axis=-2)
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def matmul(a, b):
    """``jnp.matmul(a, b)`` at ``HIGHEST`` precision, always as a ``dot`` (never `dot`'s multiply-and-sum path for
    tiny shapes): for data built once (random targets, projections), bitwise what ``jnp.matmul`` gives on a CPU."""
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def ct(a):
    """Conjugate transpose of the last two axes."""
    return jnp.conj(jnp.swapaxes(a, -1, -2))


def rdot(x: Array, y: Array) -> Array:
    """``Re Tr(x^* y)``."""
    return jnp.real(jnp.vdot(x.reshape(-1), y.reshape(-1), precision=jax.lax.Precision.HIGHEST))


def sq_norm(x: Array) -> Array:
    """``||x||^2``; for real ``x`` as a ``1 x n`` by ``n x 1`` product (one kernel; XLA:CPU turns a vector dot into a
    slower product and reduction)."""
    if jnp.iscomplexobj(x):
        return rdot(x, x)
    x = x.reshape(1, -1)
    return jnp.matmul(x, x.T, precision=jax.lax.Precision.HIGHEST)[0, 0]


def sqabs(a) -> Array:
    """``|a|^2`` elementwise (real for complex ``a``)."""
    return jnp.real(a * jnp.conj(a))


def tree_sq_norm(tree) -> Array:
    """``sum ||leaf||^2`` over the leaves of a pytree (real and complex)."""
    return sum(jnp.sum(sqabs(x)) for x in jax.tree_util.tree_leaves(tree))
