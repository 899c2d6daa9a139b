from __future__ import annotations

import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, PRNGKeyArray

from .._errors import OptionError, ShapeError
from .._network import DLN, forward
from .._numerics import dot, matmul, sqabs
from ._base import AbstractLoss, checked_array, checked_truth


class Regression(AbstractLoss):
    """Least-squares regression ``E = (1/n) sum_i ||f(x_i) - y_i||^2`` (no ½, as in seed 004; docs/theory.md §7).

    ``inputs`` has shape ``(n, d_0)`` (one sample per row) and ``targets`` shape ``(n,)`` (then
    ``d_N = 1``) or ``(n, d_N)``. As a loss of the end-to-end matrix, ``f(x) = X x``; for a network
    with a nonlinear activation, `network_loss` evaluates ``f = W_N phi(... phi(W_1 x))`` directly.
    ``truth`` (optional, shape ``(d_N, d_0)``) is the linear map the data were drawn from.
    """

    inputs: Array
    targets: Array

    def __init__(self, inputs, targets, *, truth=None):
        inputs = checked_array(inputs, "Regression: inputs", 2)
        targets = checked_array(targets, "Regression: targets", (1, 2))
        if targets.ndim == 1:
            targets = targets[:, None]
        if targets.shape[0] != inputs.shape[0] or inputs.shape[0] == 0:
            raise ShapeError(
                f"Regression: inputs (n, d_0) and targets (n,) or (n, d_N) need the same n >= 1; "
                f"got {inputs.shape} and {targets.shape}."
            )
        self.inputs, self.targets = inputs, targets
        self.truth = checked_truth(truth, self.shape, "Regression")

    @property
    def shape(self) -> tuple[int, int]:
        return (self.targets.shape[1], self.inputs.shape[1])

    def __call__(self, X) -> Array:
        self._check(X)
        return self._mean_error(dot(self.inputs, X.T))

    def network_loss(self, net: DLN) -> Array:
        """``(1/n) sum_i ||f(x_i) - y_i||^2`` for ``f`` the network function, any activation (docs/theory.md §6)."""
        if (net.widths[-1], net.widths[0]) != self.shape:
            raise ShapeError(
                f"Regression: the network maps {net.widths[0]} -> {net.widths[-1]} but the data need "
                f"{self.shape[1]} -> {self.shape[0]}."
            )
        return self._mean_error(forward(net, self.inputs))

    def _mean_error(self, pred) -> Array:
        return jnp.sum(sqabs(pred - self.targets)) / self.inputs.shape[0]

    def covariance(self) -> Array:
        """The empirical covariance ``Sigma = X^T X / n`` of the inputs (seed 004's ``Sigma``; shape ``(d_0, d_0)``)."""
        return dot(jnp.conj(self.inputs.T), self.inputs) / self.inputs.shape[0]

    def covariance_form(self) -> CovarianceForm:
        """The same loss written through the data's second moments, ``E(X) = Re Tr(X S X^*) - 2 Re Tr(X K) + c``.

        ``S = (1/n) sum_i x_i x_i^*`` (shape ``(d_0, d_0)``), ``K = (1/n) sum_i x_i y_i^*`` (``(d_0, d_N)``),
        ``c = (1/n) sum_i ||y_i||^2``: expanding ``||X x_i - y_i||^2``. Equal to this loss up to rounding; one
        evaluation costs ``O(d_N d_0^2)`` instead of ``O(n d_N d_0)``, so `dlnjax.train` uses it when
        ``d_0 <= n`` (the moments are computed once per call). The rounding error of the value is relative to
        ``c`` rather than to ``E``: the recorded ``"loss"`` of `dlnjax.train` uses the direct form.
        """
        n = self.inputs.shape[0]
        return CovarianceForm(
            dot(self.inputs.T, jnp.conj(self.inputs)) / n,
            dot(self.inputs.T, jnp.conj(self.targets)) / n,
            jnp.sum(sqabs(self.targets)) / n,
            truth=self.truth,
        )

    def least_squares(self) -> Array:
        """The minimum-norm least-squares end-to-end matrix ``w*`` (shape ``(d_N, d_0)``): ``argmin E``."""
        sol, *_ = jnp.linalg.lstsq(self.inputs, self.targets)
        return sol.T

    @classmethod
    def random(
        cls, key: PRNGKeyArray, n: int, d_in: int, d_out: int = 1, *, noise: float = 1.0, dtype=None
    ):
        """Seed 004's synthetic data: ``x_i ~ N(0, I_{d_in})``, ``y_i = w x_i + noise * eps_i`` with ``w`` Gaussian
        normalized to ``||w||_F = 1`` (published: n = 50, d = 5, noise 1). ``truth = w``."""
        if n < 1 or d_in < 1 or d_out < 1 or not noise >= 0:
            raise OptionError(
                f"Regression.random: need n, d_in, d_out >= 1 and noise >= 0; got {n}, {d_in}, {d_out}, {noise}."
            )
        dtype = jnp.result_type(float) if dtype is None else dtype
        kx, kw, ke = jr.split(key, 3)
        x = jr.normal(kx, (n, d_in), dtype)
        w = jr.normal(kw, (d_out, d_in), dtype)
        w = w / jnp.linalg.norm(w)
        y = matmul(x, w.T) + noise * jr.normal(ke, (n, d_out), dtype)
        return cls(x, y, truth=w)


class CovarianceForm(AbstractLoss):
    """``E(X) = Re Tr(X S X^*) - 2 Re Tr(X K) + c``: a quadratic loss given by its moments (`Regression.covariance_form`).

    ``S`` (``(d_0, d_0)``, Hermitian positive semi-definite), ``K`` (``(d_0, d_N)``) and the constant ``c``.
    Its gradient is ``2 (X S - K^*)`` (for the inner product ``Re Tr(A^* B)``).
    """

    S: Array
    K: Array
    c: Array

    def __init__(self, S, K, c, *, truth=None):
        self.S, self.K, self.c = S, K, c
        self.truth = truth

    @property
    def shape(self) -> tuple[int, int]:
        return (self.K.shape[-1], self.S.shape[-1])

    def __call__(self, X) -> Array:
        self._check(X)
        quadratic = jnp.sum(jnp.real(dot(X, self.S) * jnp.conj(X)))
        return quadratic - 2 * jnp.sum(jnp.real(X * self.K.T)) + self.c
