"""Sweeps at scale: a TOML config in, a labelled xarray Dataset (in a resumable Zarr store) and figures out.

- `load_config` / `parse_config` validate a config (`ConfigError` names the bad field);
- `run` executes it: ``vmap`` over runs, the batch axis sharded over all devices, one compiled program per
  network shape or, padded, one for the whole grid; results written batch by batch, resumable;
- `load` reads the results back as an ``xarray.Dataset`` with one dimension per swept axis;
- `plot` draws the standard figures.

A config with ``[task] loss = "realization"`` sweeps linear state-space models ``(A, B, C)`` fitted to the Markov
parameters of a target system instead of networks (`dlnjax.systems`; docs/sweeps.md, the realization task).

The command line: ``dlnjax sweep CONFIG --out DIR`` and ``dlnjax plot DIR``.
"""

from ._config import (
    GRID_AXES as GRID_AXES,
)
from ._config import (
    QUANTITIES as QUANTITIES,
)
from ._config import (
    ConfigError as ConfigError,
)
from ._config import (
    SweepConfig as SweepConfig,
)
from ._config import (
    load_config as load_config,
)
from ._config import (
    parse_config as parse_config,
)
from ._run import Plan as Plan
from ._run import choose_padding as choose_padding
from ._run import plan as plan
from ._run import provenance as provenance
from ._run import run as run
from ._store import load as load


def __getattr__(name):
    if name == "plot":  # imported on first use: matplotlib and xarray are not needed to run a sweep
        from ._plot import plot

        return plot
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
