"""The machine block every benchmark report starts with (imported by the scripts in this folder)."""

from __future__ import annotations

import datetime
import os
import platform


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
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
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
