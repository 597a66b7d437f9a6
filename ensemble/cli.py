"""`ensemble run|select|curves|labels ...` (also `python -m ensemble`). Exit 0 ok, 2 bad input, 1 runtime failure."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shlex
import sys
import traceback
import warnings
from pathlib import Path
from typing import Optional, Sequence

from ensemble import __version__
from ensemble.bench import command as bench_command
from ensemble.storage import is_uri, local_copy
from workers.errors import InputError

EXIT_OK, EXIT_BAD_INPUT = 0, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ensemble", description="Eager parallel autoencoder ensembles on Ray.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_run(commands)
    _add_sweep(commands)
    _add_select(commands)
    _add_curves(commands)
    _add_labels(commands)
    _add_serve(commands)
    _add_conventions(commands)
    bench_command.add_parser(commands)
    for plugin in plugin_commands().values():
        plugin.add_parser(commands)
    return parser


def plugin_commands() -> dict:
    """Commands that other installed packages add through the `eager_ensembles.commands` entry points:
    `ensemble` never imports them itself, so the packages keep pointing one way. Each is a light module
    with `add_parser(commands)` and `main(args)`. A name we define ourselves wins (an old install's
    entry point for `bench`, which once lived in benchmarks/, is skipped rather than added twice)."""
    found = {}
    for entry in importlib.metadata.entry_points(group="eager_ensembles.commands"):
        if entry.name in COMMANDS:
            continue
        try:
            found[entry.name] = entry.load()
        except ImportError:  # a plugin whose package is not installed here: its command is absent
            continue
    return found


def _add_run(commands) -> None:
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
    add_trust(run, "a resumed run")
    run.add_argument("--repeats", metavar="K", type=int,
                     help="K runs with seeds seed, seed+1, ... (directories NAME-r0, NAME-r1, ...) and a summary "
                          "of mean and standard deviation in NAME-summary/")
    loudness = run.add_mutually_exclusive_group()
    loudness.add_argument("--quiet", action="store_true",
                          help="print only the summary (and notices: waiting for nodes, a dead actor's last lines)")
    loudness.add_argument("--verbose", action="store_true",
                          help="also print Ray's own logs: every actor's output and warnings")
    run.add_argument("--dashboard", action="store_true",
                     help="start Ray's dashboard on 127.0.0.1 with the local Ray instance and print its URL "
                          "(on a cluster: print the cluster's)")


def _add_sweep(commands) -> None:
    sweep = commands.add_parser(
        "sweep", help="a grid of configs, K seeds per cell, each an ordinary run; a table and a plot per sweep",
        description="Runs every cell of a grid (--grid key=v1,v2, repeatable, or a sweep: section in the config "
                    "file) with --repeats seeds each; every cell x seed is a run directory under OUTPUT/NAME/, "
                    "beside sweep.json, sweep.md and sweep.png (the across-seed verdict per cell, as --repeats "
                    "computes it). Resumable with --resume. Connects to RAY_ADDRESS when set, like `run`.")
    sweep.add_argument("--config", metavar="FILE", help="the base config (YAML or JSON), optionally with a sweep: "
                                                         "section (grid, repeats, name, parallel_cells)")
    sweep.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                       help="override one key of the base config (repeatable)")
    sweep.add_argument("--grid", metavar="KEY=V1,V2", action="append", default=[],
                       help="one axis: a config key and its values, e.g. --grid members=1,5 (repeatable; commas "
                            "inside brackets stay: --grid model.channels=[4,8],[8,16])")
    sweep.add_argument("--repeats", metavar="K", type=int, help="seeds per cell: seed, seed+1, ... (default 1)")
    sweep.add_argument("--output", metavar="DIR", help="directory that holds the sweep's directory")
    sweep.add_argument("--name", help="the sweep directory's name (default: a time stamp)")
    sweep.add_argument("--resume", metavar="SWEEP_DIR",
                       help="continue a stopped sweep with its own config and grid: only runs not finished train, "
                            "interrupted ones from their newest checkpoint (other options are not allowed with it)")
    sweep.add_argument("--parallel-cells", metavar="N", type=int,
                       help="cells side by side, as many as the cluster's free resources hold (default 1: one "
                            "after another, each using the whole cluster)")
    sweep.add_argument("--dry-run", action="store_true",
                       help="print the cells, the runs (and what each still needs) and an estimate of the time, "
                            "then exit without starting Ray")
    add_trust(sweep, "an interrupted run")


def add_trust(command, what: str = "the run") -> None:
    command.add_argument("--trust-code", action="store_true",
                         help=f"import the autoencoder module {what} recorded (model.autoencoder); without it, only a "
                              "module this process imported already (a run directory may come from elsewhere)")


def _add_select(commands) -> None:
    select = commands.add_parser(
        "select", help="re-select checkpoints of a finished run by another rule and refit, without training",
        description="Replays another eager rule (or a fixed epoch) over the saved histories, refits the combiner "
                    "on the saved checkpoints and writes RUN_DIR/selections/<rule>_<combiner>/. The run's own "
                    "files are not changed. Only eager.* and combiner.* may be set; a rule's parameter alone "
                    "names its rule (--set eager.epoch=2 means the fixed epoch 2).")
    select.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory")
    add_trust(select)
    select.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                        help="e.g. --set eager.rule=plateau --set eager.threshold=0.05, or --set eager.epoch=2, "
                             "or --set combiner.kind=soft-vote (repeatable)")
    _add_autoencoder_options(select)


def _add_autoencoder_options(command) -> None:
    """The classes a custom run was trained with, when they are not the ones it recorded (or not importable)."""
    command.add_argument("--autoencoder", metavar="MODULE:NAME",
                         help="the members' autoencoder class a custom run was trained with (default: the class the "
                              "run recorded); comma-separated, one per member, for members that differ")
    command.add_argument("--baseline-autoencoder", metavar="MODULE:NAME",
                         help="the baseline's own model class, when the run named one (baseline.autoencoder)")


def autoencoder_options(args: argparse.Namespace) -> dict:
    """--autoencoder and --baseline-autoencoder as the classes they name: the caller names them, so they are
    trusted (InputError when one cannot be imported)."""
    from workers.models import import_autoencoder
    found = {}
    if args.autoencoder:
        classes = [import_autoencoder(path.strip(), trust_code=True) for path in args.autoencoder.split(",")]
        found["autoencoder"] = classes[0] if len(classes) == 1 else classes
    if args.baseline_autoencoder:
        found["baseline_autoencoder"] = import_autoencoder(args.baseline_autoencoder, trust_code=True)
    return found


def _add_curves(commands) -> None:
    curves = commands.add_parser(
        "curves", help="test accuracy per saved epoch against wall-clock, ensemble and baseline",
        description="Writes accuracy_vs_time.csv and accuracy_vs_time.png into RUN_DIR; every checkpoint set "
                    "evaluated once is cached in accuracy_vs_time_cache.json and not fitted again.")
    curves.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory")
    add_trust(curves)
    _add_autoencoder_options(curves)


def _add_labels(commands) -> None:
    labels = commands.add_parser(
        "labels", help="test accuracy against labelled images per class, refitting only the heads",
        description="For each count of labelled training images per class and each seeded draw, refits only the "
                    "combiner's heads on the saved checkpoints (the ensemble's, the untrained encoders at epoch 0, "
                    "the baseline's) and writes RUN_DIR/labels.json and labels.png. No autoencoder trains, no "
                    "checkpoint is written, report.json is unchanged.")
    labels.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory")
    labels.add_argument("--per-class", default="1,5,10,30,100", metavar="COUNTS",
                        help="labelled images per class, comma-separated (default 1,5,10,30,100)")
    labels.add_argument("--draws", type=int, default=5, help="seeded label draws per count (default 5)")
    add_trust(labels)
    _add_autoencoder_options(labels)


def _add_serve(commands) -> None:
    serve = commands.add_parser(
        "serve", help="serve a finished run over HTTP on Ray Serve (POST /predict, GET /healthz, GET /)",
        description="Loads the run once per replica and answers POST /predict with {\"images\": [...]} or a .npy "
                    "body, batching requests across clients. Connects to RAY_ADDRESS when set, else starts a "
                    "local Ray instance; Ctrl-C stops what it started. Needs the serve extra.")
    serve.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory, local or a URI")
    from ensemble.serving.options import CPUS_PER_REPLICA, HOST, MAX_BATCH_SIZE, MAX_BODY_BYTES, PORT, REPLICAS, MiB
    serve.add_argument("--host", default=HOST, help="address to listen on (default %(default)s: this "
                                                    "machine only; 0.0.0.0 for every interface)")
    serve.add_argument("--port", type=int, default=PORT, help="HTTP port (default %(default)s)")
    serve.add_argument("--replicas", type=int, default=REPLICAS,
                       help="replicas, each with the whole model (default %(default)s)")
    serve.add_argument("--max-batch-size", type=int, default=MAX_BATCH_SIZE,
                       help="most requests one forward pass answers (default %(default)s; 1 turns batching off)")
    serve.add_argument("--max-body-mib", type=float, default=MAX_BODY_BYTES / MiB,
                       help="request bodies over this many MiB get HTTP 413 (default %(default)g)")
    serve.add_argument("--cpus-per-replica", type=float, default=CPUS_PER_REPLICA,
                       help="CPUs per replica (default %(default)g)")
    serve.add_argument("--gpus-per-replica", type=float,
                       help="GPUs per replica (default: the run's resources.gpus_per_member; 0 serves on CPUs)")
    serve.add_argument("--autoencoder", metavar="MODULE:NAME",
                       help="the autoencoder factory a custom run was trained with, importable on every node "
                            "(default: the class the run recorded)")
    add_trust(serve)
    serve.add_argument("--print-config", action="store_true",
                       help="print a Ray Serve config for `serve deploy` with these options and exit")


def _add_conventions(commands) -> None:
    """What Ray's and scikit-learn's users expect of a CLI: `--address` where a command connects to
    Ray, `run --dry-run`, `run --tracker`, and `ensemble config` listing the keys."""
    for name in ("run", "sweep", "serve"):
        commands.choices[name].add_argument(
            "--address", metavar="ADDRESS",
            help="the Ray cluster to connect to, as Ray's own --address: auto, HOST:PORT or ray://HOST:PORT "
                 "(default: RAY_ADDRESS when set, else a local Ray instance this command starts and stops)")
    run = commands.choices["run"]
    run.add_argument("--dry-run", action="store_true",
                     help="print the resolved config and the plan (members, slots, resources, phases) and exit "
                          "without starting Ray")
    run.add_argument("--tracker", choices=["mlflow"],
                     help="also log the run to an experiment tracker: mlflow (MLFLOW_TRACKING_URI says where, "
                          "else OUTPUT/mlruns; needs the mlflow extra)")
    config = commands.add_parser("config", help="list the config keys with their defaults and meanings",
                                 description="Every key `--set` and config files take, with its default and "
                                             "meaning. Unknown keys are errors with the nearest known key.")
    config.add_argument("--markdown", action="store_true", help="as a Markdown table (the docs' reference)")


def command_config(args: argparse.Namespace) -> int:
    from ensemble.config import reference_markdown, reference_text
    print(reference_markdown() if args.markdown else reference_text())
    return EXIT_OK


def command_dry_run(args: argparse.Namespace) -> int:
    """`ensemble run --dry-run`: every check that needs no Ray, then the config and the plan."""
    from ensemble.job.dry_run import check_without_ray, dry_run_text, local_nodes
    config, _ = run_config(args, announce=False)
    address = os.environ.get("RAY_ADDRESS")
    check_without_ray(config, local_nodes(), address)
    print(dry_run_text(config, local_nodes(), address))
    return EXIT_OK


def use_address(args: argparse.Namespace) -> None:
    """`--address` means what RAY_ADDRESS means (and a driver child inherits it); `local` is the
    default already: a local instance this command starts."""
    address = getattr(args, "address", None)
    if address and address != "local":
        os.environ["RAY_ADDRESS"] = address
    elif address == "local":
        os.environ.pop("RAY_ADDRESS", None)


def check_ray_address(args: argparse.Namespace) -> None:
    """A malformed or unreachable --address / RAY_ADDRESS is exit 2 within seconds, before any data is
    loaded; a dry run only parses it (it connects nowhere)."""
    address = os.environ.get("RAY_ADDRESS")
    if args.command not in ("run", "serve") or not address or getattr(args, "print_config", False):
        return
    from ensemble.scheduling.address import check_address, parse_address
    if getattr(args, "dry_run", False):
        parse_address(address)
    else:
        check_address(address)


def config_overrides(args: argparse.Namespace) -> list[str]:
    """`--set` assignments with --output and --name (which mean output=... and name=...) after them."""
    return list(args.overrides) + [f"{key}={value}" for key, value in (("output", args.output), ("name", args.name))
                                   if value is not None]


def run_config(args: argparse.Namespace, announce: bool = True):
    """The config `ensemble run` will use and whether it resumes (`ensemble.config.resolve`); every
    check that needs no Ray is done here. A new run is named now, so the name is known if it fails."""
    if args.resume and (args.config or args.overrides or args.output or args.name or args.repeats):
        raise InputError("--resume continues a run with its own saved config; drop --config, --set, --output, "
                         "--name and --repeats.")
    if args.resume_if_exists and (args.name is None or args.resume or args.repeats):
        raise InputError("--resume-if-exists needs --name (the run to continue or start) and goes without "
                         "--resume and --repeats.")
    from ensemble.config import resolve
    resolved = resolve(file=args.config, overrides=config_overrides(args), resume=args.resume,
                       resume_if_exists=args.resume_if_exists)
    config = resolved.config
    if args.resume_if_exists and announce:
        print(f"Continuing the interrupted run {config.name!r} with its saved config." if resolved.resume
              else f"Starting run {config.name!r}.", flush=True)
    if args.repeats is not None and is_uri(config.output):
        raise InputError("--repeats writes its summary next to the runs and needs a local or shared --output "
                         f"directory, not the URI {config.output!r}; run each seed with --set seed=... instead.")
    return config, resolved.resume


def run_location(config, args: argparse.Namespace) -> Optional[str]:
    """The run directory a failure message points at (None for --repeats: several directories)."""
    if args.repeats is not None:
        return None
    from ensemble.storage import join_uri
    if is_uri(config.output):
        return join_uri(config.output, config.name)
    return str(Path(config.output).absolute() / config.name)  # absolute: the resume command works from anywhere


def command_run(args: argparse.Namespace) -> int:
    config, resume = run_config(args)
    args.run_location = run_location(config, args)
    from ensemble.console import aligned
    from ensemble.observers.progress import Watch
    watch = Watch(view="quiet" if args.quiet else "auto", verbose=args.verbose, dashboard=args.dashboard)
    if args.repeats is not None:
        return _run_repeats(config, args.repeats, watch, args.tracker)
    from ensemble.job.driver import run
    from ensemble.report import summary_table
    result = run(config, resume=resume, progress=watch, tracker=args.tracker, trust_code=args.trust_code)
    print()
    print(aligned(summary_table(result.report)))
    print(f"\nRun directory: {result.stored_at or result.run_dir}"
          + (f" (local copy: {result.run_dir})" if result.stored_at else ""))
    return EXIT_OK


def supervise_run(args: argparse.Namespace) -> int:
    """The command line's `ensemble run`: the driver runs in a watched child (see job/supervisor.py)."""
    from ensemble.job.supervisor import run_driver_in_child
    config, _ = run_config(args, announce=False)  # bad input ends here, before any process starts
    argv = sys.argv[1:]
    if args.name is None and not args.resume:  # the child must use the name this process gave the run
        argv += ["--name", config.name]
    return run_driver_in_child(argv, run_location(config, args), scheduled=args.resume_if_exists)


