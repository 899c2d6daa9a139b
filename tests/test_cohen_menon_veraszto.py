"""`dlnjax reproduce cohen-menon-veraszto --quick`: the content of its outputs, and the nuclear-norm solver.

The reference values are recomputed here with numpy from the saved arrays (distances to ``ab = 1``, recovery
errors, effective ranks, observations met), not read back from the experiment's own summary.
"""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from conftest import csv_rows

import dlnjax
from dlnjax.experiments import cohen_menon_veraszto as cmv


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmv")
    code = cmv.run(out, quick=True, log=lambda msg: None)
    return out, code


def _erank(X):
    s = np.linalg.svd(X, compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-np.sum(p * np.log(p))))


def test_status_and_files(quick):
    out, code = quick
    summary = json.loads((out / "summary.json").read_text())
    assert code == 0 and summary["status"] == "OK", summary["problems"]
    for name in (
        "toy_paths.png",
        "toy_distance.png",
        "completion.png",
        "volume.png",
        "toy.csv",
        "completion.csv",
        "volume.csv",
        "toy.npz",
        "completion.npz",
        "summary.txt",
    ):
        assert (out / name).stat().st_size > 0, name
    assert "status: OK" in (out / "summary.txt").read_text()


def test_toy_distances_recomputed(quick):
    out, _ = quick
    z = np.load(out / "toy.npz")
    L = z["limits"]  # (depth, scale, start, 2, 2)
    a, b = L[..., 0, 1], L[..., 1, 0]
    np.testing.assert_allclose(z["ab_distance"], np.abs(a * b - 1), rtol=0, atol=1e-15)
    np.testing.assert_allclose(
        z["sigma_min"], np.linalg.svd(L, compute_uv=False)[..., -1], rtol=1e-10, atol=1e-15
    )
    # the limits are minimizers: the observed diagonal is 1 (E <= toy_target E(0), E(0) ~ 1)
    assert np.all(z["success"])
    np.testing.assert_allclose(L[..., 0, 0], 1.0, atol=1e-5)
    np.testing.assert_allclose(L[..., 1, 1], 1.0, atol=1e-5)
    # N = 1 keeps the off-diagonal entries of X0: |ab - 1| ~ 1; depth and small scale push the limit onto ab = 1
    depths = list(z["depths"])
    j1 = depths.index(1.0)
    scales = z["scales"]
    np.testing.assert_allclose(
        L[j1, ..., 0, 1], scales[:, None] * z["Q"][None, :, 0, 1], rtol=1e-6, atol=1e-12
    )
    assert np.all(z["ab_distance"][j1] > 0.9)
    for j, d in enumerate(depths):
        if d != 1:
            assert np.median(z["ab_distance"][j, -1]) < 0.1 * np.median(z["ab_distance"][j1, -1]), d
    # the CSV rows carry the same numbers
    rows = csv_rows(out / "toy.csv")
    assert len(rows) == z["ab_distance"].size
    labels = ["inf" if math.isinf(d) else str(int(d)) for d in depths]
    for r in rows:
        j, k, q = labels.index(r["depth"]), list(scales).index(float(r["scale"])), int(r["start"])
        assert float(r["ab_distance"]) == z["ab_distance"][j, k, q]
        assert float(r["X12"]) == L[j, k, q, 0, 1] and float(r["X21"]) == L[j, k, q, 1, 0]
    # and the summary medians
    s = json.loads((out / "summary.json").read_text())["toy"]
    np.testing.assert_allclose(
        np.asarray(s["ab_distance_median"]), np.median(z["ab_distance"], axis=2), rtol=1e-14
    )


