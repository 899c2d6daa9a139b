"""The lines every experiment's ``summary.txt`` shares: the head (a banner if the run failed, the title,
the status), the banner alone (some summaries repeat it at the end) and the stage timings."""

from __future__ import annotations

__all__ = ["failed_banner", "summary_head", "wall_times"]


def failed_banner(summary: dict) -> list[str]:
    """``!!! FAILED: <the problems>`` between two rules of ``!`` (three lines); none when the run passed."""
    if not summary["problems"]:
        return []
    return ["!" * 78, "!!! FAILED: " + "; ".join(summary["problems"]), "!" * 78]


def summary_head(summary: dict, title: str) -> list[str]:
    """The first lines of ``summary.txt``: `failed_banner` and a blank line (if it failed), then
    ``dlnjax reproduce <experiment>: <title>`` and ``status: <status>``."""
    banner = failed_banner(summary)
    return [
        *banner,
        *([""] if banner else []),
        f"dlnjax reproduce {summary['experiment']}: {title}",
        f"status: {summary['status']}",
    ]


def wall_times(summary: dict) -> str:
    """``wall time: <stage> <seconds> s, ...``: the summary's ``timings_s`` in one line."""
    return "wall time: " + ", ".join(f"{k} {v:.1f} s" for k, v in summary["timings_s"].items())