def _run_repeats(config, repeats: int, watch, tracker=None) -> int:
    from ensemble.analysis.repeats import run_repeats
    done = run_repeats(config, repeats, progress=watch, tracker=tracker)
    print()
    print(done.summary.table())
    print(f"\nRun directories: {', '.join(str(r.run_dir) for r in done.results)}\nSummary: {done.summary_dir}")
    return EXIT_OK


def command_select(args: argparse.Namespace) -> int:
    from ensemble.analysis.select import reselect
    from ensemble.console import aligned
    from ensemble.report import summary_table
    with local_copy(args.run_dir) as run_dir:
        done = reselect(run_dir, args.overrides, trust_code=args.trust_code, **autoencoder_options(args))
    print(aligned(summary_table(done.report)))
    print(f"\nSelection: {done.directory} (no training; the run's own report is unchanged)"
          + (f"; uploaded to {args.run_dir}" if is_uri(args.run_dir) else ""))
    return EXIT_OK


def command_curves(args: argparse.Namespace) -> int:
    from ensemble.analysis.curves import accuracy_vs_time

    def show(row, cached: bool) -> None:
        print(f"{row.side:>8} epoch {row.epoch:3d} at {row.seconds:8.2f} s: test accuracy {row.test_accuracy:.4f}"
              + (" (cached)" if cached else ""), flush=True)

    with local_copy(args.run_dir) as run_dir:
        done = accuracy_vs_time(run_dir, on_point=show, trust_code=args.trust_code, **autoencoder_options(args))
    if done.equal_time:
        from ensemble.console import aligned
        print(f"\n{aligned(done.equal_time)}")  # prose wrapped to the console's width
    print(f"\n{done.computed:,} point(s) fitted now, {done.cached:,} read from the cache or the run's own "
          "predictions.\n"
          f"CSV: {done.csv_path}\nPlot: {done.png_path}"
          + (f"\n(both uploaded to {args.run_dir})" if is_uri(args.run_dir) else ""))
    return EXIT_OK


