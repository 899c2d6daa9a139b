"""The standard figures of a parameter sweep, drawn from the Dataset that `dlnjax.load` returns.

For every scalar quantity (dims ``(*grid, trajectory)``): its final value against each swept axis
(``{quantity}_final``) and its trajectories (``{quantity}_trajectories``); for ``layer_norms`` the
final norm of each layer (``layer_norms_final``) and for ``singular_values`` the trajectories of the
singular values of a few runs (``singular_values``). Each figure is written as PNG and PDF.

Figures are drawn on the Agg canvas without pyplot: no window opens and no global figure state is
kept, so plotting is safe in scripts, tests and threads.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullFormatter

from .._errors import OptionError, StoreError

__all__ = ["plot"]

logger = logging.getLogger(__name__)

_EXTRA_DIMS = ("layer", "index")  # trailing dims of the non-scalar quantities
_MAX_LEGEND = 12  # more distinct values than this (numeric axis): a colorbar instead of a legend
_SINGULAR_RUNS = 4  # runs shown in the singular-value figure


def plot(ds: xr.Dataset, out: Path | str, *, max_lines: int = 200) -> list[Path]:
    """Draw the standard figures of a sweep into ``out`` (created if missing); return the written paths.

    ``ds`` has one dim per swept axis (``attrs["grid_axes"]``), a trajectory dim ``"step"`` or ``"time"``
    (``attrs["trajectory_dim"]``), recorded quantities over ``(*grid, trajectory)`` (``layer_norms`` and
    ``singular_values`` with a trailing ``"layer"`` / ``"index"`` dim), and the per-run flags
    ``diverged`` (training) or ``success`` (flows) over the grid. Values after a divergence are NaN.

    Per scalar quantity ``q``: ``q_final`` (the last trajectory entry of every run against each swept
    axis with more than one value, the median over the other axes as a line, the fraction of diverged
    or failed runs on a right-hand axis when any) and ``q_trajectories`` (at most ``max_lines`` runs,
    evenly spread over the flattened grid, colored by the first swept axis with more than one value).
    Quantities that are NaN everywhere are skipped with a warning on the ``logging`` module.
    Each figure is saved as ``.png`` and ``.pdf``; the returned list holds both, in drawing order.
    """
    if max_lines < 1:
        raise OptionError(f"max_lines must be positive, got {max_lines}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    traj = _trajectory_dim(ds)
    grid = _grid_axes(ds, traj)
    swept = [a for a in grid if ds.sizes[a] > 1]
    failed, failed_label = _failures(ds, grid)
    written: list[Path] = []

    for name in _quantities(ds, traj):
        da = ds[name]
        extra = [d for d in da.dims if d not in grid and d != traj]
        if set(da.dims) - set(extra) != set(grid) | {traj} or len(extra) > 1:
            logger.debug(
                "plot: %s has dims %s, not (*grid, %s[, extra]); skipped", name, da.dims, traj
            )
            continue
        if extra and name not in ("layer_norms", "singular_values"):
            logger.debug("plot: no standard figure for %s (extra dim %s); skipped", name, extra[0])
            continue
        da = da.transpose(*grid, traj, *extra)
        if not bool(np.isfinite(da).any()):
            logger.warning("plot: %s is NaN everywhere; no figures drawn for it", name)
            continue
        if not extra:
            if swept:
                final = _finite(da.isel({traj: -1}).values)
                fig = _final_figure(ds, name, final, grid, swept, traj, failed, failed_label)
                written += _save(fig, out / f"{name}_final")
            else:
                logger.info("plot: no swept axis with more than one value; %s_final skipped", name)
            fig = _trajectory_figure(ds, da, grid, swept, traj, max_lines)
            written += _save(fig, out / f"{name}_trajectories")
        elif name == "layer_norms":
            fig = _layer_norms_figure(
                ds, _finite(da.isel({traj: -1}).values), grid, swept, extra[0], max_lines
            )
            written += _save(fig, out / "layer_norms_final")
        else:
            fig = _singular_values_figure(ds, da, grid, traj, extra[0])
            written += _save(fig, out / "singular_values")
    return written


# --------------------------------------------------------------------------------------------------
# Reading the Dataset
# --------------------------------------------------------------------------------------------------


def _attr_list(ds: xr.Dataset, key: str) -> list[str] | None:
    """``ds.attrs[key]`` as a list of names: stored as a list, a tuple or a JSON string (zarr attrs)."""
    value = ds.attrs.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = [value]
        if isinstance(value, str):
            value = [value]
    return [str(v) for v in np.atleast_1d(np.asarray(value, dtype=object)).tolist()]


def _trajectory_dim(ds: xr.Dataset) -> str:
    traj = ds.attrs.get("trajectory_dim")
    if traj is None:
        traj = next((d for d in ("step", "time") if d in ds.dims), None)
    if traj is None or traj not in ds.dims:
        raise StoreError(
            f"no trajectory dim ('step' or 'time') among the Dataset's dims {tuple(ds.dims)}"
        )
    return str(traj)


def _grid_axes(ds: xr.Dataset, traj: str) -> list[str]:
    axes = _attr_list(ds, "grid_axes")
    if axes is None:
        return [str(d) for d in ds.dims if d != traj and d not in _EXTRA_DIMS]
    return [a for a in axes if a in ds.dims]


def _quantities(ds: xr.Dataset, traj: str) -> list[str]:
    """The data variables along the trajectory, those named in ``attrs["quantities"]`` first, in that order."""
    named = [q for q in (_attr_list(ds, "quantities") or []) if q in ds.data_vars]
    rest = [str(v) for v in ds.data_vars if v not in named]
    return [q for q in named + rest if traj in ds[q].dims]


def _failures(ds: xr.Dataset, grid: list[str]) -> tuple[np.ndarray | None, str]:
    """A boolean grid array of the runs that diverged (or did not succeed), or None where no run did."""
    for name, invert, label in (
        ("diverged", False, "fraction diverged"),
        ("success", True, "fraction failed"),
    ):
        if name in ds.data_vars and set(ds[name].dims) == set(grid):
            flags = ds[name].transpose(*grid).values.astype(bool)
            flags = ~flags if invert else flags
            return (flags if flags.any() else None), label
    return None, ""


def _finite(values: np.ndarray) -> np.ndarray:
    """Float values with ±inf turned into NaN (a diverged run), so that axes autoscale on the rest."""
    values = np.asarray(values, dtype=float)
    return np.where(np.isfinite(values), values, np.nan)


def _is_numeric(coord: np.ndarray) -> bool:
    return np.issubdtype(coord.dtype, np.number) and not np.issubdtype(coord.dtype, np.bool_)


def _spans(values: np.ndarray, decades: float) -> bool:
    """Positive (where finite) and spanning more than ``decades`` decades: worth a log axis."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return v.size > 0 and v.min() > 0 and v.max() / v.min() > 10.0**decades


