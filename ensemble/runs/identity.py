"""A run's identity, checked on every read: its id, its members' names, the checkpoints it chose.

A new run draws a random id, written once in config.json and report.json and into every checkpoint's
manifest (with the member's name, the epoch and the architecture: `workers.checkpoints`). Every
command that reads a run (`ensemble.load`, `select`, `curves`, `labels`, `serve`, `--resume`) checks
what it is about to use against the directory it reads and the run it reads it for, so a member
directory swapped with another's, a checkpoint directory renamed to another epoch, or a member
copied in from another run is an InputError naming both, never a silently wrong answer. Runs from
before ids were recorded still load, with the epoch and directory checks.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Iterable, Optional

from ensemble.report import RunReport
from workers.errors import InputError
from workers.layout import BASELINE, CONFIG_JSON, MEMBER_NAME, REPORT_JSON, RUN_ID, checkpoint_dir, member_name


def new_run_id() -> str:
    """A new run's id: random, so two runs never share one (not even a run and its copy's rerun)."""
    return uuid.uuid4().hex


def recorded_run_id(raw: dict[str, Any], where: str) -> Optional[str]:
    """The run id a config.json or report.json holds (None: a run from before ids were recorded)."""
    run_id = raw.get(RUN_ID)
    if run_id is not None and (not isinstance(run_id, str) or not run_id.strip()):
        raise InputError(f"{where!r} holds {RUN_ID}={run_id!r}, which is not a run id (a string); restore the file "
                         "as the run wrote it.")
    return run_id


def check_same_run(report_id: Optional[str], config_id: Optional[str], run_dir: Path) -> None:
    """report.json and config.json of one directory must name the same run."""
    if report_id is not None and config_id is not None and report_id != config_id:
        raise InputError(f"{str(run_dir / REPORT_JSON)!r} is run {report_id!r} but {str(run_dir / CONFIG_JSON)!r} "
                         f"is run {config_id!r}: the files come from different runs. Restore the run directory as "
                         "the run wrote it.")


def check_report_names(report: RunReport, path: Path) -> None:
    """Each member in report.json is named `member_NN` after its own index (a name is a directory to read
    weights from: `../other/member_00` would read another run's); `ensemble.members_used` names each member
    at most once, each one the report has; the baseline is `baseline`."""
    indices = [member.index for member in report.members]
    for member in report.members:
        if not MEMBER_NAME.match(member.name) or member.name != member_name(member.index):
            raise InputError(f"{str(path)!r} names member {member.index} {member.name!r}; a member's name is its "
                             f"directory, {member_name(member.index)!r}. The report was edited or damaged: restore "
                             "it as the run wrote it.")
    if len(set(indices)) != len(indices):
        raise InputError(f"{str(path)!r} lists member indices {indices}, some more than once; restore it as the run "
                         "wrote it.")
    used = report.ensemble.members_used
    wrong = sorted({i for i in used if i not in indices}) or sorted({i for i in used if used.count(i) > 1})
    if wrong:
        raise InputError(f"{str(path)!r} has ensemble.members_used={used}: {wrong} "
                         f"{'is' if len(wrong) == 1 else 'are'} not once each among the report's members "
                         f"{indices}. Restore it as the run wrote it.")
    if report.baseline is not None and report.baseline.name != BASELINE:
        raise InputError(f"{str(path)!r} names the baseline {report.baseline.name!r}; its directory is "
                         f"{BASELINE!r}. Restore it as the run wrote it.")


def check_chosen(run_dir: Path, chosen: Iterable[tuple[str, int]], run_id: Optional[str]) -> None:
    """Each chosen checkpoint (member directory name, epoch) is the one its place names, of run `run_id`
    (manifests only: no tensor is read)."""
    from workers.checkpoints import verify_identity  # torch: only once a checkpoint is read
    for name, epoch in chosen:
        verify_identity(checkpoint_dir(Path(run_dir) / name, epoch), run_id)


def check_every_checkpoint(run_dir: Path, names: Iterable[str], run_id: Optional[str]) -> None:
    """Before a resume trains on: every checkpoint of each named directory belongs there and to this run.
    One that cannot be read (a cut-off upload, a truncated write) is left to the resume, which skips it
    for the newest valid one and says so; one that belongs elsewhere stops the resume here."""
    from workers.checkpoints import CheckpointError, CheckpointMismatch, list_checkpoints, verify_identity
    for name in names:
        for _, path in list_checkpoints(Path(run_dir) / name):
            try:
                verify_identity(path, run_id)
            except CheckpointMismatch:
                raise
            except CheckpointError:
                continue
