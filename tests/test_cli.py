"""The ``dlnjax`` command line and ``dlnjax reproduce lindsey-menon`` (seed 001)."""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import quad

from dlnjax._cli import main
from dlnjax.experiments import EXPERIMENTS, lindsey_menon

FIGURES = (
    "moment_decay.png",
    "theorem1_norm.png",
    "figure_1_1.png",
    "figure_1_2.png",
    "posterior.png",
)
DATA = (
    "fiber_l2.npz",
    "kirwan_ness.npz",
    "figure_1_1.npz",
    "fiber_l2_curves.csv",
    "kirwan_ness_curves.csv",
    "figure_1_1_curves.csv",
    "figure_1_2.npz",
    "posterior.csv",
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_unknown_experiment_exits_2_and_lists_the_names(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "no-such-paper"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "no-such-paper" in err
    for name in EXPERIMENTS:
        assert name in err


def test_missing_command_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "usage" in capsys.readouterr().err


def test_registry_drives_the_cli(monkeypatch):
    """Registering a run function is all an experiment needs; the CLI passes out/quick/seed and returns its code."""
    calls = []

    def fake(out, *, quick, seed):
        calls.append((out, quick, seed))
        return 7

    monkeypatch.setitem(EXPERIMENTS, "fake-paper", fake)
    assert (
        main(["reproduce", "fake-paper", "--out", "somewhere/else", "--quick", "--seed", "3"]) == 7
    )
    assert main(["reproduce", "fake-paper"]) == 7
    assert calls == [(Path("somewhere/else"), True, 3), (Path("results/fake-paper"), False, 0)]
    assert EXPERIMENTS["lindsey-menon"] is lindsey_menon.run
    assert "du-hu-lee" in EXPERIMENTS


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """``dlnjax reproduce lindsey-menon --quick > log 2>&1`` into the default directory, from a fresh cwd: a
    process of its own whose stdout and stderr are one file, as in CI or ``make run > log``. Returns the
    exit code, the output directory and the log."""
    cwd = tmp_path_factory.mktemp("cwd")
    log = cwd / "log"
    with open(log, "wb") as f:
        proc = subprocess.run(
            [sys.executable, "-m", "dlnjax._cli", "reproduce", "lindsey-menon", "--quick"],
            cwd=cwd,
            stdout=f,
            stderr=subprocess.STDOUT,
            timeout=900,
        )
    return proc.returncode, cwd / "results" / "lindsey-menon", log


def test_quick_run_log_is_short_plain_lines(quick_run):
    """Redirected output is a log, not a terminal: no carriage-return redraws of progress bars, a few kilobytes
    of whole lines (the stages with their elapsed time, then the summary)."""
    code, out, log = quick_run
    data = log.read_bytes()
    assert code == 0, data.decode(errors="replace")[-3000:]
    assert b"\r" not in data and b"\x1b" not in data  # no bar redraws, no terminal escapes
    assert 1_000 < len(data) < 8_000
    text = data.decode()
    assert text.endswith("\n")
    lines = text.splitlines()
    assert max(len(line) for line in lines) < 250
    assert (
        "%|" not in text and "%/s" not in text
    )  # no tqdm fragments (Diffrax's meter draws "12.00%|...")
    stages = [line for line in lines if line.startswith("[lindsey-menon ")]
    assert len(stages) >= 10 and "finished in" in stages[-1] and ": OK;" in stages[-1]
    assert (out / "summary.txt").read_text() in text  # the summary, echoed whole


def test_quick_run_writes_figures_data_and_summary(quick_run):
    code, out, _ = quick_run
    assert code == 0
    for name in FIGURES:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000, name
    for name in DATA + ("summary.txt", "summary.json"):
        assert (out / name).stat().st_size > 0, name
    cfg = lindsey_menon.QUICK
    with np.load(out / "fiber_l2.npz") as f:
        assert f["g_norm"].shape == (cfg.n_starts, cfg.n_saves)
        assert f["final_layers"].shape == (cfg.n_starts, cfg.depth, cfg.d, cfg.d)
        # the saved end state is still on the fiber and balanced to e^{-2T}
        final = f["final_layers"]
        X = f["X"]
        for W in final:
            prod = W[0]
            for k in range(1, cfg.depth):
                prod = W[k] @ prod
            assert np.linalg.norm(prod - X) / np.linalg.norm(X) < 1e-7
        assert np.allclose(
            f["g_norm"][:, -1] / f["g_norm"][:, 0], math.exp(-2 * cfg.t_final), rtol=1e-5
        )
    with open(out / "kirwan_ness_curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == cfg.n_starts * cfg.n_saves
    with np.load(out / "figure_1_1.npz") as f:
        ts, x = f["ts"], float(f["x"])
        c = 2 * abs(x)
        for name in ("fiber_l2", "kirwan_ness"):
            w1, w2 = f[f"{name}_w1"], f[f"{name}_w2"]
            assert np.max(np.abs(w1 * w2 - x)) < 1e-7  # on the hyperbola w2 w1 = x
            G, G0 = w1**2 - w2**2, (w1**2 - w2**2)[:, :1]
            if name == "fiber_l2":  # Theorem 2: G = e^{-2t} G0
                exact = G0 * np.exp(-2 * ts)
            else:  # d = 1, N = 2: dG/dt = -4 |w|^2 G = -4 G sqrt(G^2 + 4x^2), solved in closed form
                exact = np.sign(G0) * c / np.sinh(np.arcsinh(c / np.abs(G0)) + 4 * c * ts)
            assert np.max(np.abs(G - exact) / np.abs(G0)) < 1e-7, name
            # the point of the hyperbola with that G: w1^2 = (G + sqrt(G^2 + 4x^2)) / 2, on the start's branch
            w1_exact = np.sign(w1[:, :1]) * np.sqrt((exact + np.sqrt(exact**2 + c**2)) / 2)
            assert np.max(np.abs(w1 - w1_exact)) < 1e-7, name


def test_quick_run_measures_the_theorems(quick_run):
    code, out, _ = quick_run
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "OK" and s["problems"] == []
    assert all(s["success"].values()) and len(s["success"]) == 5
    m = s["measured"]
    # X is constant under both flows (docs/theory.md §4)
    assert m["x_drift_max"]["fiber_l2"] < 1e-7 and m["x_drift_max"]["kirwan_ness"] < 1e-7
    # Theorem 2: G(t) = e^{-2t} G(0) under FiberL2
    assert m["g_law_max"] < 1e-6
    assert m["g_rel_final_max"]["fiber_l2"] == pytest.approx(
        math.exp(-2 * s["config"]["t_final"]), rel=1e-5
    )
    # Theorem 1: ||W||^2 tends to N sum sigma_i^(2/N)
    sigma = np.array(s["singular_values"])
    N = s["config"]["depth"]
    assert s["theorem1_minimum"] == pytest.approx(N * np.sum(sigma ** (2 / N)), rel=1e-12)
    assert (
        m["theorem1_gap_final"]["fiber_l2"] < 1e-4 and m["theorem1_gap_final"]["kirwan_ness"] < 1e-4
    )
    assert (
        m["theorem1_gap_final_own"]["fiber_l2"] < 1e-4
        and m["theorem1_gap_final_own"]["kirwan_ness"] < 1e-4
    )
    assert (
        m["balancedness_final"]["fiber_l2"] < 1e-2 and m["balancedness_final"]["kirwan_ness"] < 1e-2
    )
    # Kirwan-Ness decreases 1/2 ||G||^2
    assert m["kirwan_ness_half_g_sq_monotone"] is True
    h = s["figure_1_1"]["measured"]
    assert max(h["x_drift_max"].values()) < 1e-7 and h["g_law_max"] < 1e-6
    text = (out / "summary.txt").read_text()
    assert "status: OK" in text and "FAILED" not in text


def test_quick_run_slices_and_posterior(quick_run):
    """Figure 1.2: the slices F_X ∩ M_G of w3 w2 w1 = x against the closed form (|w_k|^2 from the cubic
    u (u + G_2)(u + G_1 + G_2) = x^2, solved here with numpy's roots); the posterior: E||W||^2 of the FiberLangevin
    chains against quadrature of the hyperbola's closed-form density, and the rescaled excess near m = 1."""
    code, out, _ = quick_run
    assert code == 0
    with np.load(out / "figure_1_2.npz") as f:
        G, w, x = f["G"], f["w"], float(f["x"])
    for g, wk in zip(G[::7], w[::7]):
        roots = np.roots(np.poly([0.0, -g[1], -g[0] - g[1]]) - np.array([0, 0, 0, x**2]))
        u = max(r.real for r in roots if abs(r.imag) < 1e-9)
        exact = np.sqrt([u + g[0] + g[1], u + g[1], u])
        assert np.max(np.abs(wk - exact)) < 1e-9, (g, wk, exact)
    s = json.loads((out / "summary.json").read_text())
    p = s["posterior"]
    assert p["m"] == 1 and len(p["stats"]) == len(lindsey_menon.QUICK.posterior_beta_kappa)
    for bk, st in zip(lindsey_menon.QUICK.posterior_beta_kappa, p["stats"]):
        rho = lambda t: np.exp(-bk * (t * t + x * x / (t * t)) / 2) * np.sqrt(1 + x * x / t**4)
        Z = quad(rho, 0, np.inf)[0]
        exact = quad(lambda t: (t * t + x * x / (t * t)) * rho(t), 0, np.inf)[0] / Z
        assert abs(st["sq_norm"] - exact) <= 5 * st["sq_norm_err"], (bk, st, exact)
        assert st["x_drift_max"] < 1e-10
    assert (
        abs(p["stats"][-1]["scaled_excess"] - 1.0) <= 5 * p["stats"][-1]["scaled_excess_err"] + 0.2
    )
    assert -1.25 <= p["excess_power"] <= -0.75


def test_a_failed_solve_is_a_problem(quick_run):
    """The run's own checks on its saved measurements: none fails, and a Figure 1.1 solve marked failed is named
    (the end-to-end failure, exit 1 and every file still written, is the slow test below)."""
    _, out, _ = quick_run
    s = json.loads((out / "summary.json").read_text())
    measured, hmeasured = s["measured"], s["figure_1_1"]["measured"]
    assert lindsey_menon._problems(s["success"], measured, hmeasured) == []
    failed = {**s["success"], "figure_1_1_fiber_l2": False}
    problems = lindsey_menon._problems(failed, measured, hmeasured)
    assert problems == ["solve figure_1_1_fiber_l2 did not succeed"]


# A second whole --quick run in this process (~90 s of tracing on the 2-core CPU): slow
@pytest.mark.slow
def test_failed_solve_is_reported_and_exits_1(quick_run, tmp_path, monkeypatch):
    real = lindsey_menon.solve_hyperbola

    def failing(*args, **kwargs):
        traj = real(*args, **kwargs)
        return eqx.tree_at(lambda t: t.success, traj, jnp.zeros_like(traj.success))

    monkeypatch.setattr(lindsey_menon, "solve_hyperbola", failing)
    assert main(["reproduce", "lindsey-menon", "--quick", "--out", str(tmp_path)]) == 1
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["status"] == "FAILED"
    assert any("figure_1_1" in p for p in s["problems"])
    assert "FAILED" in (tmp_path / "summary.txt").read_text()
    for name in FIGURES:  # everything computed is still written
        assert (tmp_path / name).exists()