def _coord(ds: xr.Dataset, dim: str) -> np.ndarray:
    return np.asarray(ds[dim].values)


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    return str(v.item() if isinstance(v, np.generic) else v)


def _run_label(ds: xr.Dataset, grid: list[str], index: tuple[int, ...]) -> str:
    return ", ".join(f"{a}={_fmt(_coord(ds, a)[i])}" for a, i in zip(grid, index)) or "single run"


def _runs_of(
    da: xr.DataArray, grid: list[str], runs: np.ndarray
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The runs ``runs`` (flat indices into the grid) of ``da``, as floats ``(run, trajectory[, extra])``,
    and their grid indices (one array per axis). Only those runs are read from a lazily loaded ``da``.
    """
    shape = tuple(da.sizes[a] for a in grid)
    index = np.unravel_index(runs, shape) if grid else ()
    if not grid:
        return _finite(da.values[None]), index
    picked = da.isel({a: xr.DataArray(i, dims="_run") for a, i in zip(grid, index)})
    return _finite(picked.transpose("_run", *(d for d in da.dims if d not in grid)).values), index


def _evenly(n: int, k: int) -> np.ndarray:
    """At most ``k`` of ``range(n)``, evenly spread, first and last included."""
    return np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(int))


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------


def _figure(width: float, height: float, ncols: int, nrows: int = 1) -> tuple[Figure, np.ndarray]:
    """A constrained-layout `Figure` on the Agg canvas (no pyplot) and its flat array of axes."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, np.asarray(fig.subplots(nrows, ncols, squeeze=False)).ravel()


def _save(fig: Figure, stem: Path) -> list[Path]:
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=120)
    fig.savefig(paths[1])
    fig.clear()  # a Figure without pyplot is freed with its last reference; clearing drops the artists now
    return paths


