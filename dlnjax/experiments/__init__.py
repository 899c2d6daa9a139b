"""Reproductions of the seed papers, one module per paper, run by ``dlnjax reproduce NAME``.

`EXPERIMENTS` maps each name to its ``run(out, *, quick=False, seed=0) -> int`` (the exit code:
0 on success). Adding an experiment is one line here.
"""

from __future__ import annotations

from collections.abc import Callable

from . import lindsey_menon as lindsey_menon

__all__ = ["EXPERIMENTS"]

EXPERIMENTS: dict[str, Callable[..., int]] = {
    "lindsey-menon": lindsey_menon.run,
}
