"""Process settings that make JAX fast on small CPUs, for applications (the CLI, tests, benchmarks) to opt into.

The library never changes the environment on import; `configure_cpu` is called by the ``dlnjax`` command,
the test suite and the benchmark scripts, before JAX's backend starts (the first computation). The measured
effect of each setting is on the docs' performance page (docs/performance.md, "Lab notes"):

- ``OPENBLAS_NUM_THREADS=1`` (and MKL/OMP): ``jnp.linalg`` (svd, eigh, lstsq) calls LAPACK through OpenBLAS,
  whose thread pool fights XLA's on a small or shared CPU and makes every decomposition many times slower.
- ``--xla_cpu_experimental_ynn_fusion_type=individual_dot`` (jaxlib 0.10 only, where the option exists; an
  unknown XLA flag aborts the process, so other versions are left alone): XLA 0.10 hands batched elementwise
  and reduce fusions to YNNPACK, which is slow on the tiny shapes of seed 004 (d = 5); the flag keeps them in
  XLA's own fused loops.
"""

from __future__ import annotations

import os

__all__ = ["configure_cpu"]

_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type=individual_dot"


def configure_cpu() -> None:
    """Set the thread and XLA options above unless the user already set them. Call before the first computation."""
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    try:
        from importlib.metadata import version

        jaxlib_version = version("jaxlib")
    except Exception:  # pragma: no cover - jaxlib is a dependency
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if jaxlib_version.startswith("0.10.") and "ynn_fusion_type" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " " + _YNN_FLAG).strip()