def test_completion_recomputed(quick):
    out, _ = quick
    z = np.load(out / "completion.npz")
    s = json.loads((out / "summary.json").read_text())
    cfg = cmv.QUICK
    M = z["truth"]
    for i, m in enumerate(z["observed"]):
        rows, cols, vals = z[f"rows_{m}"], z[f"cols_{m}"], z[f"values_{m}"]
        assert rows.shape == (m,) and np.allclose(M[i][rows, cols], vals)
        assert np.linalg.matrix_rank(M[i]) == cfg.rank and math.isclose(np.linalg.norm(M[i]), 1.0)
        # the flow's limits: recovery error, effective rank and loss recomputed from the saved matrices
        X = z["limits"][i]  # (depth, scale, n, n)
        err = np.linalg.norm(X - M[i], axis=(-2, -1))
        np.testing.assert_allclose(z["test_error"][i], err, rtol=1e-10)
        np.testing.assert_allclose(
            z["effective_rank"][i],
            np.vectorize(lambda a, b: _erank(X[a, b]))(*np.indices(X.shape[:2])),
            rtol=1e-8,
        )
        loss = np.mean((X[..., rows, cols] - vals) ** 2, axis=-1)
        np.testing.assert_allclose(z["final_loss"][i], loss, rtol=1e-8)
        assert np.all(loss <= cfg.loss_target * np.mean(vals**2) * (1 + 1e-9))
        # the nuclear-norm baseline: meets the observations, error in a plausible range, certified by duality
        Xn = z["nuclear_X"][i]
        assert np.max(np.abs(Xn[rows, cols] - vals)) <= 1e-6 * np.max(np.abs(vals))
        e_nuc = np.linalg.norm(Xn - M[i])
        assert 0 <= e_nuc < 1.0 and math.isclose(e_nuc, z["nuclear_test_error"][i], rel_tol=1e-10)
        cert = cmv.nuclear_norm_certificate(Xn, z["nuclear_Y"][i], rows, cols, vals)
        assert abs(cert["relative_gap"]) < 1e-6
        # depth 1 (plain gradient flow from a small start) does not complete: its limit is nearly X0 + P_Omega(M - X0)
        j1 = list(z["depths"]).index(1.0)
        assert np.all(z["test_error"][i, j1] > 0.5)
        # deeper, small start: lower error and effective rank than depth 1
        for j, d in enumerate(z["depths"]):
            if d != 1:
                assert z["test_error"][i, j, -1] < z["test_error"][i, j1, -1]
                assert z["effective_rank"][i, j, -1] < z["effective_rank"][i, j1, -1]
        # CSV and summary agree with the arrays
        table = s["completion"]["table"][i]
        for j in range(len(z["depths"])):
            for k in range(len(z["scales"])):
                assert table[j][k]["test_error"] == z["test_error"][i, j, k]
        rows = [r for r in csv_rows(out / "completion.csv") if int(r["observed"]) == m]
        nuc_row = [r for r in rows if r["depth"] == "nuclear"][0]
        assert float(nuc_row["test_error"]) == z["nuclear_test_error"][i]
        assert len(rows) == 1 + z["test_error"][i].size


def test_volume_table(quick):
    out, _ = quick
    z = np.load(out / "toy.npz")
    rows = {r["runs"]: r for r in csv_rows(out / "volume.csv")}
    # (a): recompute the start-to-limit change of log rho_N and the fraction of runs ending above the start
    for j, d in enumerate(z["depths"]):
        if d == 1:
            assert np.all(z["log_density"][j] == 0)
            continue
        label = "inf" if math.isinf(d) else str(int(d))
        lp = z["log_density"][j].reshape(-1, z["log_density"].shape[-1])
        stop = z["stop"][j].ravel()
        finite = [np.all(np.isfinite(p[: s + 1])) for p, s in zip(lp, stop)]
        change = np.array([p[s] - p[0] for p, s, f in zip(lp, stop, finite) if f])
        r = rows[f"(a) 2x2, N = {label}"]
        assert int(r["n"]) == len(change) and int(r["n_nonfinite"]) == len(finite) - len(change)
        if len(change):
            assert math.isclose(float(r["change_median"]), float(np.median(change)), rel_tol=1e-12)
            assert math.isclose(float(r["fraction_end_above_start"]), float(np.mean(change > 0)))


def test_svt_matches_svd():
    rng = np.random.default_rng(0)
    G = (
        rng.standard_normal((7, 5))
        @ np.diag([3.0, 2.0, 1.0, 0.5, 0.1])
        @ rng.standard_normal((5, 5))
    )
    u, s, vt = np.linalg.svd(G, full_matrices=False)
    for tau in (0.0, 0.3, 2.0, 100.0):
        X, nuc, rank = cmv.svt(jnp.asarray(G), tau)
        ref = (u * np.maximum(s - tau, 0)) @ vt
        np.testing.assert_allclose(np.asarray(X), ref, atol=1e-9 * s[0])
        assert math.isclose(
            float(nuc), float(np.maximum(s - tau, 0).sum()), rel_tol=1e-9, abs_tol=1e-12
        )
        assert int(rank) == int(np.sum(s > tau))


