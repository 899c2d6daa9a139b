"""The results store of a sweep: an xarray Dataset in Zarr, written batch by batch, resumable.

Layout of ``DIR``:

- ``config.toml`` (the config as given) and ``config.json`` (normalized; compared on resume);
- ``results.zarr``: every variable has a leading ``slot`` axis (the runs in execution order, padded to
  whole batches; ``grid_index`` maps a slot to its run in the grid, ``-1`` for filler slots), chunked one
  batch per chunk, so that a batch is written by itself and never touches another batch's chunks;
- ``batches/NNNNNN.done``: written atomically (write, then rename) after a batch's data is in the store.
  A batch counts as finished iff its marker exists, so a process killed at any moment leaves only whole
  finished batches: a half-written batch has no marker and is computed again on resume (the computation
  is deterministic, so the final Dataset is the same as an uninterrupted run's);
- ``READY``: written once the empty store is complete (a store killed while being created is rebuilt).

`load` turns the slots back into the grid: a Dataset with one dimension per swept axis.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .._errors import StoreError

__all__ = ["Store", "load"]


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Store:
    """The on-disk store of one sweep in ``directory`` (see the module docstring)."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.zarr = self.dir / "results.zarr"
        self.batches = self.dir / "batches"

    @property
    def ready(self) -> bool:
        return (self.dir / "READY").exists() and self.zarr.exists()

    def stored_config(self) -> dict | None:
        path = self.dir / "config.json"
        if not (self.ready and path.exists()):
            return None
        return json.loads(path.read_text())

    def create(self, template, config_json: str, config_toml: str, batch_size: int) -> None:
        """Write the empty store (``template``: the Dataset with every variable at its fill value)."""
        if self.zarr.exists():
            shutil.rmtree(self.zarr)
        if self.batches.exists():
            shutil.rmtree(self.batches)
        (self.dir / "READY").unlink(missing_ok=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.batches.mkdir()
        _atomic_write(self.dir / "config.toml", config_toml)
        _atomic_write(self.dir / "config.json", config_json)
        encoding = {
            name: {"chunks": (batch_size,) + tuple(var.shape[1:])}
            for name, var in template.data_vars.items()
            if var.dims[:1] == ("slot",)
        }
        template.to_zarr(self.zarr, mode="w", encoding=encoding, consolidated=False)
        _atomic_write(self.dir / "READY", "")

    def done(self) -> dict[int, dict]:
        """``{batch: marker}`` of the finished batches (the marker holds the device kind and timing)."""
        out = {}
        if not self.batches.exists():
            return out
        for path in self.batches.glob("*.done"):
            try:
                out[int(path.stem)] = json.loads(path.read_text() or "{}")
            except (
                ValueError,
                json.JSONDecodeError,
            ):  # pragma: no cover - markers are written atomically
                continue
        return out

    def write_batch(
        self, batch: int, start: int, stop: int, data: Mapping[str, np.ndarray], marker: Mapping
    ) -> None:
        """Write the results of slots ``start:stop`` (one batch, one chunk), then mark the batch finished."""
        import xarray as xr

        ds = xr.open_zarr(self.zarr, chunks=None, consolidated=False)
        variables = {}
        for name, value in data.items():
            dims = ds[name].dims
            variables[name] = (dims, np.asarray(value, dtype=ds[name].dtype))
        ds.close()
        xr.Dataset(variables).to_zarr(
            self.zarr, region={"slot": slice(start, stop)}, mode="r+", consolidated=False
        )
        _atomic_write(self.batches / f"{batch:06d}.done", json.dumps(dict(marker), sort_keys=True))


def load(directory: str | Path, *, require_complete: bool = False):
    """The results of the sweep in ``directory`` as an ``xarray.Dataset`` with one dimension per swept axis.

    Dimensions: the grid axes in config order (coordinates: their values; ``widths`` and ``init`` as
    strings), then ``step`` (training) or ``time`` (flows), then ``layer`` / ``index`` for `layer_norms` /
    `singular_values`. Per-run flags: ``diverged`` and ``diverged_at`` (training) or ``success`` and
    ``num_steps`` (flows), and ``finished`` (whether the run's batch has finished). Attributes: the config
    (``config_toml``, ``config``), package ``versions``, ``git_commit``, ``device_kind`` and the layout
    (``grid_axes``, ``quantities``, ``trajectory_dim``, ``padding``). A sweep that has not finished loads
    with NaN for its missing runs and a warning (``require_complete=True``: raises `dlnjax.StoreError`, a ``ValueError``).
    """
    import xarray as xr

    store = Store(directory)
    if not store.ready:
        raise FileNotFoundError(
            f"dlnjax.load: {store.dir} holds no sweep results (no complete results.zarr)."
        )
    raw = xr.open_zarr(store.zarr, chunks=None, consolidated=False).load()
    attrs = dict(raw.attrs)
    grid = json.loads(attrs["grid"])  # [[axis, [values...]], ...]
    batch_size = int(attrs["batch_size"])
    markers = store.done()
    n_batches = raw.sizes["slot"] // batch_size
    finished_batches = np.zeros(n_batches, bool)
    finished_batches[[b for b in markers if b < n_batches]] = True
    slot_done = np.repeat(finished_batches, batch_size)

    index = raw["grid_index"].values
    real = index >= 0
    order = np.argsort(index[real], kind="stable")
    slots = np.nonzero(real)[0][order]
    n_runs = int(np.prod([len(v) for _, v in grid]))
    if len(slots) != n_runs or not np.array_equal(
        index[slots], np.arange(n_runs)
    ):  # pragma: no cover
        raise StoreError(
            f"dlnjax.load: {store.zarr} is corrupt (grid_index does not cover the {n_runs} runs)."
        )
    finished = slot_done[slots]
    if not finished.all():
        msg = f"dlnjax.load: the sweep in {store.dir} is unfinished: {int(finished.sum())} of {n_runs} runs are done; rerun `dlnjax sweep` on it to resume."
        if require_complete:
            raise StoreError(msg)
        warnings.warn(msg, stacklevel=2)

    shape = tuple(len(v) for _, v in grid)
    axes = [a for a, _ in grid]
    out = {}
    for name, var in raw.data_vars.items():
        if name == "grid_index":
            continue
        values = var.values[slots]
        if not finished.all() and np.issubdtype(values.dtype, np.floating):
            values = values.copy()
            values[~finished] = np.nan
        out[name] = (axes + list(var.dims[1:]), values.reshape(shape + values.shape[1:]))
    out["finished"] = (axes, finished.reshape(shape))
    coords = {}
    for axis, values in grid:
        if axis == "widths":
            values = ["-".join(str(d) for d in w) for w in values]
        coords[axis] = np.asarray(values)
    for name, coord in raw.coords.items():
        if "slot" not in coord.dims:
            coords[name] = coord.values
    ds = xr.Dataset(out, coords=coords, attrs=attrs)
    kinds = sorted({m.get("device_kind", "?") for m in markers.values()})
    if kinds:
        ds.attrs["device_kind"] = ", ".join(kinds)
    return ds
