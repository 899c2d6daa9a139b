"""Figure 1.2 of Lindsey & Menon (seed 001): a fiber sliced by the moments, ``F_X ∩ M_G``.

For ``d = 1``, ``N = 3`` the fiber ``w_3 w_2 w_1 = x`` is a surface in ``R^3`` and ``G = (w_1^2 - w_2^2,
w_2^2 - w_3^2)`` has two components, so the slices are points (a four-point orbit of the sign changes ``O(1)^2``,
one on each sheet): a mesh of curves ``G_1 = c`` and ``G_2 = c`` covers each sheet. We compute the mesh on the
sheet through the balanced point ``(x^(1/3), x^(1/3), x^(1/3))`` with `dlnjax.fiber_point_with_moments` (points of
prescribed ``G``) and draw it in ``R^3`` and in Lemma 1's coordinates (`dlnjax.fiber_coordinates`), with the path of
the regularizing flow (1.17) from one slice, which by Theorem 2 runs through the slices ``e^{-2t} G_0``. The check: the
same points in closed form (``u = w_3^2`` solves ``u (u + G_2) (u + G_1 + G_2) = x^2``, one root above
``max(0, -G_2, -G_1 - G_2)``).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

import dlnjax

from ._common import figure

__all__ = ["slice_grid", "slice_points", "slices_closed_form", "plot_slices"]


def slice_grid(g_max: float, n_lines: int, n_points: int, g0: tuple[float, float], n_path: int):
    """The moments of the mesh and of the flow's path: ``(G, lines, path)``. ``G`` of shape ``(M, 2)``: first the
    ``n_lines`` curves ``G_1 = c`` (``n_points`` each), then the curves ``G_2 = c``, then ``e^{-2t} g0`` at ``n_path``
    times ``t in [0, 3]``."""
    c = np.linspace(-g_max, g_max, n_lines)
    s = np.linspace(-g_max, g_max, n_points)
    fam1 = np.stack(np.broadcast_arrays(c[:, None], s[None, :]), -1).reshape(-1, 2)
    fam2 = fam1[:, ::-1]
    t = np.linspace(0.0, 3.0, n_path)
    path = np.exp(-2 * t)[:, None] * np.asarray(g0)[None, :]
    return np.concatenate([fam1, fam2, path]), t


@eqx.filter_jit
def _points(X, G):
    return jax.vmap(lambda g: dlnjax.fiber_point_with_moments(X, 3, g[:, None, None], steps=1))(G)


def slice_points(x: float, G: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points ``(w_1, w_2, w_3)`` of the slices ``F_X ∩ M_G`` on the positive sheet (``x > 0``), shape ``(M, 3)``,
    and their Lemma 1 coordinates ``log A_1, log A_2`` (`dlnjax.fiber_coordinates`; ``A_k > 0`` there)."""
    W = _points(jnp.full((1, 1), x), jnp.asarray(G))
    A = jax.vmap(dlnjax.fiber_coordinates)(W)
    w = np.stack([np.asarray(a).reshape(-1) for a in (W.first, W.inner[:, 0], W.last)], -1)
    h = np.stack([np.log(np.asarray(a).reshape(-1)) for a in A], -1)
    return w, h


def slices_closed_form(x: float, G: np.ndarray) -> np.ndarray:
    """``|w_k|`` of the slices in closed form: ``u = w_3^2`` is the root of ``u (u + G_2)(u + G_1 + G_2) = x^2``
    above ``max(0, -G_2, -G_1 - G_2)`` (the left side increases there), by bisection in float64."""
    G = np.asarray(G, float)
    lo = np.maximum.reduce([np.zeros(len(G)), -G[:, 1], -G[:, 0] - G[:, 1]])
    hi = lo + abs(x) ** (2 / 3) + np.abs(G).sum(axis=1) + 1.0
    f = lambda u: u * (u + G[:, 1]) * (u + G[:, 0] + G[:, 1]) - x**2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        neg = f(mid) < 0
        lo, hi = np.where(neg, mid, lo), np.where(neg, hi, mid)
    u = 0.5 * (lo + hi)
    return np.sqrt(np.stack([u + G[:, 0] + G[:, 1], u + G[:, 1], u], -1))


def plot_slices(
    x: float, w: np.ndarray, h: np.ndarray, n_lines: int, n_points: int, g_max: float
) -> Figure:
    """Figure 1.2: the mesh of slices on the sheet in ``R^3`` (left) and in Lemma 1's coordinates (right)."""
    fig, axes = figure(13, 5.6, 2)
    fig.delaxes(axes[0])
    ax3 = fig.add_subplot(1, 2, 1, projection="3d")
    n = n_lines * n_points
    fams = (w[:n].reshape(n_lines, n_points, 3), w[n : 2 * n].reshape(n_lines, n_points, 3))
    hfams = (h[:n].reshape(n_lines, n_points, 2), h[n : 2 * n].reshape(n_lines, n_points, 2))
    c = np.linspace(-g_max, g_max, n_lines)
    for k, (fam, hfam, color) in enumerate(zip(fams, hfams, ("C0", "C1"))):
        for i, (line, hline) in enumerate(zip(fam, hfam)):
            label = rf"slices with $G_{k + 1}$ fixed" if i == 0 else None
            ax3.plot(*line.T, color=color, lw=1.2 if abs(c[i]) > 1e-12 else 2.2, label=label)
            axes[1].plot(*hline.T, color=color, lw=1.2 if abs(c[i]) > 1e-12 else 2.2, label=label)
    r = abs(x) ** (1 / 3)
    ax3.plot(
        w[2 * n :, 0],
        w[2 * n :, 1],
        w[2 * n :, 2],
        "k.-",
        ms=4,
        label=r"FiberL2 path: $G = e^{-2t}G_0$",
    )
    ax3.scatter(
        [r],
        [r],
        [r],
        marker="*",
        s=160,
        color="C2",
        edgecolor="k",
        label=r"$\mathcal{O}_X$ ($G = 0$)",
    )
    ax3.set_xlabel("$w_1$")
    ax3.set_ylabel("$w_2$")
    ax3.set_zlabel("$w_3$")
    ax3.set_title(rf"fiber $w_3 w_2 w_1 = {x:g}$ sliced by $G$ (positive sheet)", fontsize=10)
    ax3.legend(loc="upper right", fontsize=7)
    axes[1].plot(*h[2 * n :].T, "k.-", ms=4, label=r"FiberL2 path: $G = e^{-2t}G_0$")
    axes[1].plot([0], [0], "*", ms=14, color="C2", mec="k", label=r"centre $C$ ($G = 0$)")
    axes[1].set_xlabel(r"$\log A_1$")
    axes[1].set_ylabel(r"$\log A_2$")
    axes[1].set_title(
        r"the same slices in Lemma 1's coordinates $\mathbf{W} = \mathbf{A}\cdot C$", fontsize=10
    )
    axes[1].legend(fontsize=7)
    axes[1].grid(True, alpha=0.3)
    return fig
