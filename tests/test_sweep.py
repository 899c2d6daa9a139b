"""``dlnjax sweep``: results land at the right grid points, resume after kill -9, sharding and padding change nothing."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
import xarray as xr

import dlnjax
from dlnjax.sweep import ConfigError, load, parse_config, run
from dlnjax.sweep._run import make_loss

ROOT = Path(__file__).resolve().parents[1]

TRAIN = {
    "name": "t",
    "batch_size": 4,
    "task": {"loss": "regression", "n": 12, "d_in": 3, "d_out": 1, "seed": 3},
    "network": {"width": 3},
    "dynamics": {"method": "train", "learning_rate": 0.05, "steps": 40},
    "record": {
        "quantities": ["loss", "test_error", "balancedness", "layer_norms", "squared_norm"],
        "every": 10,
    },
    "grid": {"depth": [2, 3], "scale": [0.3, 0.6], "seed": [0, 1]},
}


def toml_text(data) -> str:
    """A minimal TOML writer for the configs of these tests."""

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, table in data.items():
        if isinstance(table, dict):
            lines.append(f"[{section}]")
            lines += [f"{k} = {value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def direct_train(cfg, point):
    """One run of the sweep computed directly with the library (not through the sweep code)."""
    s = cfg.run_settings(point)
    loss = make_loss(cfg.task, jnp.float64)
    net0 = dlnjax.gaussian(
        jr.split(jr.PRNGKey(s["seed"]))[0], s["widths"], s["scale"], dtype=jnp.float64
    )
    return dlnjax.train(
        loss,
        net0,
        optax.sgd(s["learning_rate"]),
        cfg.dynamics["steps"],
        every=cfg.record["every"],
        metrics=("loss", "test_error", "balancedness", "layer_norms", "squared_norm"),
    )


def test_results_land_at_their_grid_points(tmp_path):
    cfg = parse_config({**TRAIN, "padding": "per-shape"})
    ds = run(cfg, tmp_path / "s", progress=False)
    assert list(ds.loss.dims) == ["depth", "scale", "seed", "step"]
    np.testing.assert_array_equal(ds.depth, [2, 3])
    np.testing.assert_array_equal(ds.scale, [0.3, 0.6])
    np.testing.assert_array_equal(ds.step, np.arange(0, 41, 10))
    for point in cfg.points():
        ref = direct_train(cfg, point)
        got = ds.sel(**point)
        for q in ("loss", "test_error", "balancedness", "squared_norm"):
            np.testing.assert_allclose(
                got[q].values, ref.history[q], rtol=1e-12, atol=1e-14, err_msg=f"{q} at {point}"
            )
        depth = point["depth"]
        np.testing.assert_allclose(
            got.layer_norms.values[:, :depth], ref.history["layer_norms"], rtol=1e-12
        )
        assert np.all(np.isnan(got.layer_norms.values[:, depth:]))  # no such layer
        assert not bool(got.diverged) and int(got.diverged_at) == -1
    assert bool(ds.finished.all())
    # provenance travels with the results
    assert json.loads(ds.attrs["config"]) == cfg.data
    versions = json.loads(ds.attrs["versions"])
    assert versions["jax"] == jax.__version__ and "diffrax" in versions
    assert ds.attrs["device_kind"] and ds.attrs["git_commit"]
    # load is a round trip of the store, and rerunning resumes with nothing to do
    xr.testing.assert_identical(load(tmp_path / "s"), ds)
    xr.testing.assert_identical(run(cfg, tmp_path / "s", progress=False), ds)


def test_other_sweep_in_the_same_directory_is_refused(tmp_path):
    run(parse_config({**TRAIN, "grid": {"seed": [0]}}), tmp_path / "s", progress=False)
    with pytest.raises(ConfigError) as exc:
        run(parse_config({**TRAIN, "grid": {"seed": [0, 1]}}), tmp_path / "s", progress=False)
    assert exc.value.field == "out" and "grid.seed" in str(exc.value)


def test_divergence_is_flagged_not_hidden(tmp_path):
    cfg = parse_config(
        {
            **TRAIN,
            "dynamics": {"method": "train", "learning_rate": 5.0, "steps": 40},
            "grid": {"scale": [0.3, 1.5]},
        }
    )
    ds = run(cfg, tmp_path / "s", progress=False)
    assert bool(ds.diverged.any())
    for scale in ds.scale.values:
        r = ds.sel(scale=scale)
        if bool(r.diverged):
            at = int(r.diverged_at)
            assert np.all(np.isnan(r.loss.values[r.step.values >= at])) and np.all(
                np.isfinite(r.loss.values[r.step.values < at])
            )
        else:
            assert np.all(np.isfinite(r.loss.values))


def test_flow_sweep_matches_simulate(tmp_path):
    cfg = parse_config(
        {
            "name": "f",
            "batch_size": 4,
            "task": {"loss": "factorization", "shape": [3, 3], "rank": 2, "seed": 1},
            "network": {"width": 3, "scale": 0.5},
            "dynamics": {
                "method": "flow",
                "flow": "gradient",
                "t1": 2.0,
                "rtol": 1e-9,
                "atol": 1e-11,
            },
            "record": {"quantities": ["loss", "balancedness", "singular_values"], "saves": 5},
            "grid": {"kappa": [0.0, 0.5], "seed": [0, 1]},
        }
    )
    ds = run(cfg, tmp_path / "f", progress=False)
    assert ds.attrs["trajectory_dim"] == "time" and bool(ds.success.all())
    loss = make_loss(cfg.task, jnp.float64)
    for point in cfg.points():
        s = cfg.run_settings(point)
        net0 = dlnjax.gaussian(
            jr.split(jr.PRNGKey(s["seed"]))[0], s["widths"], s["scale"], dtype=jnp.float64
        )
        flow = dlnjax.flows.Regularized(loss, s["kappa"])
        traj = dlnjax.simulate(flow, net0, jnp.linspace(0.0, 2.0, 5), rtol=1e-9, atol=1e-11)
        ref = jax.vmap(lambda n: loss(dlnjax.end_to_end(n)))(traj.ys)
        np.testing.assert_allclose(ds.sel(**point).loss.values, ref, rtol=1e-7)
        sv = jax.vmap(lambda n: jnp.linalg.svd(dlnjax.end_to_end(n), compute_uv=False))(traj.ys)
        np.testing.assert_allclose(
            ds.sel(**point).singular_values.values, sv, rtol=1e-7, atol=1e-12
        )
    # with kappa = 0 the gradient flow conserves the moments: balancedness * ||W||^2 is constant
    # (checked loosely through the trajectory of balancedness being smooth and finite)
    assert np.all(np.isfinite(ds.balancedness.values))


def _cli(args, env_extra=None, **kw):
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.Popen(
        [sys.executable, "-m", "dlnjax._cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_sharded_over_four_devices_equals_one_device(tmp_path):
    cfg = write_config(
        tmp_path,
        {
            **TRAIN,
            "batch_size": 8,
            "padding": "pad",
            "record": {
                **TRAIN["record"],
                "quantities": TRAIN["record"]["quantities"] + ["sharpness", "grad_norm"],
            },
        },
    )
    proc = _cli(
        ["sweep", str(cfg), "--out", str(tmp_path / "four"), "--no-progress"],
        # the compiler options of this process (the test suite's, tests/conftest.py) plus four host devices
        {
            "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4"
        },
    )
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert (
        "on 4 x" in out and "padding: pad" in out
    )  # one padded program, its batch sharded over 4 devices
    one = run(
        parse_config(__import__("tomllib").loads(cfg.read_text()), cfg.read_text()),
        tmp_path / "one",
        progress=False,
    )
    four = load(tmp_path / "four")
    assert json.loads(four.attrs["versions"]) == json.loads(one.attrs["versions"])
    for name in one.data_vars:
        a, b = four[name].values, one[name].values
        if a.dtype.kind != "f":
            np.testing.assert_array_equal(a, b, err_msg=name)
            continue
        # The same numbers, up to the summation order of XLA's reductions, which may depend on the batch
        # size per device (2 here, 8 on one device): at most 2 units in the last place.
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=name)
        np.testing.assert_array_max_ulp(a[~np.isnan(a)], b[~np.isnan(b)], maxulp=2)


def write_config(tmp_path, data, name="c.toml") -> Path:
    path = tmp_path / name
    path.write_text(toml_text(data))
    return path


def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path):
    data = {
        **TRAIN,
        "batch_size": 2,
        "padding": "per-shape",
        "dynamics": {"method": "train", "learning_rate": 0.05, "steps": 3000},
        "record": {"quantities": ["loss", "balancedness"], "every": 100},
        "grid": {"depth": [2, 3], "scale": [0.2, 0.3, 0.4, 0.5], "seed": [0, 1]},
    }
    cfg_path = write_config(tmp_path, data)
    killed = tmp_path / "killed"
    proc = _cli(["sweep", str(cfg_path), "--out", str(killed), "--no-progress"])
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((killed / "batches").glob("*.done"))) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, (
        "the sweep finished before it could be killed: " + proc.communicate()[1]
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_batches = 8
    done_at_kill = len(list((killed / "batches").glob("*.done")))
    assert 2 <= done_at_kill < n_batches  # killed in the middle
    with pytest.warns(UserWarning, match="unfinished"):
        partial = load(killed)
    assert 0 < int(partial.finished.sum()) < partial.finished.size
    assert np.all(np.isnan(partial.loss.values[~partial.finished.values]))

    proc = _cli(["sweep", str(cfg_path), "--out", str(killed)])  # with the progress bar this time
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert f"{done_at_kill} batches already done" in out
    # tqdm's bar over batches: resumed at the finished count, with the rate and the ETA
    assert (
        f"{n_batches}/{n_batches} [" in err
        and ("batch/s" in err or "s/batch" in err)
        and "<" in err
    )
    resumed = load(killed)
    cfg = parse_config(__import__("tomllib").loads(cfg_path.read_text()), cfg_path.read_text())
    fresh = run(cfg, tmp_path / "fresh", progress=False)
    xr.testing.assert_identical(resumed, fresh)


def test_padded_grid_equals_one_program_per_shape(tmp_path):
    """The whole depth x width grid as one padded program gives the real networks' numbers. (The sharpness of
    padded networks: tests/test_padding.py against the real ones, and the sharded test below through the sweep.)"""
    data = {
        **TRAIN,
        "batch_size": 16,
        "record": {
            "quantities": [
                "loss",
                "objective",
                "balancedness",
                "layer_norms",
                "squared_norm",
                "grad_norm",
                "effective_rank",
            ],
            "every": 10,
        },
        "dynamics": {"method": "train", "learning_rate": 0.05, "steps": 40, "kappa": 0.01},
        "grid": {"depth": [2, 4], "width": [3, 5], "seed": [0, 1]},
    }
    padded = run(parse_config({**data, "padding": "pad"}), tmp_path / "pad", progress=False)
    per_shape = run(
        parse_config({**data, "padding": "per-shape"}), tmp_path / "per", progress=False
    )
    assert padded.attrs["padding"] == "pad" and per_shape.attrs["padding"] == "per-shape"
    for name in per_shape.data_vars:
        a, b = padded[name].values, per_shape[name].values
        if a.dtype.kind == "f":
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=name)
            np.testing.assert_allclose(
                a[~np.isnan(a)], b[~np.isnan(b)], rtol=1e-10, atol=1e-13, err_msg=name
            )
        else:
            np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.slow  # 30-45 s; padding is checked to rounding by test_padded_grid_equals_one_program_per_shape
def test_padded_flow_sweep_agrees_with_per_shape_to_solver_tolerance(tmp_path):
    """Adaptive flow solves of padded networks take other steps (the error norm runs over more entries), so
    padded and per-shape runs agree to the solver's tolerance, not to rounding."""
    data = {
        "name": "f",
        "batch_size": 8,
        "task": {"loss": "factorization", "shape": [3, 3], "rank": 2, "seed": 1},
        "network": {"scale": 0.5},
        "dynamics": {
            "method": "flow",
            "flow": "regularized",
            "kappa": 0.1,
            "t1": 2.0,
            "rtol": 1e-10,
            "atol": 1e-12,
        },
        "record": {
            "quantities": ["loss", "balancedness", "layer_norms", "squared_norm"],
            "saves": 5,
        },
        "grid": {"depth": [2, 3], "width": [3, 4], "seed": [0, 1]},
    }
    padded = run(parse_config({**data, "padding": "pad"}), tmp_path / "pad", progress=False)
    per_shape = run(
        parse_config({**data, "padding": "per-shape"}), tmp_path / "per", progress=False
    )
    assert (
        padded.attrs["padding"] == "pad"
        and bool(padded.success.all())
        and bool(per_shape.success.all())
    )
    for name in ("loss", "balancedness", "layer_norms", "squared_norm"):
        a, b = padded[name].values, per_shape[name].values
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=name)
        np.testing.assert_allclose(
            a[~np.isnan(a)], b[~np.isnan(b)], rtol=1e-8, atol=1e-10, err_msg=name
        )