def command_labels(args: argparse.Namespace) -> int:
    from ensemble.analysis.labels import label_curve, labels_table, parse_counts
    from ensemble.console import aligned
    counts = parse_counts(args.per_class)

    def show(row) -> None:
        means = ", ".join(f"{side} {row.estimate(side)['mean']:.4f}" for side in row.accuracy)
        print(f"{row.per_class:>4} per class ({row.labelled:,} labels): {means}", flush=True)

    with local_copy(args.run_dir) as run_dir:
        curve = label_curve(run_dir, counts, args.draws, on_row=show, trust_code=args.trust_code,
                            **autoencoder_options(args))
    print()
    print(aligned(labels_table(curve)))
    print(f"\nJSON: {curve.json_path}\nPlot: {curve.png_path} (no checkpoint written; the run's report is unchanged)"
          + (f"\n(both uploaded to {args.run_dir})" if is_uri(args.run_dir) else ""))
    return EXIT_OK


def command_serve(args: argparse.Namespace) -> int:
    if not 1 <= args.port <= 65535:
        raise InputError(f"--port must be between 1 and 65535; got {args.port}.")
    from ensemble.serving.application import deploy_config, read_report, serve_until_stopped
    from ensemble.serving.options import MiB, serve_options
    options = serve_options(run_dir=args.run_dir, replicas=args.replicas, max_batch_size=args.max_batch_size,
                            max_body_bytes=int(args.max_body_mib * MiB), cpus_per_replica=args.cpus_per_replica,
                            gpus_per_replica=args.gpus_per_replica, autoencoder=args.autoencoder,
                            trust_code=args.trust_code)
    if args.print_config:
        read_report(options.run_dir)
        print(deploy_config(options, args.host, args.port), end="")
        return EXIT_OK
    serve_until_stopped(options, args.host, args.port, on_ready=lambda line: print(line, flush=True))
    print("Stopped; everything this command started is gone.", flush=True)
    return EXIT_OK


