"""``dlnjax reproduce init-scale-tuning`` (issue 6): the quick run, its files checked against each other, the reported
optima against the saved grid and path, the last point recomputed by an independent `dlnjax.simulate`, and the
gradient that gradient descent used against central finite differences of that independent solve."""

import json
import math
import re

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
from conftest import csv_rows

import dlnjax
from dlnjax._cli import main
from dlnjax.experiments import EXPERIMENTS, init_scale_tuning
from dlnjax.flows import Regularized


def test_quick_run_is_consistent(tmp_path):
    out = tmp_path / "ist"
    assert main(["reproduce", "init-scale-tuning", "--quick", "--out", str(out)]) == 0
    assert EXPERIMENTS["init-scale-tuning"] is init_scale_tuning.run
    s = json.loads((out / "summary.json").read_text())
    cfg = s["config"]
    assert s["status"] == "OK" and s["problems"] == []
    assert "status: OK" in (out / "summary.txt").read_text()
    for name in ("landscape.png", "convergence.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = np.load(out / "init_scale_tuning.npz")
    ls, lk = data["log_scales"], data["log_kappas"]
    k = 2 ** cfg["levels"] + 1
    assert ls.shape == lk.shape == (k,) and data["grid_test_error"].shape == (k, k)
    np.testing.assert_allclose(np.exp(ls[[0, -1]]), cfg["scale_range"], rtol=1e-12)
    np.testing.assert_allclose(np.exp(lk[[0, -1]]), cfg["kappa_range"], rtol=1e-12)

    # the grid: CSV against npz
    grid = csv_rows(out / "grid.csv")
    assert len(grid) == k * k
    E = np.full((k, k), np.nan)
    for r in grid:
        i, j = int(r["i_scale"]), int(r["i_kappa"])
        E[i, j] = float(r["test_error"])
        assert math.isclose(float(r["scale"]), math.exp(ls[i]), rel_tol=1e-14)
        assert math.isclose(float(r["kappa"]), math.exp(lk[j]), rel_tol=1e-14)
        assert r["success"] == "1"
    np.testing.assert_array_equal(E, data["grid_test_error"])

    # every reported grid optimum is the minimum of its nested subgrid of the saved grid
    grids = [r for r in s["results"] if r["method"].startswith("grid")]
    assert len(grids) == 3
    for r in grids:
        n = int(re.match(r"grid (\d+)x\1", r["method"]).group(1))
        stride = (k - 1) // (n - 1)
        sub = E[::stride, ::stride]
        assert sub.shape == (n, n) and r["solves"] == n * n
        i, j = np.unravel_index(np.argmin(sub), sub.shape)
        assert r["test_error"] == sub[i, j] == sub.min()
        assert math.isclose(r["scale"], math.exp(ls[i * stride]), rel_tol=1e-12)
        assert math.isclose(r["kappa"], math.exp(lk[j * stride]), rel_tol=1e-12)
    finest = next(r for r in grids if r["solves"] == k * k)
    assert finest["test_error"] == E.min()
    matched = next(r for r in grids if "solve-matched" in r["method"])
    assert matched["solves"] == cfg["budget"]

    # the gradient-descent path: CSV against npz against summary
    path = csv_rows(out / "path.csv")
    assert len(path) == cfg["budget"] == data["path_test_error"].size
    err = np.array([float(r["test_error"]) for r in path])
    np.testing.assert_array_equal(err, data["path_test_error"])
    np.testing.assert_array_equal(
        [[float(r["grad_log_scale"]), float(r["grad_log_kappa"])] for r in path], data["path_grad"]
    )
    np.testing.assert_allclose(
        [[float(r["scale"]), float(r["kappa"])] for r in path],
        np.exp(data["path_theta"]),
        rtol=1e-14,
    )
    np.testing.assert_array_equal(
        [float(r["best_so_far"]) for r in path], np.minimum.accumulate(err)
    )
    np.testing.assert_array_equal(data["final_theta"], data["path_theta"][-1])
    best, last = (
        next(r for r in s["results"] if r["method"] == f"gradient descent, {w} point")
        for w in ("best", "last")
    )
    assert best["test_error"] == err.min() and last["test_error"] == err[-1]
    assert (
        [best["log_scale"], best["log_kappa"]]
        == data["path_theta"][np.argmin(err)].tolist()
        == data["best_theta"].tolist()
    )
    assert s["start_test_error"] == err[0]
    # the budget table: the gradient-descent rows are the best-so-far curve, the grid rows the nested minima
    budget = csv_rows(out / "budget.csv")
    gd = [r for r in budget if r["method"] == "gradient descent"]
    assert [int(r["solves"]) for r in gd] == list(range(1, cfg["budget"] + 1))
    np.testing.assert_array_equal(
        [float(r["best_test_error"]) for r in gd], np.minimum.accumulate(err)
    )
    for r in (r for r in budget if r["method"] == "grid"):
        n = math.isqrt(int(r["solves"]))
        assert float(r["best_test_error"]) == E[:: (k - 1) // (n - 1), :: (k - 1) // (n - 1)].min()
    # the summary's gap is the ratio of the two reported optima
    assert math.isclose(
        s["gap_matched"], best["test_error"] / matched["test_error"] - 1, rel_tol=1e-12
    )

    # an independent solve from the saved problem data and the last parameters: the same test error
    n = cfg["size"]
    loss = dlnjax.losses.MatrixCompletion(
        data["rows"], data["cols"], data["values"], (n, n), truth=data["truth"]
    )
    base = dlnjax.DLN(list(data["base_layers"]))
    assert base.widths == (n,) * (cfg["depth"] + 1)

    @jax.jit
    def test_error(log_scale, log_kappa):
        net0 = dlnjax.DLN([jnp.exp(log_scale) * w for w in base.layers])
        traj = dlnjax.simulate(
            Regularized(loss, jnp.exp(log_kappa)),
            net0,
            jnp.array([0.0, cfg["horizon"]]),
            solver=dfx.Tsit5(),
            dt0=cfg["horizon"] / cfg["steps"],
            stepsize_controller=dfx.ConstantStepSize(),
            max_steps=cfg["steps"] + 2,
        )
        assert traj.ys.depth == cfg["depth"]
        return loss.test_error(dlnjax.end_to_end(traj[-1]))

    final = data["final_theta"]
    assert math.isclose(float(test_error(*final)), last["test_error"], rel_tol=1e-10)
    # the gradient gradient descent used at its start, d test error / d log scale, against central differences
    th0, h = data["path_theta"][0], 1e-4
    fd = (float(test_error(th0[0] + h, th0[1])) - float(test_error(th0[0] - h, th0[1]))) / (2 * h)
    assert abs(fd) > 1e-3  # a real slope: the start is far from the optimum
    assert math.isclose(data["path_grad"][0, 0], fd, rel_tol=1e-6)