def _set_x_axis(ax, ds: xr.Dataset, axis: str) -> np.ndarray:
    """Configure ``ax``'s x axis for the grid axis ``axis``; return the x position of each of its values.

    Numeric axes: the values themselves, on a log scale when positive and spanning more than a decade.
    Categorical axes (``widths``, ``init``): evenly spaced positions labelled with the values.
    """
    coord = _coord(ds, axis)
    n = coord.size
    if not _is_numeric(coord):
        x = np.arange(n, dtype=float)
        labels = [_fmt(v) for v in coord]
        rotate = n > 4 or max(len(s) for s in labels) > 8
        ax.set_xticks(x, labels, rotation=30 if rotate else 0, ha="right" if rotate else "center")
        ax.set_xlim(-0.5, n - 0.5)
        return x
    x = coord.astype(float)
    if _spans(x, 1):
        ax.set_xscale("log")
    if n <= 10:
        ax.set_xticks(x, [_fmt(v) for v in coord])
        ax.xaxis.set_minor_formatter(NullFormatter())
    elif np.issubdtype(coord.dtype, np.integer):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return x


class _Colors:
    """Line colors keyed by the value of one grid axis, and the legend or colorbar that explains them."""

    def __init__(self, ds: xr.Dataset, axis: str | None):
        self.axis = axis
        if axis is None:
            self.colors = ["C0"]
            return
        coord = _coord(ds, axis)
        self.values = coord
        n = coord.size
        self.numeric = _is_numeric(coord)
        self.norm = None
        cmap = colormaps["viridis"]
        if self.numeric and n > _MAX_LEGEND:  # a colorbar: colors follow the value
            x = coord.astype(float)
            self.norm = (
                LogNorm(np.nanmin(x), np.nanmax(x))
                if _spans(x, 1)
                else Normalize(np.nanmin(x), np.nanmax(x))
            )
            self.colors = [cmap(self.norm(v)) for v in x]
        elif not self.numeric and n <= 10:
            self.colors = [f"C{i}" for i in range(n)]
        else:  # a legend: colors follow the rank, so log-spaced values are told apart as well as linear ones
            self.colors = [cmap(0.9 * i / max(n - 1, 1)) for i in range(n)]

    def __call__(self, i: int):
        return self.colors[i if self.axis is not None else 0]

    def explain(self, fig: Figure, axes) -> None:
        if self.axis is None:
            return
        n = self.values.size
        if self.norm is not None:
            fig.colorbar(ScalarMappable(norm=self.norm, cmap="viridis"), ax=axes, label=self.axis)
            return
        handles = [Line2D([], [], color=c, lw=2) for c in self.colors]
        fig.legend(
            handles,
            [_fmt(v) for v in self.values],
            title=self.axis,
            loc="outside right upper",
            fontsize="small",
            title_fontsize="small",
            ncols=1 if n <= 20 else 2,
        )


