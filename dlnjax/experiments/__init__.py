"""Reproductions of the seed papers, one module per paper, run by ``dlnjax reproduce NAME``.

`EXPERIMENTS` maps each name to its ``run(out, *, quick=False, seed=0) -> int`` (the exit code:
0 on success). Adding an experiment is one line here.
"""

from __future__ import annotations

from collections.abc import Callable

from . import cohen_menon_veraszto as cohen_menon_veraszto
from . import du_hu_lee as du_hu_lee
from . import fast_slow as fast_slow
from . import init_scale_tuning as init_scale_tuning
from . import lindsey_menon as lindsey_menon
from . import linear_systems as linear_systems
from . import marion_chizat as marion_chizat

__all__ = ["EXPERIMENTS"]

EXPERIMENTS: dict[str, Callable[..., int]] = {
    "cohen-menon-veraszto": cohen_menon_veraszto.run,
    "du-hu-lee": du_hu_lee.run,
    "fast-slow": fast_slow.run,
    "init-scale-tuning": init_scale_tuning.run,
    "lindsey-menon": lindsey_menon.run,
    "linear-systems": linear_systems.run,
    "marion-chizat": marion_chizat.run,
}
