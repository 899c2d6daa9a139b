"""`dlnjax.sweep._plot.plot`: the standard figures of a sweep, drawn from synthetic Datasets (no JAX runs)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from matplotlib.image import imread

from dlnjax.sweep._plot import plot


def _training_sweep() -> xr.Dataset:
    """depth x learning_rate x seed over steps; the largest learning rate diverges for some runs."""
    rng = np.random.default_rng(0)
    depth, lr, seed = [2, 3, 4], [1e-3, 1e-2, 1e-1], [0, 1]
    steps = np.arange(0, 101, 5)
    grid = (len(depth), len(lr), len(seed))
    rate = (
        np.asarray(lr)[None, :, None]
        * 40
        / np.asarray(depth)[:, None, None]
        * (1 + 0.1 * rng.random(grid))
    )
    loss = np.exp(-rate[..., None] * steps)  # (depth, lr, seed, step): spans many decades
    test_error = 0.1 + loss + 0.01 * rng.random(loss.shape)
    layer_norms = 1 + 0.1 * rng.random((*grid, steps.size, max(depth)))
    for i, d in enumerate(depth):  # shallower networks have fewer layers: NaN-padded
        layer_norms[i, ..., d:] = np.nan
    sv = (
        np.sort(rng.random((*grid, steps.size, 3)), axis=-1)[..., ::-1]
        * np.exp(-0.01 * steps)[:, None]
    )
    diverged = np.zeros(grid, bool)
    diverged[:, 2, 0] = True  # the largest learning rate, seed 0: every depth
    diverged_at = np.where(diverged, 40, -1)
    nan_after = (steps > 40)[None, None, None, :] & diverged[..., None]
    loss[nan_after] = np.nan
    test_error[nan_after] = np.nan
    layer_norms[nan_after] = np.nan
    sv[nan_after] = np.nan
    dims = ("depth", "learning_rate", "seed", "step")
    return xr.Dataset(
        {
            "loss": (dims, loss),
            "test_error": (dims, test_error),
            "sharpness": (dims, np.full(loss.shape, np.nan)),  # never recorded: all NaN
            "layer_norms": ((*dims, "layer"), layer_norms),
            "singular_values": ((*dims, "index"), sv),
            "diverged": (dims[:-1], diverged),
            "diverged_at": (dims[:-1], diverged_at),
        },
        coords={"depth": depth, "learning_rate": lr, "seed": seed, "step": steps},
        attrs={
            "grid_axes": json.dumps(["depth", "learning_rate", "seed"]),  # as zarr stores it
            "trajectory_dim": "step",
            "quantities": json.dumps(
                ["loss", "test_error", "sharpness", "layer_norms", "singular_values"]
            ),
        },
    )


def _flow_sweep() -> xr.Dataset:
    """A categorical init axis and a scale axis over flow time; one run did not succeed."""
    rng = np.random.default_rng(1)
    init, scale = ["gaussian", "orthogonal", "identity"], [0.1, 0.5, 1.0, 2.0]
    time = np.linspace(0.0, 5.0, 30)
    balancedness = rng.random((3, 4, 1)) * np.exp(-time)
    effective_rank = 1 + rng.random((3, 4, 1)) + 0 * time
    success = np.ones((3, 4), bool)
    success[2, 3] = False
    return xr.Dataset(
        {
            "balancedness": (("init", "scale", "time"), balancedness),
            "effective_rank": (("init", "scale", "time"), effective_rank),
            "success": (("init", "scale"), success),
        },
        coords={"init": init, "scale": scale, "time": time},
        attrs={
            "grid_axes": ["init", "scale"],
            "trajectory_dim": "time",
            "quantities": ["balancedness", "effective_rank"],
        },
    )


def _single_run() -> xr.Dataset:
    steps = np.arange(50)
    return xr.Dataset(
        {
            "loss": (("width", "step"), np.exp(-0.1 * steps)[None]),
            "diverged": (("width",), [False]),
        },
        coords={"width": [8], "step": steps},
        attrs={"grid_axes": ["width"], "trajectory_dim": "step", "quantities": ["loss"]},
    )


def _files(stems) -> set[str]:
    return {f"{s}{ext}" for s in stems for ext in (".png", ".pdf")}


def _check_written(out: Path, paths: list[Path], stems) -> None:
    assert len(paths) == len(set(paths))
    assert {p.name for p in paths} == _files(stems)
    assert {p.name for p in out.iterdir()} == _files(
        stems
    )  # nothing written beyond what is returned
    assert all(p.parent == out for p in paths)
    for p in paths:
        if p.suffix == ".pdf":
            assert p.read_bytes()[:5] == b"%PDF-"
            continue
        img = imread(p)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
        assert np.ptp(img[..., :3]) > 0.5  # drawn, not a flat canvas
        assert (img[..., :3] < 0.5).mean() > 0.002  # some dark ink: labels, lines


def test_training_sweep(tmp_path, caplog):
    out = tmp_path / "figures" / "nested"  # created, parents included
    with caplog.at_level(logging.WARNING, logger="dlnjax.sweep._plot"):
        paths = plot(_training_sweep(), out)
    stems = [f"{q}_{kind}" for q in ("loss", "test_error") for kind in ("final", "trajectories")]
    _check_written(out, paths, stems + ["layer_norms_final", "singular_values"])
    assert any(
        "sharpness" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records
    )
    assert not any("sharpness" in p.name for p in paths)


def test_flow_sweep_with_categorical_axis(tmp_path):
    paths = plot(_flow_sweep(), tmp_path)
    stems = [
        f"{q}_{kind}"
        for q in ("balancedness", "effective_rank")
        for kind in ("final", "trajectories")
    ]
    _check_written(tmp_path, paths, stems)


@pytest.mark.parametrize("grid", ["size-one axis", "no axis"])
def test_single_run_draws_trajectories_only(tmp_path, grid):
    ds = _single_run()
    if grid == "no axis":
        ds = ds.isel(width=0, drop=True)
        ds.attrs["grid_axes"] = "[]"
    paths = plot(ds, str(tmp_path))  # a str path works too
    _check_written(tmp_path, paths, ["loss_trajectories"])


def test_many_numeric_values_get_a_colorbar(tmp_path):
    scale = np.geomspace(0.01, 10.0, 15)
    time = np.linspace(0.0, 1.0, 20)
    ds = xr.Dataset(
        {"squared_norm": (("scale", "time"), scale[:, None] ** 2 * (1 + time))},
        coords={"scale": scale, "time": time},
        attrs={"grid_axes": ["scale"], "trajectory_dim": "time", "quantities": ["squared_norm"]},
    )
    paths = plot(ds, tmp_path)
    _check_written(tmp_path, paths, ["squared_norm_final", "squared_norm_trajectories"])


def test_max_lines_caps_the_runs_drawn(tmp_path):
    ds = _training_sweep()[["loss", "diverged"]]
    ds.attrs = {
        "grid_axes": ["depth", "learning_rate", "seed"],
        "trajectory_dim": "step",
    }  # no "quantities"
    paths = plot(ds, tmp_path, max_lines=3)
    _check_written(tmp_path, paths, ["loss_final", "loss_trajectories"])


def test_rejects_a_dataset_without_trajectory(tmp_path):
    ds = xr.Dataset({"loss": (("depth",), [1.0, 2.0])}, coords={"depth": [2, 3]})
    with pytest.raises(ValueError, match="trajectory"):
        plot(ds, tmp_path)
