"""The ``dlnjax`` command line: ``dlnjax reproduce NAME [--out DIR] [--quick] [--seed N]``.

``NAME`` is a key of `dlnjax.experiments.EXPERIMENTS`. The CLI is an application, so it (and
not the library) switches JAX to float64 before anything runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _parser(names: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dlnjax",
        description="Simulate deep linear networks; reproduce the experiments of the seed papers.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    rep = sub.add_parser(
        "reproduce",
        help="run one experiment and write its figures, data and summary",
        description="Run one experiment and write its figures (PNG), data (npz, csv) and summary (txt, json).",
    )
    rep.add_argument("name", choices=list(names), metavar="NAME", help="experiment: " + ", ".join(names))
    rep.add_argument("--out", type=Path, default=None, help="output directory (default: results/NAME)")
    rep.add_argument("--quick", action="store_true", help="small sizes and a short horizon (a smoke run)")
    rep.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dlnjax`` console script; returns the exit code (argparse errors exit with 2)."""
    from ._cpu import configure_cpu

    configure_cpu()  # one OpenBLAS thread, fast tiny fusions: before JAX's backend starts
    import jax

    jax.config.update("jax_enable_x64", True)

    from .experiments import EXPERIMENTS

    args = _parser(sorted(EXPERIMENTS)).parse_args(argv)
    if args.command == "reproduce":
        out = args.out if args.out is not None else Path("results") / args.name
        return int(EXPERIMENTS[args.name](out, quick=args.quick, seed=args.seed))
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse rejects unknown commands


if __name__ == "__main__":
    raise SystemExit(main())