def test_fixed_step_flow_sweep_is_one_batched_solve_with_per_run_results(tmp_path):
    """With a constant step the batch is solved as one ODE; each run still gets its own numbers and flags."""
    cfg = parse_config(
        {
            "name": "c",
            "batch_size": 4,
            "task": {"loss": "factorization", "shape": [3, 3], "rank": 2, "seed": 1},
            "network": {"width": 3, "depth": 3},
            "dynamics": {"method": "flow", "flow": "regularized", "t1": 1.0, "dt0": 0.01},
            "record": {"quantities": ["loss", "squared_norm"], "saves": 3},
            "grid": {"scale": [0.5, 40.0], "kappa": [0.0, 0.3]},  # scale 40 blows up with this step
        }
    )
    ds = run(cfg, tmp_path / "c", progress=False)
    loss = make_loss(cfg.task, jnp.float64)
    for point in cfg.points():
        s = cfg.run_settings(point)
        net0 = dlnjax.gaussian(
            jr.split(jr.PRNGKey(s["seed"]))[0], s["widths"], s["scale"], dtype=jnp.float64
        )
        traj = dlnjax.simulate(
            dlnjax.flows.Regularized(loss, s["kappa"]), net0, jnp.linspace(0.0, 1.0, 3), dt0=0.01
        )
        got = ds.sel(**point)
        assert bool(got.success) == bool(traj.success), point
        if bool(traj.success):
            ref = jax.vmap(lambda n: loss(dlnjax.end_to_end(n)))(traj.ys)
            np.testing.assert_allclose(got.loss.values, ref, rtol=1e-12, err_msg=str(point))
            assert int(got.num_steps) == int(traj.stats["num_steps"]) == 100
    assert not bool(ds.success.sel(scale=40.0).any()) and bool(ds.success.sel(scale=0.5).all())
