"""``dlnjax reproduce du-hu-lee`` (seed 002): the quick run, its files checked against each other and
against direct recomputation."""

import json

import numpy as np
from conftest import csv_rows

from dlnjax._cli import main
from dlnjax.experiments import EXPERIMENTS, du_hu_lee


def test_quick_run_is_consistent(tmp_path):
    out = tmp_path / "dhl"
    assert main(["reproduce", "du-hu-lee", "--quick", "--out", str(out)]) == 0
    assert EXPERIMENTS["du-hu-lee"] is du_hu_lee.run
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "OK" and s["problems"] == []
    assert "status: OK" in (out / "summary.txt").read_text()
    for name in ("conservation.png", "drift.png", "factorization.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = np.load(out / "du_hu_lee.npz")

    # (a) the conserved quantities, recomputed from the saved trajectories' differences
    cons = csv_rows(out / "conservation.csv")
    for act in du_hu_lee.ACTIVATIONS:
        d, nb = data[f"differences_{act}"], data[f"neurons_{act}"]
        rows = [r for r in cons if r["activation"] == act]
        np.testing.assert_allclose(
            [float(r["max_abs_change_layers"]) for r in rows],
            np.abs(d - d[0]).max(axis=1),
            rtol=1e-12,
        )
        np.testing.assert_allclose(
            [float(r["loss"]) for r in rows], data[f"loss_{act}"], rtol=1e-12
        )
        assert np.abs(d - d[0]).max() < 1e-5 and np.abs(nb - nb[0]).max() < 1e-5
        # the flow really moves: the loss falls by a sizeable fraction
        assert data[f"loss_{act}"][-1] < 0.8 * data[f"loss_{act}"][0]
        # the neuron balances sum to minus the layer differences (Tr G_k = -(||W_k+1||^2 - ||W_k||^2))
        np.testing.assert_allclose(nb.sum(axis=-1), -d, atol=1e-10)

    # (b) the log-log slope of the drift, refitted from the CSV, is the summary's and is about 2
    drift = csv_rows(out / "drift.csv")
    for act in du_hu_lee.ACTIVATIONS:
        rows = [r for r in drift if r["activation"] == act]
        eta = np.array([float(r["eta"]) for r in rows])
        per = np.array([float(r["mean_drift_per_step"]) for r in rows])
        slope = np.polyfit(np.log(eta), np.log(per), 1)[0]
        assert abs(slope - s["drift"][act]["slope"]) < 1e-9
        assert 1.8 < slope < 2.2  # quick: step sizes 0.005-0.02, still in the asymptotic range

    # (c) the error curve: converged, and the tail is geometric with the reported rate
    err = np.array([float(r["relative_error"]) for r in csv_rows(out / "factorization.csv")])
    np.testing.assert_allclose(err, data["factorization_error"], rtol=1e-12)
    assert err[-1] < 1e-8 and err[0] > 0.5
    tail = (err < 1e-3) & (err > 1e-11)
    steps = np.arange(err.size)[tail]
    rate = np.exp(np.polyfit(steps, np.log(err[tail]), 1)[0])
    assert abs(rate - s["factorization"]["rate"]) < 1e-9 and rate < 0.99
