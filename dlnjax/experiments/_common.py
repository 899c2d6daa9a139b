"""Plumbing shared by the reproductions: the run harness, figures on the Agg canvas, tables, summaries.

Every experiment writes into its ``out`` directory: figures (PNG), data (npz, csv) and a summary
(``summary.txt`` for people, ``summary.json`` for programs), each file as soon as it is complete.

The harness owns what every ``run`` shares: `start` (float64 check, the ``out`` directory, the logger)
returns a `Session`; ``session.timed(key, message)`` logs a stage and times it into the summary's
``timings_s``; ``session.finish(problems, config, results, text)`` sets the status (``OK``, or
``FAILED`` when a check listed a problem), writes ``summary.json`` / ``summary.txt``, logs the last
line and returns the exit code (0 or 1). Each experiment's ``run`` composes its compute, check and
write functions between the two.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import jax
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "Session",
    "start",
    "pick_config",
    "figure",
    "save_figure",
    "write_csv",
    "write_summary",
    "logger",
    "require_x64",
    "environment",
]

C = TypeVar("C")


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


def pick_config(config: C | None, quick: bool, default: C, small: C) -> C:
    """``config`` if given, else ``small`` (``--quick``) or ``default``."""
    if config is not None:
        return config
    return small if quick else default


@dataclasses.dataclass
class Session:
    """One run of an experiment: its name, seed, ``out`` directory, logger and stage timings (seconds)."""

    name: str
    out: Path
    seed: int
    say: Callable[[str], None]
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    started: float = dataclasses.field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @contextlib.contextmanager
    def timed(self, key: str | None, message: str | None = None) -> Iterator[None]:
        """Log ``message`` (if any), run the block and record its wall time as ``timings[key]`` (unless None)."""
        if message is not None:
            self.say(message)
        t0 = time.perf_counter()
        yield
        if key is not None:
            self.timings[key] = time.perf_counter() - t0

    def finish(
        self,
        problems: list[str],
        config: dict,
        results: dict,
        text: Callable[[dict], str],
        *,
        total: bool = True,
    ) -> int:
        """Write the summary and return the exit code: 0 if ``problems`` is empty, else 1.

        The summary is ``experiment, status, problems, seed, config``, then ``results``, then
        ``timings_s`` (with ``total``, the run's wall time, last unless ``total=False``); ``text`` renders
        it for ``summary.txt`` (echoed), `write_summary` adds the device and JAX version to the JSON.
        """
        if total:
            self.timings["total"] = self.elapsed()
        status = "OK" if not problems else "FAILED"
        summary = {
            "experiment": self.name,
            "status": status,
            "problems": list(problems),
            "seed": self.seed,
            "config": config,
            **results,
            "timings_s": self.timings,
        }
        write_summary(self.out, summary, text(summary))
        self.say(f"finished in {self.elapsed():.1f} s: {status}; results in {self.out}")
        return 0 if not problems else 1


def start(
    name: str, out: str | Path, seed: int, log: Callable[[str], None] | None = None
) -> Session:
    """The start of every ``run``: check float64, create ``out``, make the logger, say where it writes."""
    require_x64(name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    session = Session(name, out, seed, logger(name, log))
    session.say(f"writing to {out.resolve()}")
    return session


def environment() -> dict:
    return {"device": str(jax.devices()[0]), "jax_version": jax.__version__}