def test_nuclear_norm_known_answers():
    # 2 x 2 with X_11 = X_22 = 1: ||X||_* >= |tr X| = 2 with equality iff X is symmetric PSD, so the minimum is 2,
    # attained at [[1, a], [a, 1]], |a| <= 1. From X = 0 the iteration stays diagonal and returns the identity.
    loss = cmv.toy_loss()
    res = cmv.nuclear_norm_completion(loss, None, 2000, 1e-12)
    X = np.asarray(res["X"])
    assert bool(res["converged"])
    np.testing.assert_allclose(X, np.eye(2), atol=1e-9)
    cert = cmv.nuclear_norm_certificate(X, res["Y"], [0, 1], [0, 1], [1.0, 1.0])
    assert (
        math.isclose(cert["nuclear_norm"], 2.0, rel_tol=1e-9) and abs(cert["relative_gap"]) < 1e-9
    )
    # every entry observed: the unique feasible point is M itself
    rng = np.random.default_rng(1)
    M = rng.standard_normal((4, 3))
    r, c = np.indices(M.shape)
    full = dlnjax.losses.MatrixCompletion(r.ravel(), c.ravel(), M.ravel(), M.shape)
    np.testing.assert_allclose(
        np.asarray(cmv.nuclear_norm_completion(full, None, 2000, 1e-12)["X"]), M, atol=1e-8
    )


def test_nuclear_norm_exact_recovery_and_certificate():
    # A rank-one 12 x 12 matrix with 70% of its entries observed: nuclear-norm minimization recovers it exactly
    # (far above the sample complexity), so the answer is known; the duality bound certifies optimality.
    rng = np.random.default_rng(3)
    u, v = rng.standard_normal(12), rng.standard_normal(12)
    M = np.outer(u, v)
    obs = rng.random(M.shape) < 0.7
    rows, cols = np.nonzero(obs)
    loss = dlnjax.losses.MatrixCompletion(rows, cols, M[rows, cols], M.shape, truth=M)
    res = cmv.nuclear_norm_completion(loss, None, 20000, 1e-11)
    X = np.asarray(res["X"])
    assert bool(res["converged"]) and int(res["rank"]) == 1
    np.testing.assert_allclose(X, M, atol=1e-7 * np.abs(M).max())
    cert = cmv.nuclear_norm_certificate(X, res["Y"], rows, cols, M[rows, cols])
    assert abs(cert["relative_gap"]) < 1e-8
    assert math.isclose(cert["nuclear_norm"], np.linalg.norm(u) * np.linalg.norm(v), rel_tol=1e-7)
    # a certificate is a lower bound whatever Y: a random Y on Omega gives a bound below ||M||_*
    Y = np.where(obs, rng.standard_normal(M.shape), 0.0)
    assert (
        cmv.nuclear_norm_certificate(X, Y, rows, cols, M[rows, cols])["dual_bound"]
        <= cert["nuclear_norm"] + 1e-12
    )


def test_inf_scales_runs_only_the_chosen_scales_at_infinite_depth():
    # Config.inf_scales: at N = inf only those scales are integrated; the other cells are "not run" (NaN, no problem
    # reported), while every finite depth runs every scale. The run cells equal a direct solve of the same start.
    cfg = cmv.Config(
        n=8,
        rank=1,
        observed=(40,),
        depths=(2, cmv.INF),
        scales=(1e-1, 1e-2),
        inf_scales=(1e-1,),
        n_saves=31,
    )
    c = cmv.completion(jr.PRNGKey(0), cfg, say=lambda msg: None)
    assert c["run"].tolist() == [[[True, True], [True, False]]]
    assert c["success"][0, 0].all() and c["success"][0, 1, 0] and not c["success"][0, 1, 1]
    assert np.isnan(c["test_error"][0, 1, 1]) and np.all(np.isfinite(c["test_error"][0, :, 0]))
    assert np.isfinite(c["test_error"][0, 0, 1])
    assert cmv._selected_scales(cfg, 3).all() and cmv._selected_scales(cfg, cmv.INF).tolist() == [
        True,
        False,
    ]
    assert cmv._selected_scales(dataclasses.replace(cfg, inf_scales=None), cmv.INF).all()
    # the N = inf cell against an independent solve from the same X0
    kq, kp = jr.split(jr.PRNGKey(0))
    Q = cmv.random_directions(kq, 1, (cfg.n, cfg.n))[0]
    loss = dlnjax.losses.MatrixCompletion.random(jr.split(kp, 1)[0], (cfg.n, cfg.n), cfg.rank, 40)
    target = cfg.loss_target * float(loss(jnp.zeros(loss.shape)))
    traj = cmv.solve(
        loss,
        cmv.INF,
        (1e-1 * Q)[None],
        cmv.save_times(cfg, cmv.time_unit(loss)),
        target,
        cfg.rtol,
        cfg.atol,
        cfg.inf_max_steps,
    )
    L = np.asarray(jax.vmap(loss)(traj.ys[0]))
    X = np.asarray(traj.ys[0, cmv._converged_index(L, target)])
    assert math.isclose(
        c["test_error"][0, 1, 0], float(np.linalg.norm(X - np.asarray(loss.truth))), rel_tol=1e-12
    )
