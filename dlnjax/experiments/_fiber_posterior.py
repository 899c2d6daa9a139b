"""The posterior on a fiber concentrates on the balanced orbit (§4.3 of Lindsey & Menon, seed 001; docs/theory.md §11).

`dlnjax.flows.FiberLangevin` (``kappa = 1``, ``beta = beta kappa``) samples ``exp(-beta kappa ||W||^2 / 2) dH`` on
``F_X``; near ``O_X`` the law is a Gaussian in the ``m = dim F_X - dim O_X`` transverse directions, so

``E ||W||^2 = N sum_i sigma_i^(2/N) + m / (beta kappa) + O((beta kappa)^-2)``,  ``E ||G||^2 = O(1 / (beta kappa))``:

the rescaled excess ``(E ||W||^2 - N sum sigma^(2/N)) beta kappa`` tends to ``m`` and the fitted power of the excess
is ``-1`` (of ``E ||G||``, ``-1/2``). For ``d = 1``, ``N = 2`` (the hyperbola, ``m = 1``) the expectations are also
computed by quadrature of the closed-form density on the branch ``w_1 = s > 0``,
``exp(-beta kappa (s^2 + x^2/s^2) / 2) sqrt(1 + x^2/s^4)``.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from matplotlib.figure import Figure
from scipy import integrate

import dlnjax
from dlnjax.flows import FiberLangevin

from ._common import figure

__all__ = [
    "codimension",
    "posterior_chains",
    "posterior_stats",
    "hyperbola_exact",
    "plot_posterior",
    "fitted_power",
]


def codimension(d: int, depth: int) -> int:
    """``m = dim F_X - dim O_X = (N - 1) d (d + 1) / 2`` for a real full-rank square ``d x d`` ``X`` (the symmetric
    part of the Lie algebra of ``GL(d)^(N-1)``; the orbit ``O(d)^(N-1) . C`` takes the skew part)."""
    return (depth - 1) * d * (d + 1) // 2


@eqx.filter_jit
def posterior_chains(
    key, start: dlnjax.DLN, beta_kappa, n: int, ts, dt0: float, max_steps: int
) -> dlnjax.Trajectory:
    """``n`` FiberLangevin chains (``kappa = 1``, ``beta = beta_kappa``, a traced scalar: one compilation for every
    ``beta kappa``) from ``start``, saved at ``ts`` (on the ``dt0`` grid)."""
    flow = FiberLangevin(kappa=1.0, beta=beta_kappa)
    run = lambda k: dlnjax.simulate(flow, start, ts, key=k, dt0=dt0, max_steps=max_steps)
    return jax.vmap(run)(jr.split(key, n))


@jax.jit
def _per_save(ys: dlnjax.DLN, X):
    def one(net):
        drift = jnp.linalg.norm(dlnjax.end_to_end(net) - X) / jnp.linalg.norm(X)
        return dlnjax.squared_norm(net), jnp.linalg.norm(dlnjax.moments(net)), drift

    return jax.vmap(jax.vmap(one))(ys)


def posterior_stats(
    traj: dlnjax.Trajectory, X, minimum: float, beta_kappa: float, burn: int
) -> dict:
    """Means over the saves after ``burn`` and over chains: ``E ||W||^2``, its standard error (from the spread of the
    chains' own means), the excess over ``minimum`` and its rescaling by ``beta kappa``, ``E ||G||_F``, the largest
    relative drift of ``X`` and whether every chain succeeded."""
    sq, g, drift = (np.asarray(a) for a in _per_save(traj.ys, X))
    chain_sq = sq[:, burn:].mean(axis=1)
    err = float(chain_sq.std(ddof=1) / np.sqrt(len(chain_sq)))
    mean = float(chain_sq.mean())
    return {
        "beta_kappa": beta_kappa,
        "sq_norm": mean,
        "sq_norm_err": err,
        "excess": mean - minimum,
        "scaled_excess": (mean - minimum) * beta_kappa,
        "scaled_excess_err": err * beta_kappa,
        "g_norm": float(g[:, burn:].mean()),
        "x_drift_max": float(drift.max()),
        "success": bool(np.all(np.asarray(traj.success))),
    }


def hyperbola_exact(x: float, beta_kappa: float) -> dict:
    """``E ||W||^2`` and ``E |G|`` on the branch ``w_1 > 0`` of ``w_2 w_1 = x`` by quadrature of the closed form."""
    rho = lambda s: np.exp(-beta_kappa * (s * s + x * x / (s * s)) / 2) * np.sqrt(1 + x * x / s**4)
    mean = lambda f: integrate.quad(lambda s: f(s) * rho(s), 0, np.inf, limit=200)[0]
    Z = mean(lambda s: 1.0)
    return {
        "sq_norm": mean(lambda s: s * s + x * x / (s * s)) / Z,
        "g_norm": mean(lambda s: abs(s * s - x * x / (s * s))) / Z,
    }


def plot_posterior(stats: list[dict], m: int, exact: list[dict] | None, minimum: float) -> Figure:
    """The rescaled excess ``(E ||W||^2 - min) beta kappa`` against ``m`` (left) and ``E ||G||`` (right), per ``beta kappa``."""
    fig, axes = figure(12, 4.4, 2)
    bk = np.array([s["beta_kappa"] for s in stats])
    axes[0].errorbar(
        bk,
        [s["scaled_excess"] for s in stats],
        yerr=[2 * s["scaled_excess_err"] for s in stats],
        fmt="o-",
        color="C0",
        capsize=3,
        label="FiberLangevin (2 standard errors)",
    )
    axes[0].axhline(
        m, color="k", ls="--", label=rf"$m = \dim\mathcal{{F}}_X - \dim\mathcal{{O}}_X = {m}$"
    )
    axes[1].loglog(
        bk, [s["g_norm"] for s in stats], "o-", color="C1", label=r"$E\|G\|_F$ (FiberLangevin)"
    )
    if exact is not None:
        axes[0].plot(
            bk,
            [(e["sq_norm"] - minimum) * b for e, b in zip(exact, bk)],
            "k+",
            ms=12,
            label="quadrature",
        )
        axes[1].loglog(bk, [e["g_norm"] for e in exact], "k+", ms=12, label="quadrature")
    ref = stats[0]["g_norm"] * np.sqrt(bk[0] / bk)
    axes[1].loglog(bk, ref, color="0.5", ls=":", label=r"$\propto (\beta\kappa)^{-1/2}$")
    axes[0].set_xscale("log")
    axes[0].set_title(r"$(E\|\mathbf{W}\|^2 - N\sum_i\sigma_i^{2/N})\,\beta\kappa$", fontsize=10)
    axes[1].set_title(r"distance to $\mathcal{O}_X$: $E\|G\|_F$", fontsize=10)
    for ax in axes:
        ax.set_xticks(bk, [f"{b:g}" for b in bk])
        ax.minorticks_off()
        ax.set_xlabel(r"$\beta\kappa$")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def fitted_power(stats: list[dict], key: str) -> float:
    """The least-squares slope of ``log stats[key]`` against ``log beta kappa``."""
    bk = np.log([s["beta_kappa"] for s in stats])
    return float(np.polyfit(bk, np.log([s[key] for s in stats]), 1)[0])
