"""The harness shared by the experiments' ``run`` functions (dlnjax/experiments/_common.py)."""

import json

import pytest

from dlnjax.experiments._common import Session, pick_config, start


def test_start_creates_out_and_says_where(tmp_path):
    said = []
    out = tmp_path / "a" / "b"
    session = start("demo", out, 3, said.append)
    assert out.is_dir() and session.out == out and session.seed == 3 and session.name == "demo"
    assert said == [f"writing to {out.resolve()}"]


def test_timed_logs_and_records_the_stage(tmp_path):
    said = []
    session = Session("demo", tmp_path, 0, said.append)
    with session.timed("stage one", "doing one"):
        said.append("inside")
    with session.timed(None):  # timed, not recorded
        pass
    assert said == ["doing one", "inside"]
    assert list(session.timings) == ["stage one"] and session.timings["stage one"] >= 0


def test_timed_records_nothing_when_the_stage_raises(tmp_path):
    session = Session("demo", tmp_path, 0, lambda m: None)
    with pytest.raises(RuntimeError, match="solver"):
        with session.timed("broken"):
            raise RuntimeError("solver blew up")
    assert session.timings == {}


def test_finish_ok_writes_the_summary_in_order(tmp_path, capsys):
    said = []
    session = Session("demo", tmp_path, 5, said.append)
    session.timings["solve"] = 1.5
    text = lambda s: f"status: {s['status']}, {len(s['timings_s'])} timings\n"
    code = session.finish([], {"n": 2}, {"measured": {"x": 1.0}}, text)
    assert code == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert list(s) == [
        "experiment",
        "status",
        "problems",
        "seed",
        "config",
        "measured",
        "timings_s",
        "device",
        "jax_version",
    ]
    assert s["experiment"] == "demo" and s["status"] == "OK" and s["problems"] == []
    assert s["seed"] == 5 and s["config"] == {"n": 2} and s["measured"] == {"x": 1.0}
    assert list(s["timings_s"]) == ["solve", "total"]  # the run's wall time, last
    assert (tmp_path / "summary.txt").read_text() == "status: OK, 2 timings\n"
    assert capsys.readouterr().out == "status: OK, 2 timings\n"  # echoed
    assert said[-1].startswith("finished in ") and said[-1].endswith(f": OK; results in {tmp_path}")


def test_finish_with_problems_fails_and_exits_1(tmp_path):
    said = []
    session = Session("demo", tmp_path, 0, said.append)
    code = session.finish(["x drifted"], {}, {}, lambda s: "; ".join(s["problems"]), total=False)
    assert code == 1
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["status"] == "FAILED" and s["problems"] == ["x drifted"] and s["timings_s"] == {}
    assert (tmp_path / "summary.txt").read_text() == "x drifted"
    assert ": FAILED; results in" in said[-1]


def test_pick_config():
    default, small, mine = object(), object(), object()
    assert pick_config(None, False, default, small) is default
    assert pick_config(None, True, default, small) is small
    assert pick_config(mine, True, default, small) is mine


def _function_lengths(path):
    """``(name, lines)`` of every function in ``path``, its docstring excluded."""
    import ast

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(
                getattr(first, "value", None), ast.Constant
            ):
                if isinstance(first.value.value, str):
                    n -= first.end_lineno - first.lineno + 1
            yield node.name, n


def test_runs_compose_short_functions():
    """The house rule for the experiments: each ``run`` at most 40 lines, no function over 80 (docstrings
    excluded), so that computing, checking and writing stay separate functions."""
    from pathlib import Path

    import dlnjax.experiments as experiments

    files = sorted(Path(experiments.__file__).parent.glob("*.py"))
    assert len(files) >= 8
    lengths = {(f.stem, name): n for f in files for name, n in _function_lengths(f)}
    runs = {k: n for k, n in lengths.items() if k[1] == "run"}
    assert len(runs) == len(experiments.EXPERIMENTS)
    assert max(runs.values()) <= 40, runs
    assert max(lengths.values()) <= 80, max(lengths.items(), key=lambda kv: kv[1])