def sweep_plan(args: argparse.Namespace):
    """The sweep the options ask for, checked (axes, directory) without starting Ray; and its cells at once."""
    from ensemble.config import EnsembleConfig, build_config, read_config_file
    from ensemble.sweeps.grid import merge_axes, parse_axis, read_section
    from ensemble.sweeps.runner import plan_sweep
    if args.resume:
        if args.config or args.overrides or args.grid or args.repeats or args.output or args.name:
            raise InputError("--resume continues a sweep with its own saved config and grid; drop --config, --set, "
                             "--grid, --repeats, --output and --name.")
        return plan_sweep(None, resume=args.resume), args.parallel_cells or 1
    raw = read_config_file(args.config) if args.config else EnsembleConfig().model_dump(mode="json")
    raw, section = read_section(raw)
    config = build_config(raw, list(args.overrides) + ([f"output={args.output}"] if args.output else []))
    axes = merge_axes(section.grid, [parse_axis(text) for text in args.grid])
    repeats = args.repeats if args.repeats is not None else section.repeats or 1
    plan = plan_sweep(config, axes, repeats, args.name or section.name)
    return plan, args.parallel_cells or section.parallel_cells or 1


def command_sweep(args: argparse.Namespace) -> int:
    from ensemble.sweeps.record import sweep_table
    from ensemble.sweeps.runner import dry_run_text, execute
    plan, parallel = sweep_plan(args)
    if parallel < 1:
        raise InputError(f"--parallel-cells must be at least 1, not {parallel}.")
    args.run_location = str(plan.sweep_dir.absolute())
    if args.dry_run:
        print(dry_run_text(plan, parallel))
        return EXIT_OK
    done = execute(plan, parallel, {"autoencoder": None, "dataset": None, "trust_code": args.trust_code},
                   lambda line: print(line, flush=True))
    print()
    print(sweep_table(done.record))
    print(f"\nSweep directory: {done.sweep_dir} (sweep.json, sweep.md, sweep.png and a run directory per cell and "
          "seed)")
    return EXIT_OK


