"""The ``dlnjax`` command line.

- ``dlnjax reproduce NAME [--out DIR] [--quick] [--seed N]``: one experiment of the seed papers
  (``NAME`` a key of `dlnjax.experiments.EXPERIMENTS`);
- ``dlnjax sweep CONFIG --out DIR``: a sweep from a TOML config (`dlnjax.sweep`), resumable;
- ``dlnjax plot DIR``: the standard figures of a finished sweep, in ``DIR/figures``.

Progress goes to stderr: a bar on a terminal, elsewhere (a log file, CI, Jupyter) a timestamped line every
few seconds (`dlnjax._progress`), so ``dlnjax reproduce NAME > log 2>&1`` stays a readable log.

Exit codes: 0 success; 2 bad usage, a malformed config or a directory holding another sweep (the
message names the field). The CLI is an application, so it (and not the library) switches JAX to
float64 before anything runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _parser(names: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dlnjax",
        description="Simulate deep linear networks; reproduce the experiments of the seed papers; run sweeps.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    rep = sub.add_parser(
        "reproduce",
        help="run one experiment and write its figures, data and summary",
        description="Run one experiment and write its figures (PNG), data (npz, csv) and summary (txt, json).",
    )
    rep.add_argument(
        "name", choices=list(names), metavar="NAME", help="experiment: " + ", ".join(names)
    )
    rep.add_argument(
        "--out", type=Path, default=None, help="output directory (default: results/NAME)"
    )
    rep.add_argument(
        "--quick", action="store_true", help="small sizes and a short horizon (a smoke run)"
    )
    rep.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")

    sw = sub.add_parser(
        "sweep",
        help="run a sweep from a TOML config into a resumable results store",
        description=(
            "Run the grid of a TOML sweep config (see examples/), batched with vmap and sharded over all devices; "
            "results go to DIR/results.zarr batch by batch. Rerunning on the same DIR resumes."
        ),
    )
    sw.add_argument("config", type=Path, help="the TOML config")
    sw.add_argument(
        "--out",
        type=Path,
        required=True,
        help="the results directory (created; resumed if it holds this sweep)",
    )
    sw.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress (a bar on a terminal; elsewhere a line every few seconds)",
    )
    sw.add_argument(
        "--plot", action="store_true", help="draw the standard figures when done (as `dlnjax plot`)"
    )
    sw.add_argument(
        "--distributed",
        action="store_true",
        help="multi-host: call jax.distributed.initialize() first (coordinator from the environment); process 0 writes",
    )

    pl = sub.add_parser(
        "plot",
        help="draw the standard figures of a sweep",
        description="Draw the standard figures of a sweep (PNG and PDF).",
    )
    pl.add_argument("dir", type=Path, help="the results directory of `dlnjax sweep`")
    pl.add_argument(
        "--out", type=Path, default=None, help="where the figures go (default: DIR/figures)"
    )
    return parser


def _error(command: str, message: str) -> int:
    print(f"dlnjax {command}: error: {message}", file=sys.stderr)
    return 2


def _sweep(args) -> int:
    import jax

    from .sweep import ConfigError, load_config, run

    if args.distributed:
        jax.distributed.initialize()
    try:
        cfg = load_config(args.config)
        ds = run(cfg, args.out, progress=not args.no_progress, log=lambda m: print(m, flush=True))
    except ConfigError as e:
        return _error("sweep", str(e))
    if args.plot and jax.process_index() == 0:
        from .sweep import plot

        plot(ds, args.out / "figures")
    return 0


def _plot(args) -> int:
    from .sweep import load, plot

    try:
        ds = load(args.dir)
    except FileNotFoundError as e:
        return _error("plot", str(e))
    out = args.out if args.out is not None else args.dir / "figures"
    paths = plot(ds, out)
    print(f"{len(paths)} files in {out}")
    return 0


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
    if args.command == "sweep":
        return _sweep(args)
    if args.command == "plot":
        return _plot(args)
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse rejects unknown commands


if __name__ == "__main__":
    raise SystemExit(main())
