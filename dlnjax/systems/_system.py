"""Realizations ``(A, B, C)`` of a linear system and their ``GL(n)`` orbit (§1.3.1 of Lindsey & Menon, seed 001;
docs/theory.md §13).

A realization of ``x' = A x + B u, y = C x`` ((1.8)) has the transfer function ``H(z) = C (z I - A)^-1 B`` ((1.9)),
unchanged by the action ``(A, B, C) -> (M A M^-1, M B, C M^-1)``, ``M in GL(n)`` ((1.10)). Realizations carry the
real inner product ``<x, y> = Re Tr(A_x^* A_y) + Re Tr(B_x^* B_y) + Re Tr(C_x^* C_y)``, as weight tuples do.

The infinitesimal action of ``xi in gl(n)`` is ``xi . (A, B, C) = ([xi, A], xi B, -C xi)``; these vectors span the
tangent space of the orbit (`orbit_tangent`). Its adjoint (`orbit_tangent_adjoint`) maps ``(Y_A, Y_B, Y_C)`` to
``Y_A A^* - A^* Y_A + Y_B B^* - C^* Y_C``.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Inexact

from .._errors import InputTypeError, ShapeError
from .._numerics import check_finite, ct, dot

__all__ = [
    "LinearSystem",
    "act",
    "transfer_function",
    "markov_parameters",
    "impulse_response",
    "orbit_tangent",
    "orbit_tangent_adjoint",
    "random_system",
    "system_inner",
    "system_sq_norm",
]


class LinearSystem(eqx.Module):
    """A realization ``(A, B, C)`` of ``x' = A x + B u, y = C x`` ((1.8) of seed 001).

    ``A`` is ``n x n``, ``B`` is ``n x m``, ``C`` is ``p x n`` (state, input and output dimensions ``n, m, p``),
    real or complex; the three are promoted to one inexact dtype. Leading batch axes (shared by the three)
    are allowed, so ``jax.vmap`` over a function that builds or takes a system gives a batch of systems, and a
    Diffrax solve saves one with a leading time axis. Shapes that do not fit raise `dlnjax.ShapeError`,
    non-finite entries `dlnjax.NonFiniteError` (concrete input; traced input is checked at run time).

    **Attributes:** `A`, `B`, `C`; `n`, `m`, `p` (the dimensions, static).
    """

    A: Inexact[Array, "*batch n n"]
    B: Inexact[Array, "*batch n m"]
    C: Inexact[Array, "*batch p n"]

    def __init__(self, A, B, C):
        arrays = [jnp.asarray(a) for a in (A, B, C)]
        if not all(jnp.ndim(a) >= 2 for a in arrays):
            raise ShapeError(
                f"LinearSystem: A, B, C must be (batches of) matrices; got shapes {[a.shape for a in arrays]}."
            )
        dtype = jnp.result_type(*arrays)
        if not jnp.issubdtype(dtype, jnp.inexact):
            dtype = jnp.result_type(float)
        self.A, self.B, self.C = (a.astype(dtype) for a in arrays)

    def __check_init__(self):
        A, B, C = self.A, self.B, self.C
        if not all(hasattr(a, "shape") for a in (A, B, C)):
            return  # placeholders (a partition of a system): nothing to check
        batch = A.shape[:-2]
        n = A.shape[-1]
        if (
            A.shape[-2] != n
            or B.shape[:-2] != batch
            or C.shape[:-2] != batch
            or B.shape[-2] != n
            or C.shape[-1] != n
        ):
            raise ShapeError(
                "LinearSystem: need A of shape (n, n), B of shape (n, m) and C of shape (p, n) with the same "
                f"leading batch axes; got A {A.shape}, B {B.shape}, C {C.shape}."
            )
        if n < 1 or B.shape[-1] < 1 or C.shape[-2] < 1:
            raise ShapeError(
                f"LinearSystem: n, m, p must be positive; got A {A.shape}, B {B.shape}, C {C.shape}."
            )
        if not any(isinstance(a, jax.core.Tracer) for a in (A, B, C)):
            check_finite((A, B, C), "LinearSystem")  # traced input: checked where it is used

    @property
    def n(self) -> int:
        return self.A.shape[-1]

    @property
    def m(self) -> int:
        return self.B.shape[-1]

    @property
    def p(self) -> int:
        return self.C.shape[-2]

    @property
    def dtype(self):
        return self.A.dtype

    def arrays(self) -> tuple[Array, Array, Array]:
        """``(A, B, C)``."""
        return self.A, self.B, self.C


def _require(sys, what: str) -> None:
    if not isinstance(sys, LinearSystem):
        raise InputTypeError(
            f"{what}: expected a dlnjax.systems.LinearSystem; got {type(sys).__name__}."
        )


def system_inner(x: LinearSystem, y: LinearSystem) -> Array:
    """``<x, y> = Re Tr(A_x^* A_y) + Re Tr(B_x^* B_y) + Re Tr(C_x^* C_y)`` (the induced metric)."""
    return sum(jnp.sum(jnp.real(jnp.conj(a) * b)) for a, b in zip(x.arrays(), y.arrays()))


def system_sq_norm(sys: LinearSystem) -> Array:
    """``||A||^2 + ||B||^2 + ||C||^2``, the objective of norm balancing (§1.3.1 of seed 001)."""
    return system_inner(sys, sys)


def act(M: Inexact[Array, "n n"], sys: LinearSystem) -> LinearSystem:
    """The action (1.10) of seed 001: ``(M A M^-1, M B, C M^-1)`` for an invertible ``M``.

    ``M^-1`` is applied by LU solves, never formed. The transfer function is unchanged.
    """
    _require(sys, "act")
    M = jnp.asarray(M, jnp.result_type(M, sys.A))
    if M.shape[-2:] != (sys.n, sys.n):
        raise ShapeError(f"act: M must be {sys.n} x {sys.n}; got shape {M.shape}.")
    right = lambda X: ct(jnp.linalg.solve(ct(M), ct(X)))  # X M^-1
    A = dot(M, sys.A)
    return LinearSystem(right(A), dot(M, sys.B), right(sys.C))


def transfer_function(sys: LinearSystem, z) -> Inexact[Array, "*z p m"]:
    """``H(z) = C (z I - A)^-1 B`` ((1.9) of seed 001) at the complex points ``z`` (any shape; result ``z.shape + (p, m)``).

    One LU solve per point (``jnp.linalg.solve``), vectorized over ``z``.
    """
    _require(sys, "transfer_function")
    z = jnp.asarray(z)
    dtype = jnp.result_type(sys.A, z, jnp.complex64)
    eye = jnp.eye(sys.n, dtype=dtype)

    def one(zi):
        return dot(
            sys.C.astype(dtype),
            jnp.linalg.solve(zi * eye - sys.A.astype(dtype), sys.B.astype(dtype)),
        )

    flat = jax.vmap(one)(z.reshape(-1))
    return flat.reshape(z.shape + (sys.p, sys.m))


def markov_parameters(sys: LinearSystem, k: int) -> Inexact[Array, "k p m"]:
    """The Markov parameters ``C A^j B``, ``j = 0, ..., k-1``, stacked (shape ``(k, p, m)``).

    They are the Laurent coefficients of ``H(z) = sum_j C A^j B z^(-j-1)`` at infinity, so they determine the transfer
    function and are invariant under (1.10); for the discrete-time system ``x_{t+1} = A x_t + B u_t`` they are its
    impulse response. One ``lax.scan`` of ``k`` products ``A^j B``.
    """
    _require(sys, "markov_parameters")
    if not isinstance(k, int) or k < 1:
        raise ShapeError(f"markov_parameters: k must be a positive int; got {k!r}.")

    def step(v, _):
        return dot(sys.A, v), dot(sys.C, v)

    _, out = jax.lax.scan(step, sys.B, None, length=k)
    return out


def impulse_response(sys: LinearSystem, ts) -> Inexact[Array, "T p m"]:
    """The impulse response ``h(t) = C e^(A t) B`` of the continuous-time system (1.8) at the times ``ts``."""
    _require(sys, "impulse_response")
    ts = jnp.asarray(ts)
    one = lambda t: dot(sys.C, dot(jax.scipy.linalg.expm(t * sys.A), sys.B))
    return jax.vmap(one)(ts.reshape(-1)).reshape(ts.shape + (sys.p, sys.m))


def orbit_tangent(sys: LinearSystem, xi: Inexact[Array, "n n"]) -> LinearSystem:
    """``xi . (A, B, C) = (xi A - A xi, xi B, -C xi)``: the derivative of the action (1.10) at ``M = I`` along ``xi``.

    These vectors, ``xi in gl(n)``, span the tangent space of the orbit at ``sys`` (docs/theory.md §13).
    """
    _require(sys, "orbit_tangent")
    return LinearSystem(dot(xi, sys.A) - dot(sys.A, xi), dot(xi, sys.B), -dot(sys.C, xi))


def orbit_tangent_adjoint(sys: LinearSystem, Y: LinearSystem) -> Inexact[Array, "n n"]:
    """The adjoint of `orbit_tangent` for ``<.,.>``: ``Y_A A^* - A^* Y_A + Y_B B^* - C^* Y_C``."""
    _require(sys, "orbit_tangent_adjoint")
    return dot(Y.A, ct(sys.A)) - dot(ct(sys.A), Y.A) + dot(Y.B, ct(sys.B)) - dot(ct(sys.C), Y.C)


def random_system(
    key,
    n: int,
    m: int,
    p: int,
    *,
    stable: bool = True,
    discrete: bool = False,
    margin: float = 0.1,
    dtype=float,
) -> LinearSystem:
    """A random realization with Gaussian ``B, C`` (entries of variance ``1``) and ``A`` Gaussian of variance ``1/n``.

    With ``stable=True``, ``A`` is shifted by a multiple of ``I`` so that its spectral abscissa is ``-margin``
    (continuous-time stable), or with ``discrete=True`` scaled so that its spectral radius is ``1 - margin``
    (discrete-time stable: the Markov parameters decay). Uses ``jnp.linalg.eigvals`` (CPU only). Complex ``dtype`` draws complex Gaussians (real and imaginary parts of variance 1/2).
    """
    ka, kb, kc = jr.split(key, 3)
    A = jr.normal(ka, (n, n), dtype) / jnp.sqrt(n)
    B = jr.normal(kb, (n, m), dtype)
    C = jr.normal(kc, (p, n), dtype)
    if stable and discrete:
        A = A * ((1 - margin) / jnp.max(jnp.abs(jnp.linalg.eigvals(A)))).astype(A.dtype)
    elif stable:
        shift = jnp.max(jnp.real(jnp.linalg.eigvals(A))) + margin
        A = A - shift.astype(A.dtype) * jnp.eye(n, dtype=A.dtype)
    return LinearSystem(A, B, C)
