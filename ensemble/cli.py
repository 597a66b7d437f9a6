"""`ensemble run ...` (also `python -m ensemble`). Exit 0 ok, 2 bad input, 1 runtime failure."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import traceback
from typing import Optional, Sequence

from ensemble.errors import InputError

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
    return parser


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
    if args.resume and (args.config or args.overrides or args.output or args.name):
        raise InputError("--resume continues a run with its own saved config; drop --config, --set, --output "
                         "and --name.")
    if args.resume:
        from ensemble.driver import resume_config
        config = resume_config(args.resume)
    else:
        config = resolve_config(args)  # before the heavy imports, so a bad config fails fast
    from ensemble.driver import run
    from ensemble.report import summary_table
    result = run(config, resume=bool(args.resume))
    print()
    print(summary_table(result.report))
    print(f"\nRun directory: {result.run_dir}")
    return EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return command_run(args)
    except InputError as err:
        print(textwrap.fill(f"error: {err}", width=100), file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted; checkpoints written so far are kept.", file=sys.stderr)
        return 130
    except Exception as err:  # a runtime failure: say what, keep the traceback for whoever debugs
        if os.environ.get("ENSEMBLE_DEBUG"):
            traceback.print_exc()
        print(f"run failed: {type(err).__name__}: {err}\n(set ENSEMBLE_DEBUG=1 for the traceback; "
              "checkpoints written so far are kept)", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
