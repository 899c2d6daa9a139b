"""Plumbing shared by the reproductions: figures on the Agg canvas, tables, summaries, a logger.

Every experiment writes into its ``out`` directory: figures (PNG), data (npz, csv) and a summary
(``summary.txt`` for people, ``summary.json`` for programs), each file as soon as it is complete.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import jax
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "figure",
    "save_figure",
    "write_csv",
    "write_summary",
    "logger",
    "require_x64",
    "prepare",
    "environment",
]


def figure(width: float, height: float, ncols: int, nrows: int = 1, **kw):
    """A constrained-layout `Figure` on the Agg canvas (no pyplot, no global state) and its axes.

    Returns ``(fig, axes)`` with ``axes`` a flat array of ``nrows * ncols`` axes.
    """
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, np.asarray(fig.subplots(nrows, ncols, squeeze=False, **kw)).ravel()


def save_figure(fig: Figure, path: Path, *, pdf: bool = False) -> None:
    fig.savefig(path, dpi=120)
    if pdf:
        fig.savefig(Path(path).with_suffix(".pdf"))


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    """A CSV table; floats written with 17 significant digits (round-trip exact)."""
    fmt = lambda v: f"{v:.17g}" if isinstance(v, (float, np.floating)) else v
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(header))
        for row in rows:
            w.writerow([fmt(v) for v in row])


def write_summary(out: Path, summary: dict, text: str) -> None:
    """``summary.json`` (with the device and JAX version added) and ``summary.txt``; echo the text."""
    summary = {**summary, "device": str(jax.devices()[0]), "jax_version": jax.__version__}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_jsonable) + "\n")
    (out / "summary.txt").write_text(text)
    print(text, end="", flush=True)


def _jsonable(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        return v.item()
    raise TypeError(f"not JSON serializable: {type(v).__name__}")


def logger(name: str, log: Callable[[str], None] | None = None) -> Callable[[str], None]:
    """``log`` if given, else a printer prefixing each message with ``[name  elapsed s]``."""
    if log is not None:
        return log
    t0 = time.perf_counter()
    return lambda msg: print(f"[{name} {time.perf_counter() - t0:6.1f}s] {msg}", flush=True)


def require_x64(name: str) -> None:
    if not jax.config.jax_enable_x64:
        raise RuntimeError(
            f"{name} needs float64: call jax.config.update('jax_enable_x64', True) first (the dlnjax CLI does)."
        )


def prepare(
    name: str, out: str | Path, log: Callable[[str], None] | None = None
) -> tuple[Path, Callable[[str], None]]:
    """The start of every ``run``: check float64, create ``out``, make the logger. Returns ``(out, say)``."""
    require_x64(name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return out, logger(name, log)


def environment() -> dict:
    return {"device": str(jax.devices()[0]), "jax_version": jax.__version__}
