"""`ensemble run|select|curves|bench|serve ...` (also `python -m ensemble`). Exit 0 ok, 2 bad input, 1 failure."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import traceback
from pathlib import Path
from typing import Optional, Sequence

from ensemble.errors import InputError
from ensemble.storage import is_uri, local_copy

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ensemble", description="Eager parallel autoencoder ensembles on Ray.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train the ensemble and the baseline, then compare them",
                              description="Runs the main job; with no options, the embedded mnist-5k default. "
                                          "Connects to RAY_ADDRESS when set, else starts a local Ray instance.")
    run.add_argument("--config", metavar="FILE", help="YAML or JSON config file")
    run.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                     help="override one config key, e.g. --set train.lr=0.01 (repeatable)")
    run.add_argument("--output", metavar="DIR", help="directory that holds run directories (config key output)")
    run.add_argument("--name", help="run name, the run directory's name (config key name)")
    run.add_argument("--resume", metavar="RUN_DIR",
                     help="continue an interrupted run: finished members are kept, the rest resume from "
                          "their newest valid checkpoint (other options are not allowed with it)")
    run.add_argument("--resume-if-exists", action="store_true",
                     help="with --name: if that run directory holds an interrupted run, continue it with its "
                          "saved config instead of failing; else start it (for jobs that a scheduler retries)")
    run.add_argument("--repeats", metavar="K", type=int,
                     help="K runs with seeds seed, seed+1, ... (directories NAME-r0, NAME-r1, ...) and a summary "
                          "of mean and standard deviation in NAME-summary/")
    select = commands.add_parser(
        "select", help="re-select checkpoints of a finished run by another rule and refit, without training",
        description="Replays another eager rule (or a fixed epoch) over the saved histories, refits the combiner "
                    "on the saved checkpoints and writes RUN_DIR/selections/<rule>_<combiner>/. The run's own "
                    "files are not changed. Only eager.* and combiner.* may be set; a rule's parameter alone "
                    "names its rule (--set eager.epoch=2 means the fixed epoch 2).")
    select.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory")
    select.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                        help="e.g. --set eager.rule=plateau --set eager.threshold=0.05, or --set eager.epoch=2, "
                             "or --set combiner.kind=soft-vote (repeatable)")
    curves = commands.add_parser(
        "curves", help="test accuracy per saved epoch against wall-clock, ensemble and baseline",
        description="Writes accuracy_vs_time.csv and accuracy_vs_time.png into RUN_DIR; every checkpoint set "
                    "evaluated once is cached in accuracy_vs_time_cache.json and not fitted again.")
    curves.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory")
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
    add_serve_parser(commands)
    return parser


def add_serve_parser(commands) -> None:
    serve = commands.add_parser(
        "serve", help="serve a finished run over HTTP on Ray Serve (POST /predict, GET /healthz, GET /)",
        description="Loads the run once per replica and answers POST /predict with {\"images\": [...]} or a .npy "
                    "body, batching requests across clients. Connects to RAY_ADDRESS when set, else starts a "
                    "local Ray instance; Ctrl-C stops what it started. Needs the serve extra.")
    serve.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory, local or a URI")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this "
                                                           "machine only; 0.0.0.0 for every interface)")
    serve.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    serve.add_argument("--replicas", type=int, default=1, help="replicas, each with the whole model (default 1)")
    serve.add_argument("--max-batch-size", type=int, default=16,
                       help="most requests one forward pass answers (default 16; 1 turns batching off)")
    serve.add_argument("--max-body-mib", type=float, default=32.0,
                       help="request bodies over this many MiB get HTTP 413 (default 32)")
    serve.add_argument("--cpus-per-replica", type=float, default=1.0, help="CPUs per replica (default 1)")
    serve.add_argument("--gpus-per-replica", type=float,
                       help="GPUs per replica (default: the run's resources.gpus_per_member; 0 serves on CPUs)")
    serve.add_argument("--autoencoder", metavar="MODULE:NAME",
                       help="the autoencoder factory a custom run was trained with, importable on every node")
    serve.add_argument("--print-config", action="store_true",
                       help="print a Ray Serve config for `serve deploy` with these options and exit")


def resolve_config(args: argparse.Namespace):
    from ensemble.config import EnsembleConfig, build_config, read_config_file
    overrides = list(args.overrides)
    if args.output is not None:
        overrides.append(f"output={args.output}")
    if args.name is not None:
        overrides.append(f"name={args.name}")
    raw = read_config_file(args.config) if args.config else EnsembleConfig().model_dump(mode="json")
    return build_config(raw, overrides)


def command_run(args: argparse.Namespace) -> int:
    if args.resume and (args.config or args.overrides or args.output or args.name or args.repeats):
        raise InputError("--resume continues a run with its own saved config; drop --config, --set, --output, "
                         "--name and --repeats.")
    if args.resume_if_exists and (args.name is None or args.resume or args.repeats):
        raise InputError("--resume-if-exists needs --name (the run to continue or start) and goes without "
                         "--resume and --repeats.")
    resume = bool(args.resume)
    if args.resume:
        from ensemble.driver import resume_config
        config = resume_config(args.resume)
    else:
        config = resolve_config(args)  # before the heavy imports, so a bad config fails fast
        if args.resume_if_exists:
            from ensemble.driver import start_or_resume
            config, resume = start_or_resume(config)
            print(f"Continuing the interrupted run {config.name!r} with its saved config." if resume
                  else f"Starting run {config.name!r}.", flush=True)
    if args.repeats is not None:
        if is_uri(config.output):
            raise InputError("--repeats writes its summary next to the runs and needs a local or shared --output "
                             f"directory, not the URI {config.output!r}; run each seed with --set seed=... instead.")
        return _run_repeats(config, args.repeats)
    from ensemble.driver import run
    from ensemble.report import summary_table
    result = run(config, resume=resume)
    print()
    print(summary_table(result.report))
    print(f"\nRun directory: {result.stored_at or result.run_dir}"
          + (f" (local copy: {result.run_dir})" if result.stored_at else ""))
    return EXIT_OK


def _run_repeats(config, repeats: int) -> int:
    from ensemble.repeats import run_repeats
    done = run_repeats(config, repeats)
    print()
    print(done.summary.table())
    print(f"\nRun directories: {', '.join(str(r.run_dir) for r in done.results)}\nSummary: {done.summary_dir}")
    return EXIT_OK


def command_select(args: argparse.Namespace) -> int:
    from ensemble.report import summary_table
    from ensemble.selection import reselect
    with local_copy(args.run_dir) as run_dir:
        done = reselect(run_dir, args.overrides)
    print(summary_table(done.report))
    print(f"\nSelection: {done.directory} (no training; the run's own report is unchanged)"
          + (f"; uploaded to {args.run_dir}" if is_uri(args.run_dir) else ""))
    return EXIT_OK


def command_curves(args: argparse.Namespace) -> int:
    from ensemble.curves import accuracy_vs_time

    def show(row, cached: bool) -> None:
        print(f"{row.side:>8} epoch {row.epoch:3d} at {row.seconds:8.2f} s: test accuracy {row.test_accuracy:.4f}"
              + (" (cached)" if cached else ""), flush=True)

    with local_copy(args.run_dir) as run_dir:
        done = accuracy_vs_time(run_dir, on_point=show)
    print(f"\n{done.computed} point(s) fitted now, {done.cached} read from the cache.\n"
          f"CSV: {done.csv_path}\nPlot: {done.png_path}"
          + (f"\n(both uploaded to {args.run_dir})" if is_uri(args.run_dir) else ""))
    return EXIT_OK


def command_bench(args: argparse.Namespace) -> int:
    if args.repeats < 1 or args.epochs < 1:
        raise InputError("--repeats and --epochs must be at least 1.")
    from ensemble.bench import main as bench
    bench(args.overrides, args.repeats, args.epochs, Path(args.output), with_default_run=not args.no_default_run)
    return EXIT_OK


def command_serve(args: argparse.Namespace) -> int:
    if not 1 <= args.port <= 65535:
        raise InputError(f"--port must be between 1 and 65535; got {args.port}.")
    from ensemble.serving import MiB, deploy_config, read_report, serve_options, serve_until_stopped
    options = serve_options(run_dir=args.run_dir, replicas=args.replicas, max_batch_size=args.max_batch_size,
                            max_body_bytes=int(args.max_body_mib * MiB), cpus_per_replica=args.cpus_per_replica,
                            gpus_per_replica=args.gpus_per_replica, autoencoder=args.autoencoder)
    if args.print_config:
        read_report(options.run_dir)
        print(deploy_config(options, args.host, args.port), end="")
        return EXIT_OK
    serve_until_stopped(options, args.host, args.port, on_ready=lambda line: print(line, flush=True))
    print("Stopped; everything this command started is gone.", flush=True)
    return EXIT_OK


COMMANDS = {"run": command_run, "select": command_select, "curves": command_curves, "bench": command_bench,
            "serve": command_serve}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except InputError as err:
        print(textwrap.fill(f"error: {err}", width=100), file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted; checkpoints written so far are kept.", file=sys.stderr)
        return 130
    except Exception as err:  # a runtime failure: say what, keep the traceback for whoever debugs
        if os.environ.get("ENSEMBLE_DEBUG"):
            traceback.print_exc()
        print(f"{args.command} failed: {type(err).__name__}: {err}\n(set ENSEMBLE_DEBUG=1 for the traceback; "
              "checkpoints written so far are kept)", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
