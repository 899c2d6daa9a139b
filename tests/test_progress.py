"""dlnjax._progress: a bar on a terminal, plain timestamped lines (at most one every few seconds) elsewhere."""

import io
import re
import sys
import types

import diffrax as dfx
import jax
import jax.numpy as jnp
import pytest
from tqdm import tqdm

import dlnjax
from dlnjax import _progress
from dlnjax._progress import LineProgressMeter, Lines, diffrax_meter, on_terminal, progress_bar

STAMP = re.compile(r"^\d\d:\d\d:\d\d ")


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class TTY(io.StringIO):
    def isatty(self):
        return True


def written(stream) -> list[str]:
    text = stream.getvalue()
    assert "\r" not in text
    assert text == "" or text.endswith("\n")
    return text.splitlines()


def test_lines_rate_is_one_per_interval_plus_the_last():
    clock, out = FakeClock(), io.StringIO()
    bar = Lines(100, desc="grid", unit="batch", interval=5.0, stream=out, clock=clock)
    for _ in range(100):  # one batch a second for 100 s
        clock.t += 1.0
        bar.update()
    bar.close()
    lines = written(out)
    # a line at t = 5, 10, ..., 100: the one at 100 s already shows the final count, so close adds none
    assert len(lines) == 20
    assert all(STAMP.match(line) for line in lines)
    assert [line.split()[3] for line in lines] == [f"{5 * k}/100" for k in range(1, 21)]
    assert lines[0].endswith("[00:05<01:35,  1.00batch/s]")
    assert "grid: 100% 100/100 [01:40<00:00" in lines[-1]


def test_lines_fast_work_writes_only_the_final_line_once():
    clock, out = FakeClock(), io.StringIO()
    with Lines(1000, desc="solve", interval=5.0, stream=out, clock=clock) as bar:
        for _ in range(1000):
            clock.t += 1e-3  # the whole job takes 1 s
            bar.update()
    bar.close()  # closing again writes nothing
    lines = written(out)
    assert len(lines) == 1 and "solve: 100% 1000/1000" in lines[0]


def test_lines_slow_steps_write_each_stage():
    clock, out = FakeClock(), io.StringIO()
    bar = Lines(4, desc="stages", unit="stage", initial=1, interval=5.0, stream=out, clock=clock)
    for _ in range(3):
        clock.t += 30.0
        bar.update()
    bar.close()
    lines = written(out)
    assert [line.split()[3] for line in lines] == ["2/4", "3/4", "4/4"]
    assert "30.00s/stage" in lines[-1]  # the resumed stage (initial=1) is left out of the rate


def test_lines_open_ended_and_zero_interval():
    clock, out = FakeClock(), io.StringIO()
    bar = Lines(None, unit="it", interval=0.0, stream=out, clock=clock)
    for _ in range(3):
        clock.t += 1.0
        bar.update()
    bar.close()
    lines = written(out)
    assert len(lines) == 3 and lines[-1].split()[1] == "3it"


