"""Progress that reads well on a terminal and in a log.

On a terminal (``sys.stderr.isatty()``, and not a Jupyter kernel) progress is a tqdm bar, redrawn in place. Anywhere
else (CI, output redirected to a file, Jupyter) a bar's carriage-return redraws would pile up as thousands of
fragments, so progress is written as plain timestamped lines instead (`Lines`): at most one every `INTERVAL`
seconds, and the last one when the work ends, e.g. ::

    14:02:07 grid: 38% 3/8 [00:40<03:21, 40.20s/batch]
    14:02:12 grid: 100% 8/8 [00:45<00:00,  5.00s/batch]

Three users: `progress_bar` (the batches of `dlnjax.sweep.run`), `diffrax_meter` (the progress meter
`dlnjax.simulate` hands to Diffrax when ``progress=True``: Diffrax's ``TqdmProgressMeter`` on a terminal,
`LineProgressMeter` elsewhere; see https://docs.kidger.site/diffrax/api/progress_meter/), and the CLI through
both. Lines go to ``sys.stderr`` as it is when each line is written, so ``contextlib.redirect_stderr`` and
pytest's capture see them.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import diffrax as dfx
import numpy as np

from ._errors import OptionError

__all__ = [
    "INTERVAL",
    "QUIET_BELOW",
    "Lines",
    "LineProgressMeter",
    "diffrax_meter",
    "in_jupyter",
    "on_terminal",
    "progress_bar",
]

INTERVAL = 5.0
"""Seconds between two progress lines (off a terminal)."""

QUIET_BELOW = 1.0
"""A Diffrax solve shorter than this (seconds) writes no line (off a terminal)."""

COUNT_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]"
PERCENT_FORMAT = "{desc}: {percentage:3.0f}% [{elapsed}<{remaining}]"


def in_jupyter() -> bool:
    """Whether this process is an IPython kernel (Jupyter, VS Code, Colab): a shell with a ``kernel``."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # an IPython too broken to ask is not a kernel we can draw in
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def on_terminal(stream=None) -> bool:
    """Whether progress bars can be drawn on ``stream`` (default ``sys.stderr``): a TTY, outside Jupyter."""
    stream = sys.stderr if stream is None else stream
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        tty = False
    return tty and not in_jupyter()


class Lines:
    """Progress as plain timestamped lines, at most one every ``interval`` seconds, and the final one on `close`.

    A drop-in for the part of a tqdm bar that the library uses: `update` (add to the count), `set` (set the
    count), `close`, and use as a context manager. ``total=None``: an open-ended count. ``initial``: work
    already done before this session (a resumed sweep), left out of the rate. ``quiet_below``: `close` writes
    nothing if no line was written and the work took less than this many seconds (a short solve needs no
    progress). ``clock``: a monotonic clock in seconds (tests pass a fake one). ``stream``: where the lines go
    (default: ``sys.stderr`` when written).
    """

    def __init__(
        self,
        total: float | None,
        *,
        desc: str = "",
        unit: str = "it",
        initial: float = 0,
        interval: float = INTERVAL,
        quiet_below: float = 0.0,
        bar_format: str | None = None,
        stream=None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not interval >= 0:
            raise OptionError(f"Lines: interval must be >= 0 seconds; got {interval!r}.")
        if not quiet_below >= 0:
            raise OptionError(f"Lines: quiet_below must be >= 0 seconds; got {quiet_below!r}.")
        if total is not None and not total >= 0:
            raise OptionError(f"Lines: total must be None or >= 0; got {total!r}.")
        self.total, self.desc, self.unit, self.initial = total, desc, unit, initial
        self.n = initial
        self.interval, self.quiet_below = interval, quiet_below
        if bar_format is None and total is not None:
            bar_format = COUNT_FORMAT  # None: tqdm's own format for an open-ended count
        self.bar_format = bar_format
        self._stream, self._clock = stream, clock
        self._start = self._last = clock()
        self._written: float | None = None  # the count shown by the last line
        self.closed = False

    def update(self, n: float = 1) -> None:
        self.set(self.n + n)

    def set(self, n: float) -> None:
        """Set the count to ``n``; write a line if ``interval`` seconds passed since the last one."""
        self.n = n
        now = self._clock()
        if now - self._last >= self.interval:
            self._write(now)

    def close(self) -> None:
        """Write the final line (unless the last line already showed this count, or the work was too short to
        report: ``quiet_below``); later calls do nothing."""
        if self.closed:
            return
        self.closed = True
        now = self._clock()
        if self._written is None and now - self._start < self.quiet_below:
            return
        if self._written != self.n:
            self._write(now)

    def line(self, now: float | None = None) -> str:
        """The line for the current count, without its timestamp."""
        from tqdm import tqdm

        elapsed = (self._clock() if now is None else now) - self._start
        return tqdm.format_meter(
            self.n,
            self.total,
            elapsed,
            prefix=self.desc,
            unit=self.unit,
            initial=self.initial,
            bar_format=self.bar_format,
        )

    def _write(self, now: float) -> None:
        stream = sys.stderr if self._stream is None else self._stream
        stream.write(f"{time.strftime('%H:%M:%S')} {self.line(now)}\n")
        stream.flush()
        self._last, self._written = now, self.n

    def __enter__(self) -> Lines:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(
    total: int | None,
    *,
    desc: str = "",
    unit: str = "it",
    initial: int = 0,
    disable: bool = False,
    stream=None,
):
    """A progress counter for ``total`` steps: a tqdm bar on a terminal (`on_terminal`), `Lines` elsewhere.

    Both have ``update(n=1)`` and ``close()`` and are context managers. ``disable=True``: a disabled tqdm
    bar, which shows nothing.
    """
    from tqdm import tqdm

    if disable or on_terminal(stream):
        return tqdm(
            total=total,
            initial=initial,
            unit=unit,
            desc=desc,
            disable=disable,
            dynamic_ncols=True,
            file=stream,
        )
    return Lines(total, desc=desc, unit=unit, initial=initial, stream=stream)


class LineProgressMeter(dfx.TextProgressMeter):
    """Diffrax's ``TextProgressMeter`` writing through `Lines`: a line every `INTERVAL` seconds and a last one.

    Diffrax calls the host (``_step_bar``) only when the progress grew by ``minimum_increase`` (2% by default)
    since its last call; `Lines` then keeps a line only every `INTERVAL` seconds. A solve shorter than
    `QUIET_BELOW` seconds writes nothing; a longer one writes ``solve:  38% [00:05<00:08]`` every few seconds
    and ``solve: 100% [00:13<00:00]`` at the end. Under ``jax.vmap`` Diffrax reports the slowest element, as
    for its own meters.
    """

    @staticmethod
    def _init_bar() -> Lines:
        return Lines(
            100, desc="solve", unit="%", quiet_below=QUIET_BELOW, bar_format=PERCENT_FORMAT
        )

    @staticmethod
    def _step_bar(bar: Lines, progress) -> None:
        bar.set(round(100 * float(np.asarray(progress)), 2))

    @staticmethod
    def _close_bar(bar: Lines) -> None:
        bar.set(100.0)
        bar.close()


def diffrax_meter() -> dfx.AbstractProgressMeter:
    """The meter of ``dlnjax.simulate(..., progress=True)``: ``TqdmProgressMeter`` on a terminal, else `LineProgressMeter`.

    Chosen when the solve is traced (a jitted caller keeps the meter it was compiled with).
    """
    return dfx.TqdmProgressMeter() if on_terminal() else LineProgressMeter()
