"""Shared by the benchmark scripts of this folder: the machine block of a report, interleaved timing."""

from __future__ import annotations

import datetime
import os
import platform
import time


def machine_info(*extra: str) -> list[str]:
    """Markdown bullet lines: date, platform, CPU, JAX backend and package versions, load, thread settings."""
    import diffrax
    import equinox
    import jax
    import lineax
    import optax

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(
                line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    return [
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- platform: {platform.platform()}, Python {platform.python_version()}",
        f"- CPU: {cpu}, {os.cpu_count()} logical CPUs ({usable} usable), JAX backend {jax.default_backend()}",
        f"- jax {jax.__version__}, jaxlib {jax.lib.__version__}, equinox {equinox.__version__}, "
        f"diffrax {diffrax.__version__}, lineax {lineax.__version__}, optax {optax.__version__}",
        f"- load average at start (1, 5, 15 min): {load}",
        f"- OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}",
        *extra,
    ]


SLOW = 1.0  # seconds: a call slower than this is timed once only
QUICK = 0.1  # seconds: calls faster than this get further rounds for the whole time budget


def timed(f, x):
    """``(seconds, f(x))``, waiting for the result."""
    import jax

    t = time.perf_counter()
    out = jax.block_until_ready(f(x))
    return time.perf_counter() - t, out


def interleaved(
    calls: dict,
    *,
    budget: float,
    min_rounds: int = 3,
    max_rounds: int = 500,
    samples: dict | None = None,
):
    """Outputs of a first round calling every (compiled) ``f(x)`` of ``calls = {name: (f, x)}`` once, and the min time of each.

    Then, in turn: calls faster than ``SLOW`` are repeated for ``min_rounds`` rounds in all, those faster than
    ``QUICK`` in further rounds until ``budget`` seconds have passed; slower ones keep their single time.
    Interleaving puts everything compared under the same background load (the machine may be shared), so the
    ratios are meaningful. ``samples``, if given, receives every time of every call (a list per name, one entry
    per round it took part in; calls of the same speed class share their rounds, so their lists pair up).
    """
    times, outputs = {}, {}
    for k, (f, x) in calls.items():
        t, outputs[k] = timed(f, x)
        times[k] = [t]
    start = time.perf_counter()
    for r in range(1, max_rounds):
        limit = SLOW if r < min_rounds else QUICK
        if r >= min_rounds and time.perf_counter() - start > budget:
            break
        members = [k for k in calls if times[k][0] < limit]
        if not members:
            break
        for k in members:
            f, x = calls[k]
            times[k].append(timed(f, x)[0])
    if samples is not None:
        samples.update(times)
    return outputs, {k: min(v) for k, v in times.items()}


def publish(lines: list[str], out: str | None) -> None:
    """Print the markdown report and, with ``--out FILE``, also write it there."""
    text = "\n".join(lines)
    print()
    print(text)
    if out:
        with open(out, "w") as fh:
            fh.write(text)


def write_report(lines: list[str], out: str | None, *, echo: bool = True) -> int:
    """Join ``lines`` into the report text, print it (``echo``) and write it to ``out`` if given; returns 0."""
    text = "\n".join(lines) + "\n"
    if echo:
        print(text)
    if out:
        with open(out, "w") as fh:
            fh.write(text)
    return 0
