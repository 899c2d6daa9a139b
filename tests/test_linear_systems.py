"""``dlnjax reproduce linear-systems``: the quick run, its files checked against each other and against direct
recomputation."""

import json

import numpy as np
from conftest import csv_rows

from dlnjax._cli import main
from dlnjax.experiments import EXPERIMENTS, linear_systems


def test_quick_run_is_consistent(tmp_path):
    out = tmp_path / "ls"
    assert main(["reproduce", "linear-systems", "--quick", "--out", str(out)]) == 0
    assert EXPERIMENTS["linear-systems"] is linear_systems.run
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "OK" and s["problems"] == []
    assert "status: OK" in (out / "summary.txt").read_text()
    for name in ("mu_decay.png", "hsv.png", "truncation.png", "training.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = np.load(out / "linear_systems.npz")

    # (a) the induced-metric flow follows exp(-2t) exactly; the CSV is the npz
    rows = csv_rows(out / "mu_decay.csv")
    ts = np.array([float(r["t"]) for r in rows])
    mu = np.array([float(r["OrbitL2"]) for r in rows])
    np.testing.assert_allclose(mu, data["mu_OrbitL2"], rtol=1e-12)
    np.testing.assert_allclose(mu / mu[0], np.exp(-2 * ts), rtol=1e-7)
    # Helmke-Moore is half the Kirwan-Ness field: same path at twice the time
    kn, hm = data["mu_OrbitKirwanNess"], data["mu_HelmkeMoore"]
    np.testing.assert_allclose(hm[::2], kn[: len(hm[::2])], rtol=1e-5)

    # (c) the summary's medians are the npz's, and the Glover bound holds for every system and order
    e = data["truncation_errors"]
    assert np.all(e[..., 1] <= e[..., 2] * (1 + 1e-8))
    med = np.median(e, axis=1)
    for r, row in zip(data["orders"], med):
        assert abs(s["truncation_median"][str(int(r))]["gramian_hinf"] - row[1]) < 1e-12

    # (d) the gradient flow conserves mu, the regularized flow scales it by exp(-2 kappa t)
    g = data["train_mu_gradient_flow"]
    assert np.abs(g - g[0]).max() < 1e-7 * np.abs(g[0]).max()
    reg = data["train_mu_regularized_flow"]
    t = np.array([float(r["t"]) for r in csv_rows(out / "training.csv")])
    kappa = s["config"]["kappa"]
    np.testing.assert_allclose(
        reg, np.exp(-2 * kappa * t)[:, None, None] * reg[0], atol=1e-7 * np.abs(reg[0]).max()
    )