def _line_alpha(k: int) -> float:
    """Opacity of each of ``k`` overlaid lines: opaque for a few, faint for many."""
    return float(np.clip(3.0 / math.sqrt(k), 0.2, 0.9))


def _line_width(k: int) -> float:
    return 1.5 if k <= 5 else 0.8


def _final_figure(
    ds: xr.Dataset,
    name: str,
    final: np.ndarray,
    grid: list[str],
    swept: list[str],
    traj: str,
    failed: np.ndarray | None,
    failed_label: str,
) -> Figure:
    ncols = min(len(swept), 3)
    nrows = math.ceil(len(swept) / ncols)
    fig, axes = _figure(
        3.8 * ncols + (0.6 if failed is not None else 0), 3.2 * nrows + 0.4, ncols, nrows
    )
    for ax in axes[len(swept) :]:
        ax.set_visible(False)
    log_y = _spans(final, 2)
    for ax, axis in zip(axes, swept):
        k = grid.index(axis)
        x = _set_x_axis(ax, ds, axis)
        per_value = np.moveaxis(final, k, 0).reshape(
            x.size, -1
        )  # (value of axis, runs at that value)
        xs = np.repeat(x, per_value.shape[1])
        alpha = float(
            np.clip(2.0 / math.sqrt(per_value.shape[1]), 0.1, 0.5)
        )  # fainter where runs pile up
        ax.plot(xs, per_value.ravel(), "o", ms=4, color="C0", alpha=alpha, mec="none")
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", RuntimeWarning
            )  # all-NaN columns: the median is NaN, not drawn
            median = np.nanmedian(per_value, axis=1)
        ax.plot(x, median, "-o", ms=4, lw=1.5, color="C1")
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel(axis)
        ax.set_ylabel(f"{name} (final)")
        ax.set_title(f"{name} against {axis}", fontsize="medium")
        ax.grid(True, alpha=0.3)
        if failed is not None:
            frac = np.moveaxis(failed, k, 0).reshape(x.size, -1).mean(axis=1)
            twin = ax.twinx()
            twin.plot(x, frac, "x--", ms=5, lw=1, color="C3")
            twin.set_ylim(-0.03, 1.03)
            twin.set_ylabel(failed_label, color="C3")
            twin.tick_params(axis="y", colors="C3")
    handles = [  # drawn here: the points' own opacity depends on how many runs share an x
        Line2D([], [], ls="", marker="o", ms=4, color="C0", alpha=0.5, mec="none"),
        Line2D([], [], marker="o", ms=4, lw=1.5, color="C1"),
    ]
    labels = ["runs", "median over the other axes"]
    if failed is not None:
        handles.append(Line2D([], [], ls="--", marker="x", color="C3"))
        labels.append(failed_label)
    fig.legend(handles, labels, loc="outside lower center", ncols=len(handles), fontsize="small")
    last = _coord(ds, traj)[-1] if traj in ds.coords else ds.sizes[traj] - 1
    fig.suptitle(f"{name} at the end of the run ({traj} = {_fmt(last)}), {final.size} runs")
    return fig


def _trajectory_figure(
    ds: xr.Dataset, da: xr.DataArray, grid: list[str], swept: list[str], traj: str, max_lines: int
) -> Figure:
    n_runs = math.prod(da.sizes[a] for a in grid)
    chosen = _evenly(n_runs, max_lines)
    lines, index = _runs_of(da, grid, chosen)
    t = _coord(ds, traj).astype(float)
    color_axis = swept[0] if swept else None
    colors = _Colors(ds, color_axis)
    fig, (ax,) = _figure(6.4, 4.2, 1)
    alpha, lw = _line_alpha(chosen.size), _line_width(chosen.size)
    for j, line in enumerate(lines):
        ax.plot(
            t,
            line,
            lw=lw,
            alpha=alpha,
            color=colors(index[grid.index(color_axis)][j] if color_axis else 0),
        )
    if _spans(lines, 2):
        ax.set_yscale("log")
    ax.set_xlabel(traj)
    ax.set_ylabel(da.name)
    ax.grid(True, alpha=0.3)
    if n_runs == 1:
        shown = _run_label(ds, grid, tuple(0 for _ in grid))
    else:
        shown = f"{chosen.size} of {n_runs} runs" if chosen.size < n_runs else f"{n_runs} runs"
    ax.set_title(f"{da.name} against {traj} ({shown})", fontsize="medium")
    colors.explain(fig, ax)
    return fig