def test_lines_go_to_stderr_as_it_is_when_written(capsys):
    bar = Lines(2, desc="late", interval=0.0)
    bar.update(2)
    bar.close()
    captured = capsys.readouterr()
    assert captured.out == "" and "late: 100% 2/2" in captured.err


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"interval": -1.0}, "interval"),
        ({"interval": float("nan")}, "interval"),
        ({"quiet_below": -1.0}, "quiet_below"),
    ],
)
def test_lines_rejects_a_bad_interval(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Lines(10, **kwargs)


def test_lines_rejects_a_negative_total():
    with pytest.raises(ValueError, match="total"):
        Lines(-1)


def test_on_terminal(monkeypatch):
    assert on_terminal(TTY()) is True
    assert on_terminal(io.StringIO()) is False
    assert on_terminal(object()) is False  # no isatty at all
    closed = io.StringIO()
    closed.close()
    assert on_terminal(closed) is False
    monkeypatch.setattr(sys, "stderr", TTY())
    assert on_terminal() is True
    monkeypatch.setattr(_progress, "in_jupyter", lambda: True)
    assert on_terminal(TTY()) is False  # a Jupyter kernel: lines, even if its stream claims a TTY


def test_in_jupyter(monkeypatch):
    fake = types.ModuleType("IPython")
    monkeypatch.setitem(sys.modules, "IPython", fake)
    fake.get_ipython = lambda: None  # IPython imported, no shell
    assert _progress.in_jupyter() is False
    fake.get_ipython = lambda: types.SimpleNamespace()  # a terminal IPython: no kernel
    assert _progress.in_jupyter() is False
    fake.get_ipython = lambda: types.SimpleNamespace(kernel=object())  # ipykernel
    assert _progress.in_jupyter() is True
    monkeypatch.delitem(sys.modules, "IPython")
    assert _progress.in_jupyter() is False


def test_progress_bar_picks_a_bar_only_on_a_terminal():
    tty, log = TTY(), io.StringIO()
    bar = progress_bar(3, desc="d", unit="batch", stream=tty)
    assert isinstance(bar, tqdm)
    bar.update(3)
    bar.close()
    assert "\r" in tty.getvalue()  # drawn in place
    lines = progress_bar(3, desc="d", unit="batch", stream=log)
    assert isinstance(lines, Lines)
    lines.update(3)
    lines.close()
    assert len(written(log)) == 1
    off = progress_bar(3, disable=True, stream=log)
    off.update(3)
    off.close()
    assert len(written(log)) == 1  # nothing more


def test_diffrax_meter_follows_stderr(monkeypatch):
    monkeypatch.setattr(sys, "stderr", TTY())
    assert isinstance(diffrax_meter(), dfx.TqdmProgressMeter)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert isinstance(diffrax_meter(), LineProgressMeter)


def _decay(t, y, args):
    return -y


def test_simulate_progress_off_a_terminal_writes_lines(capsys, monkeypatch):
    """``simulate(progress=True)`` with stderr captured (not a TTY): no bar fragments; a short solve is
    silent, and with the threshold lowered it writes one line, also under vmap (the slowest element)."""
    ts = jnp.linspace(0.0, 5.0, 6)
    traj = dlnjax.simulate(_decay, jnp.ones(3), ts, progress=True)
    assert bool(traj.success)
    assert capsys.readouterr().err == ""  # far below QUIET_BELOW = 1 s

    monkeypatch.setattr(_progress, "QUIET_BELOW", 0.0)  # read by the host when each solve starts
    dlnjax.simulate(_decay, jnp.ones(3), ts, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err and "%|" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and STAMP.match(lines[0]) and "solve: 100% [" in lines[0]

    many = jax.vmap(lambda y0: dlnjax.simulate(_decay, y0, ts, progress=True))(jnp.ones((4, 3)))
    assert bool(many.success.all())
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "solve: 100% [" in lines[0]


def test_lines_quiet_below():
    clock, out = FakeClock(), io.StringIO()
    short = Lines(10, interval=5.0, quiet_below=1.0, stream=out, clock=clock)
    clock.t += 0.5
    short.update(10)
    short.close()
    assert written(out) == []
    long = Lines(10, interval=5.0, quiet_below=1.0, stream=out, clock=clock)
    clock.t += 2.0
    long.update(10)
    long.close()
    assert len(written(out)) == 1


def test_line_meter_writes_every_interval_during_a_long_solve(monkeypatch):
    """Drive the meter's host side as Diffrax does (init, steps of >= 2%, close) with a fake clock."""
    clock, out = FakeClock(), io.StringIO()
    monkeypatch.setattr(
        LineProgressMeter,
        "_init_bar",
        staticmethod(
            lambda: Lines(
                100,
                desc="solve",
                unit="%",
                bar_format=_progress.PERCENT_FORMAT,
                stream=out,
                clock=clock,
            )
        ),
    )
    bar = LineProgressMeter._init_bar()
    for k in range(1, 51):  # 2% a second: a 50 s solve
        clock.t += 1.0
        LineProgressMeter._step_bar(bar, jnp.asarray(0.02 * k))
    LineProgressMeter._close_bar(bar)
    lines = written(out)
    assert len(lines) == 10  # every 5 s; the last (at 50 s) is the 100% line
    assert "solve:  10% [00:05<00:45]" in lines[0] and "solve: 100% [00:50<00:00]" in lines[-1]
