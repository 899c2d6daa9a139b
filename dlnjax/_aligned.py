"""Exact solutions of the end-to-end flow from a start aligned with the target (Saxe et al. 2014; seed 003).

For ``E(X) = ½ ||X - M||_F^2`` and ``X0`` sharing the singular vectors of ``M`` (``M = U diag(m) V^*``,
``X0 = U diag(s0) V^*``, ``m_i, s0_i >= 0``), the flow ``dX/dt = -A_N(X)[X - M]`` (`dlnjax.flows.EndToEnd`) keeps the
singular vectors and decouples into one scalar equation per singular value: with
``a_N(s^2, s^2) = N s^(2 - 2/N)`` and ``a_inf(s^2, s^2) = s^2``,

    ds/dt = -N s^(2 - 2/N) (s - m)         (depth N),
    ds/dt = -s^2 (s - m)                   (N = inf, rescaled time).

Each is separable, ``t(s) = int_{s0}^{s} du / (c u^q (m - u))`` with ``(c, q) = (N, 2 - 2/N)`` or ``(1, 2)``:

- ``N = 1``: ``s(t) = m + (s0 - m) e^{-t}``;
- ``N = 2``: the logistic solution ``s(t) = m / (1 + (m/s0 - 1) e^{-2 m t})``;
- ``N = inf``: by partial fractions, ``t(s) = F(s) - F(s0)``, ``F(s) = -1/(m s) + ln(s / |m - s|) / m^2``;
- ``m = 0``: ``ds/dt = -c s^(q+1)``, ``s(t) = (s0^-q + q c t)^(-1/q)``;
- other ``N``: ``t(s)`` by adaptive quadrature (in ``ln u``) of ``[u^-q - m^-q] / (c (m - u))``, which is bounded at
  ``u = m``, plus ``ln(|m - s0| / |m - s|) / (c m^q)``.

``s(t)`` is then the root of ``t(s) = t`` on the interval between ``s0`` and ``m`` (``t(s)`` is monotone there), found
by bisection-safeguarded Brent iteration to a relative ``1e-15``. NumPy/SciPy in float64, for tests and benchmarks.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import integrate, optimize

from ._errors import OptionError, ShapeError

__all__ = ["aligned_singular_values"]


def _coefficients(depth):
    if depth == math.inf:
        return 1.0, 2.0
    return float(depth), 2.0 - 2.0 / depth


def _time_to(s, s0, m, depth) -> float:
    """``t(s)``: the time at which the singular value started at ``s0`` reaches ``s`` (``s`` between ``s0`` and ``m``)."""
    c, q = _coefficients(depth)
    if depth == math.inf:
        F = lambda u: -1.0 / (m * u) + math.log(u / abs(m - u)) / m**2
        return F(s) - F(s0)
    if depth == 2:
        G = lambda u: math.log(u / abs(m - u)) / (2 * m)
        return G(s) - G(s0)
    # 1/(c u^q (m - u)) = [1/(c u^q) - 1/(c m^q)] / (m - u) + 1/(c m^q (m - u)): a regular part (bounded at u = m),
    # integrated in v = ln u, and a logarithm in closed form
    mq = m**q
    reg = lambda v: (
        math.exp(v) * (mq - math.exp(q * v)) / (c * math.exp(q * v) * mq * (m - math.exp(v)))
    )
    val, _ = integrate.quad(reg, math.log(s0), math.log(s), epsabs=0.0, epsrel=1e-13, limit=200)
    return val + (math.log(abs(m - s0)) - math.log(abs(m - s))) / (c * mq)


def _one(s0: float, m: float, depth, t: float) -> float:
    if t == 0 or s0 == m:
        return s0
    c, q = _coefficients(depth)
    if depth == 1:
        return m + (s0 - m) * math.exp(-t)
    if m == 0:
        return (s0**-q + q * c * t) ** (-1.0 / q)
    if depth == 2:
        return m / (1.0 + (m / s0 - 1.0) * math.exp(-2.0 * m * t))
    # s(t) lies strictly between s0 and m; once t(s) exceeds t within rounding of m, return the nearest bracket end
    lo, hi = (s0, m) if s0 < m else (m, s0)
    g = lambda s: _time_to(s, s0, m, depth) - t
    inner = hi - (hi - lo) * 1e-15 if s0 < m else lo + (hi - lo) * 1e-15
    if g(inner) <= 0:  # t is beyond the resolution of the approach to m
        return inner
    a, b = (s0, inner) if s0 < m else (inner, s0)
    return optimize.brentq(g, a, b, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500)


def aligned_singular_values(m, s0, depth, ts) -> np.ndarray:
    """The singular values ``s_i(t)`` of the end-to-end flow ``dX/dt = -A_N(X)[X - M]`` from an aligned start.

    ``m`` (``r``, the singular values of ``M``, ``>= 0``), ``s0`` (``r``, those of ``X0``, ``> 0``), ``depth`` (``N``
    or ``math.inf``: the rescaled limit), ``ts`` (``T`` times ``>= 0``). Returns an array ``(T, r)``: ``X(t) =
    U diag(s(t)) V^*``. Exact (closed forms, or quadrature for ``N not in {1, 2, inf}``; module docstring).
    """
    m = np.asarray(m, float).ravel()
    s0 = np.asarray(s0, float).ravel()
    ts = np.asarray(ts, float).ravel()
    if m.shape != s0.shape:
        raise ShapeError(
            f"aligned_singular_values: m and s0 must have the same length; got {m.shape} and {s0.shape}."
        )
    if np.any(m < 0) or np.any(s0 <= 0) or not (np.all(np.isfinite(m)) and np.all(np.isfinite(s0))):
        raise OptionError("aligned_singular_values: need finite m >= 0 and s0 > 0.")
    if np.any(ts < 0) or not np.all(np.isfinite(ts)):
        raise OptionError("aligned_singular_values: the times must be finite and >= 0.")
    if not (depth == math.inf or (isinstance(depth, int) and depth >= 1)):
        raise OptionError(
            f"aligned_singular_values: depth must be a positive integer or math.inf; got {depth!r}."
        )
    return np.array(
        [[_one(float(a), float(b), depth, float(t)) for a, b in zip(s0, m)] for t in ts]
    )