def _layer_norms_figure(
    ds: xr.Dataset,
    final: np.ndarray,
    grid: list[str],
    swept: list[str],
    layer_dim: str,
    max_lines: int,
) -> Figure:
    layers = _coord(ds, layer_dim)
    x = layers.astype(float) if _is_numeric(layers) else np.arange(layers.size, dtype=float)
    shape = final.shape[:-1]
    flat = final.reshape(-1, final.shape[-1])
    chosen = _evenly(flat.shape[0], max_lines)
    color_axis = swept[0] if swept else None
    colors = _Colors(ds, color_axis)
    fig, (ax,) = _figure(6.4, 4.2, 1)
    alpha, lw = _line_alpha(chosen.size), _line_width(chosen.size)
    for r in chosen:
        index = np.unravel_index(r, shape) if shape else ()
        c = colors(index[grid.index(color_axis)] if color_axis else 0)
        ax.plot(x, flat[r], "-o", ms=3, lw=lw, alpha=alpha, color=c)
    if layers.size <= 20:
        ax.set_xticks(x, [_fmt(v) for v in layers])
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if _spans(flat[chosen], 2):
        ax.set_yscale("log")
    ax.set_xlabel(layer_dim)
    ax.set_ylabel("layer norm (final)")
    ax.grid(True, alpha=0.3)
    n_runs = flat.shape[0]
    shown = (
        f"{chosen.size} of {n_runs} runs"
        if chosen.size < n_runs
        else f"{n_runs} run" + "s" * (n_runs > 1)
    )
    ax.set_title(f"final layer norms ({shown})", fontsize="medium")
    colors.explain(fig, ax)
    return fig


def _singular_values_figure(
    ds: xr.Dataset, da: xr.DataArray, grid: list[str], traj: str, index_dim: str
) -> Figure:
    alive = np.flatnonzero(
        np.isfinite(da).any([traj, index_dim]).values.ravel()
    )  # runs with something to draw
    chosen = alive[_evenly(alive.size, _SINGULAR_RUNS)]
    curves, index = _runs_of(da, grid, chosen)  # (run, trajectory, index)
    t = _coord(ds, traj).astype(float)
    ncols = min(chosen.size, 2)
    nrows = math.ceil(chosen.size / ncols)
    fig, axes = _figure(4.6 * ncols, 3.4 * nrows + 0.3, ncols, nrows)
    for ax in axes[chosen.size :]:
        ax.set_visible(False)
    log_y = _spans(curves, 2)
    n_sv = curves.shape[-1]
    cmap = colormaps["viridis"]
    for r, ax in enumerate(axes[: chosen.size]):
        for j in range(n_sv):
            ax.plot(
                t,
                curves[r, :, j],
                lw=1.0,
                color=cmap(0.9 * j / max(n_sv - 1, 1)),
                label=f"σ{j + 1}",
            )
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel(traj)
        ax.set_ylabel("singular value")
        ax.set_title(_run_label(ds, grid, tuple(int(i[r]) for i in index)), fontsize="small")
        ax.grid(True, alpha=0.3)
    if n_sv <= 10:
        axes[0].legend(fontsize="small", title=index_dim, title_fontsize="small")
    n_runs = math.prod(da.sizes[a] for a in grid)
    fig.suptitle(
        f"singular values against {traj} ({chosen.size} of {n_runs} run" + "s" * (n_runs > 1) + ")"
    )
    return fig