COMMANDS = {"run": command_run, "sweep": command_sweep, "select": command_select, "curves": command_curves,
            "labels": command_labels, "serve": command_serve, "config": command_config,
            "bench": bench_command.command_bench}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = _one_line_warning
    # scikit-learn's own non-convergence text names neither the head nor our key: fit_combiner's warning does
    warnings.filterwarnings("ignore", message=r"(lbfgs failed to converge|Stochastic Optimizer: Maximum iter)",
                            module=r"sklearn\.")
    from ensemble.errors import paragraph, stop_on_sigterm
    from ensemble.job.supervisor import is_child
    use_address(args)
    from ensemble.console import command_line_logging
    command_line_logging(quiet=getattr(args, "quiet", False))  # the library logs; the command line shows it
    if args.command == "run" and args.dry_run:
        command = command_dry_run  # no driver child, no Ray
    elif args.command == "run" and argv is None and not is_child():
        command = supervise_run  # the command line itself: watch the driver from outside
    else:
        command = COMMANDS.get(args.command) or plugin_commands()[args.command].main
    try:
        with stop_on_sigterm():  # before Ray starts too: a stopped run always ends with its paragraph
            check_ray_address(args)
            return command(args)
    except InputError as err:
        print(paragraph(f"error: {err}"), file=sys.stderr)
        return EXIT_BAD_INPUT
    except (KeyboardInterrupt, Exception) as err:  # a failure during the run (or a signal): say what, what next
        return report_failure(args, err)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def report_failure(args: argparse.Namespace, error: BaseException) -> int:
    """One paragraph: the problem, what was kept, the next command; tracebacks only under ENSEMBLE_DEBUG."""
    from ensemble.errors import paragraph
    from ensemble.job.failures import NeedsNewRun, describe, next_step
    from ensemble.job.supervisor import mark_reported
    code, problem = describe(error, getattr(args, "run_location", None))
    if os.environ.get("ENSEMBLE_DEBUG"):
        traceback.print_exception(error)
        print(getattr(error, "remote_traceback", ""), file=sys.stderr)
    if args.command == "run" and not isinstance(error, NeedsNewRun):
        problem += " " + next_step(getattr(args, "run_location", None), args.resume_if_exists)
    elif args.command == "sweep" and getattr(args, "run_location", None):
        problem += (" Every finished run is kept, and every checkpoint of the interrupted ones. Continue with: "
                    f"ensemble sweep --resume {shlex.quote(args.run_location)}")
    else:
        problem += " (Set ENSEMBLE_DEBUG=1 for the traceback.)"
    print(paragraph(f"error: {problem}"), file=sys.stderr, flush=True)
    mark_reported()
    return code


if __name__ == "__main__":
    sys.exit(main())
