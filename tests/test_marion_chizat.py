"""``dlnjax reproduce marion-chizat --quick`` (seed 004): the outputs agree with each other and with the data."""

import csv
import json

import numpy as np
import pytest

from dlnjax._cli import main
from dlnjax.experiments import marion_chizat as mc

FIGURES = (
    "sharpness_gaussian.png",
    "sharpness_residual.png",
    "sharpness_depth.png",
    "structure.png",
    "gd_vs_gf.png",
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("marion-chizat")
    code = main(["reproduce", "marion-chizat", "--quick", "--out", str(out)])
    with np.load(out / "marion_chizat.npz") as f:
        data = dict(f)
    with open(out / "runs.csv", newline="") as f:
        runs = list(csv.DictReader(f))
    with open(out / "gradient_flow.csv", newline="") as f:
        gf = list(csv.DictReader(f))
    summary = json.loads((out / "summary.json").read_text())
    return code, out, data, runs, gf, summary


def test_exit_code_status_and_files(quick):
    code, out, _, _, _, summary = quick
    assert code == 0, summary["problems"]
    assert summary["status"] == "OK" and summary["problems"] == []
    for name in FIGURES:
        blob = (out / name).read_bytes()
        assert blob.startswith(PNG_SIGNATURE) and len(blob) > 10_000, name
    assert "status: OK" in (out / "summary.txt").read_text()


def test_bounds_equal_2Na_and_8NLambda_from_the_saved_data(quick):
    _, _, data, _, _, summary = quick
    X, y = data["inputs"], data["targets"]
    n = X.shape[0]
    sigma = X.T @ X / n
    w = np.linalg.lstsq(X, y, rcond=None)[0]
    assert np.linalg.norm(w) == pytest.approx(1.0, rel=1e-10)  # targets rescaled: ||w*|| = 1
    a = w @ sigma @ w
    lam = np.linalg.eigvalsh(sigma)[-1]
    N = mc.QUICK.depth
    b = summary["bounds"]
    assert b["lower"] == pytest.approx(2 * N * a, rel=1e-10)
    assert b["upper"] == pytest.approx(8 * N * lam, rel=1e-10)
    np.testing.assert_allclose(data["bounds"], [2 * N * a, 8 * N * lam], rtol=1e-10)
    assert b["r_min"] == pytest.approx(np.mean((X @ w - y) ** 2), rel=1e-10)
    for depth, (lo, hi) in zip(data["depths"], data["depth_bounds"]):
        assert lo == pytest.approx(2 * depth * a, rel=1e-10) and hi == pytest.approx(
            8 * depth * lam, rel=1e-10
        )


def test_csv_matches_npz(quick):
    _, _, data, runs, gf, _ = quick
    cfg = mc.QUICK
    for fam, scales in (("gaussian", cfg.scales), ("residual", cfg.residual_scales)):
        rows = [r for r in runs if r["init"] == fam]
        assert len(rows) == len(cfg.step_sizes) * len(scales) * cfg.seeds
        for r in rows:
            i, j, k = (
                cfg.step_sizes.index(float(r["eta"])),
                scales.index(float(r["scale"])),
                int(r["seed"]),
            )
            s = data[f"{fam}_gd_sharpness"][i, j, k]
            assert (np.isnan(s) and r["sharpness"] == "nan") or float(r["sharpness"]) == s
            assert int(r["diverged"]) == data[f"{fam}_gd_diverged"][i, j, k]
            assert int(r["converged"]) == data[f"{fam}_gd_converged"][i, j, k]
            assert float(r["final_loss"]) == data[f"{fam}_gd_final_loss"][i, j, k]
            assert float(r["gf_sharpness"]) == data[f"{fam}_gf_sharpness"][j, k]
        grows = [r for r in gf if r["init"] == fam]
        assert len(grows) == len(scales) * cfg.seeds
        for r in grows:
            j, k = scales.index(float(r["scale"])), int(r["seed"])
            assert float(r["sharpness"]) == data[f"{fam}_gf_sharpness"][j, k]
            assert int(r["converged"]) == data[f"{fam}_gf_converged"][j, k]


def test_divergence_fractions_and_flags_are_consistent(quick):
    _, _, data, _, _, summary = quick
    for fam in ("gaussian", "residual"):
        div = data[f"{fam}_gd_diverged"].astype(bool)
        conv = data[f"{fam}_gd_converged"].astype(bool)
        frac = np.asarray(summary["tables"][fam]["diverged_fraction"])
        assert np.all((frac >= 0) & (frac <= 1))
        np.testing.assert_allclose(frac, div.mean(axis=2))
        assert not np.any(div & conv)
        # a diverged run has no sharpness and a step of divergence; the others have both finite / -1
        assert np.all(np.isnan(data[f"{fam}_gd_sharpness"][div])) and np.all(
            data[f"{fam}_gd_diverged_at"][div] >= 0
        )
        assert np.all(np.isfinite(data[f"{fam}_gd_sharpness"][~div])) and np.all(
            data[f"{fam}_gd_diverged_at"][~div] == -1
        )


def test_measured_facts_hold_in_the_saved_data(quick):
    _, _, data, _, _, summary = quick
    lo, hi = data["bounds"]
    etas = data["step_sizes"]
    for fam in ("gaussian", "residual"):
        s, conv = data[f"{fam}_gd_sharpness"], data[f"{fam}_gd_converged"].astype(bool)
        for i, eta in enumerate(etas):
            assert np.all(s[i][conv[i]] <= 2 / eta * (1 + 1e-2))  # GD settles only where S <= 2/eta
            assert np.all(s[i][conv[i]] >= lo * (1 - 1e-2))  # every minimizer: S >= 2Na
            if 2 / eta < lo:
                assert not conv[i].any()
        assert data[f"{fam}_gf_converged"].all()
        assert np.all(data[f"{fam}_gf_sharpness"] >= lo * (1 - 1e-2))
    small = data["gaussian_gf_sharpness"][0]
    assert np.all((small >= lo) & (small <= hi))
    # the loss curves start at the initial loss and end at the final loss of non-diverged runs
    hist = data["gaussian_gd_loss_history"]
    ok = ~data["gaussian_gd_diverged"].astype(bool)
    np.testing.assert_allclose(hist[..., -1][ok], data["gaussian_gd_final_loss"][ok], rtol=1e-12)
    assert summary["run_counts"]["gd_gaussian"] == data["gaussian_gd_sharpness"].size
