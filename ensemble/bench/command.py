"""`ensemble bench`'s parser and entry. Light on purpose: the CLI loads this module to build its
parser for every command; the benchmark itself (bench.py, PyTorch, Ray) loads only when run."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from workers.errors import InputError

BENCH_RUN = "(the bench's default run)"


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
    bench.add_argument("--data-sizes", metavar="N,N,...", type=sizes, default=(),
                       help="training-set sizes, e.g. 3000,12000,48000: one run each, in a fresh process (2 members "
                            "and the baseline, 1 epoch) on shifted mnist-5k digits the bench writes, for how each cost "
                            "grows with the data (bench.json's data_sizes; 48,000 takes 1-10 minutes on 2 cores); "
                            "--set data.name=npz --set data.root=FILE.npz measures your own images instead")
    bench.add_argument("--data-sizes-only", action="store_true", help="measure only --data-sizes")
    bench.add_argument("--serve", metavar="RUN_DIR", nargs="?", const=BENCH_RUN, default=None,
                       help="load on `ensemble serve` (8 clients, 1-64-image then single-image requests, one 1-CPU "
                            "replica) against predict_proba: bench.json's serve; RUN_DIR: the run to serve (default: "
                            "the bench's default run, trained without a baseline if absent; about 3 minutes on 2 "
                            "cores)")
    bench.add_argument("--serve-only", action="store_true", help="measure only --serve")


def sizes(text: str) -> tuple[int, ...]:
    """`--data-sizes 3000,12000`: whole numbers of training images, at least 100 each."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None
    if not values or min(values) < 100:
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more sizes of at least 100 training images")
    return values


def command_bench(args: argparse.Namespace) -> int:
    """`ensemble bench`: checks the options, then measures."""
    if args.repeats < 1 or args.epochs < 1:
        raise InputError("--repeats and --epochs must be at least 1.")
    if importlib.util.find_spec("psutil") is None:
        raise InputError("ensemble bench measures per-process memory with psutil, which is not installed; install "
                         "the bench extra: pip install 'eager-ensembles[bench]'.")
    if any(n < 1 for n in args.tail_members):
        raise InputError(f"--tail-members must be at least 1; got {args.tail_members}.")
    if args.data_sizes_only and not args.data_sizes:
        raise InputError("--data-sizes-only needs --data-sizes, e.g. --data-sizes 3000,12000.")
    if args.serve_only and not args.serve:
        raise InputError("--serve-only needs --serve (optionally naming a finished run directory).")
    serve_run = None if args.serve in (None, BENCH_RUN) else Path(args.serve)
    if serve_run is not None and not (serve_run / "report.json").is_file():
        raise InputError(f"--serve {str(serve_run)!r} is not a finished run (no report.json); give a run directory "
                         "`ensemble run` printed, or no value to serve the bench's default run.")
    only = args.data_sizes_only or args.serve_only
    from ensemble.bench.bench import measure_and_report
    measure_and_report(args.overrides, args.repeats, args.epochs, Path(args.output),
                       with_default_run=not args.no_default_run,
                       tail_members=() if only and not args.tail_only else tuple(args.tail_members),
                       tail_only=args.tail_only or only,
                       data_sizes=args.data_sizes if not args.serve_only or args.data_sizes_only else (),
                       serve=args.serve is not None, serve_run=serve_run)
    return 0
