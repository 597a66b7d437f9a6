"""The run directory for the length of a run: created (a new run) and locked for its one writer
(`writing`), then opened with config.json and the pixel scaling (`open_run_dir`) once Ray has
started and the cluster can hold a member."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from ensemble.builders import run_name
from ensemble.config import ARRAYS, EnsembleConfig
from ensemble.data.records import save_splits
from ensemble.job.prepare import Plan
from ensemble.result import save_normalizer
from ensemble.runs.rundir import create_run_dir, holds_files, write_config
from ensemble.runs.runlock import run_lock
from ensemble.storage import Mirror, occupied


@contextmanager
def writing(config: EnsembleConfig, resume: bool, mirror: Optional[Mirror]) -> Iterator[Path]:
    """The run directory (created for a new run) with its writer's lock held (`runlock`) for the
    length of a `with`. A new directory that got nothing but the lock is removed again on failure.
    Takes the plan's fields, not the plan: a generator holds its arguments until the `with` ends,
    and the plan's first images are freed once the object store holds them (`driver.run`)."""
    if mirror is not None:
        run_dir = mirror.local
    elif resume:
        run_dir = Path(config.output) / run_name(config)
    else:
        run_dir = create_run_dir(config.output, run_name(config))
    new = not resume and mirror is None
    try:
        with run_lock(run_dir):
            if new and holds_files(run_dir):  # another command created it between our check and our lock
                raise occupied(str(run_dir))
            yield run_dir
    except BaseException:
        if new and not holds_files(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def open_run_dir(plan: Plan, run_dir: Path) -> None:
    """config.json (a new run) and normalization.json, written into the locked run directory."""
    config = plan.config
    if not plan.resume:
        write_config(run_dir, config, plan.run_id)
    save_normalizer(run_dir, plan.splits.normalizer)
    if config.data.name == ARRAYS and config.data.save_splits and not plan.resume:
        save_splits(run_dir, plan.splits)  # what select, curves and --resume need in a fresh process
    if plan.mirror is not None:
        plan.mirror.push()
