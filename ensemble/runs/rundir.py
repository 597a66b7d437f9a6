"""Opening a run directory: a new one (never over an existing run), an interrupted one to
resume (local or at an output URI), or a finished one to read."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from pydantic import ValidationError

from ensemble.config import EnsembleConfig, describe_validation_error, recorded_config
from ensemble.report import RunReport
from ensemble.runs.identity import check_every_checkpoint, check_report_names, check_same_run, recorded_run_id
from ensemble.storage import is_uri, join_uri, occupied, run_file
from workers.errors import InputError
from workers.layout import CONFIG_JSON, REPORT_JSON, RUN_ID, WRITER_LOCK, write_atomic


def holds_files(run_dir: Path) -> bool:
    """Whether a directory holds anything but a writer's lock (a new run being set up by another command)."""
    return run_dir.is_dir() and any(p.name != WRITER_LOCK for p in run_dir.iterdir())


def check_output(output: str | Path, name: str) -> None:
    """Before anything starts: the run directory must not hold a run yet, and its nearest existing
    parent must be a directory this process can write in."""
    run_dir = Path(output) / name
    if holds_files(run_dir):
        raise occupied(str(run_dir))
    for path in (run_dir, *run_dir.parents):
        if path.is_symlink() and not path.exists():
            raise InputError(f"output {str(output)!r} goes through the symbolic link {str(path)!r}, which points at "
                             f"{os.readlink(path)!r}, which does not exist; create that directory or choose another "
                             "--output.")
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"a file named {str(run_dir)!r} is already there, so no run directory of that name can be "
                         "made; choose another --name (or --output).")
    existing = next(p for p in (run_dir, *run_dir.parents) if p.exists())
    if not existing.is_dir():
        raise InputError(f"output {str(output)!r} cannot hold run directories: {str(existing)!r} is a file.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"output {str(output)!r} is not writable: no permission to create directories in "
                         f"{str(existing)!r}. Choose another --output.")


def create_run_dir(output: str | Path, name: str) -> Path:
    """A new, empty run directory; an existing one is never overwritten (its results are kept)."""
    run_dir = Path(output) / name
    if holds_files(run_dir):
        raise occupied(str(run_dir))
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create the run directory {str(run_dir)!r}: {err.strerror}.") from None
    return run_dir


def write_config(run_dir: Path, config: EnsembleConfig, run_id: Optional[str] = None) -> None:
    """config.json: the run's id (`ensemble.runs.identity`), then the config as it ran."""
    write_atomic(run_dir / CONFIG_JSON, json.dumps(({RUN_ID: run_id} if run_id else {}) | recorded_config(config),
                                                   indent=2))


def saved_run_id(run_dir: str | Path) -> Optional[str]:
    """The id config.json records for a run (local or at a URI); None for a run from before ids, or none."""
    text = run_file(run_dir, CONFIG_JSON)
    try:
        raw = json.loads(text) if text is not None else {}
    except ValueError:
        return None  # a damaged config.json is named where the config itself is read
    where = join_uri(str(run_dir), CONFIG_JSON) if is_uri(run_dir) else str(Path(run_dir) / CONFIG_JSON)
    return recorded_run_id(raw, where) if isinstance(raw, dict) else None


def check_checkpoints_fit(run_dir: Path, factories: dict, run_id: Optional[str] = None) -> None:
    """Before a resume starts Ray: every checkpoint of each member (name -> its autoencoder factory) is
    its own and this run's (`ensemble.runs.identity`), and the newest fits the model that config.json
    builds. Edited model settings otherwise failed in every member's first epoch with PyTorch's
    state_dict error, blamed on the user's code, with --resume advised again."""
    from workers.checkpoints import list_checkpoints, saved_shapes  # torch: only once a resume gets here
    from workers.models import shapes_of, weight_differences
    check_every_checkpoint(run_dir, factories, run_id)
    built: dict[int, dict[str, tuple]] = {}
    for name, factory in factories.items():
        checkpoints = list_checkpoints(Path(run_dir) / name)
        saved = saved_shapes(checkpoints[-1][1]) if checkpoints else None
        if saved is None:
            continue
        own = built.setdefault(id(factory), shapes_of(factory().state_dict()))
        found = weight_differences(own, saved)
        if found:
            raise InputError(
                f"{str(Path(run_dir) / CONFIG_JSON)!r} does not fit the run's checkpoints: {name}/"
                f"{checkpoints[-1][1].name} has parameters {'; '.join(found)}. Its model settings (model.*, "
                "baseline.width) were changed after the run started, and a resumed run keeps the architecture it "
                "trained: restore them, or start a new run with the new settings.")


def read_finished_run(run_dir: Path) -> tuple[RunReport, EnsembleConfig]:
    """A finished run's report and config; a missing, unfinished or foreign directory, or a
    selection, is an InputError that says which."""
    if not run_dir.is_dir():
        raise InputError(f"run directory {str(run_dir)!r} does not exist.")
    if not (run_dir / REPORT_JSON).is_file():
        raise InputError(f"{str(run_dir)!r} is not a finished run (no {REPORT_JSON}); give the directory "
                         "`ensemble run` printed at the end, or continue an interrupted run with --resume.")
    try:
        report = RunReport.read(run_dir)
    except (OSError, ValueError, ValidationError) as err:
        raise InputError(f"{str(run_dir / REPORT_JSON)!r} cannot be read as a run report: "
                         f"{str(err).splitlines()[0]}") from None
    try:
        config = EnsembleConfig.model_validate(report.config)
    except ValidationError as err:  # name the key: "1 validation error for EnsembleConfig" said nothing
        raise InputError(f"{str(run_dir / REPORT_JSON)!r} holds a config this version cannot use: "
                         f"{describe_validation_error(err)}") from None
    if "selection" in (report.model_extra or {}):
        raise InputError(f"{str(run_dir)!r} is a selection made by `ensemble select`, not a run; give the run "
                         f"directory it was made from ({str(run_dir.parent.parent)!r}).")
    check_report_names(report, run_dir / REPORT_JSON)
    check_same_run(report.run_id, saved_run_id(run_dir), run_dir)
    return report, config
