"""`ensemble bench`'s parser and entry. Light on purpose: the CLI loads this module to build its
parser for every command; the benchmark itself (bench.py, PyTorch, Ray) loads only when run."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from workers.errors import InputError


def add_parser(commands) -> None:
    bench = commands.add_parser(
        "bench", help="measure our stack against plain PyTorch loops and the baseline, side by side",
        description="Repeats each comparison, prints medians and ratios with the machine in the header, "
                    "and writes bench.json. Takes about 4-6 minutes on 2 cores with the defaults.")
    bench.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                       help="config overrides for the measured runs, e.g. --set data.train_size=1000")
    bench.add_argument("--repeats", type=int, default=3, help="repeats of each comparison (default 3)")
    bench.add_argument("--epochs", type=int, default=3, help="epochs per member in the comparisons (default 3)")
    bench.add_argument("--output", metavar="DIR", default="runs/bench", help="where bench.json goes")
    bench.add_argument("--no-default-run", action="store_true",
                       help="skip the default run (start-up share, time to accuracy, combiner cost)")
    bench.add_argument("--tail-members", metavar="N", type=int, nargs="*", default=[5, 20, 40],
                       help="widths whose tail (last member's end -> report written) and driver memory are "
                            "measured, one run each (default 5 20 40; none: skip)")
    bench.add_argument("--tail-only", action="store_true", help="measure only the tail (about 3 minutes on 2 cores)")


def main(args: argparse.Namespace) -> int:
    if args.repeats < 1 or args.epochs < 1:
        raise InputError("--repeats and --epochs must be at least 1.")
    if importlib.util.find_spec("psutil") is None:
        raise InputError("ensemble bench measures per-process memory with psutil, which is not installed; install "
                         "the bench extra: pip install 'eager-ensembles[bench]'.")
    if any(n < 1 for n in args.tail_members):
        raise InputError(f"--tail-members must be at least 1; got {args.tail_members}.")
    from ensemble.bench.bench import main as bench
    bench(args.overrides, args.repeats, args.epochs, Path(args.output), with_default_run=not args.no_default_run,
          tail_members=tuple(args.tail_members), tail_only=args.tail_only)
    return 0
