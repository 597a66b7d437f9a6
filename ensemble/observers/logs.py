"""The logs a user already reads, written on the driver from the members' events: every member
and the baseline get `progress.csv` (epoch, train_loss, val_loss, seconds, elapsed) and
TensorBoard scalars in their directory, so `tensorboard --logdir runs/<run>` shows them all on
one chart (one TensorBoard run per member directory).

They are written here, not by the actors, because the driver is the one writer of the run
directory: a member on another node trains on its own disk and ships its files with its events
(`workers.scratch`), and the driver already holds every event. `event_files` names the files an
event produced, so an output URI's mirror uploads those and nothing else.

TensorBoard files come from `tensorboardX`, a small writer (numpy, packaging, protobuf: all
already needed by Ray); reading them needs the `tensorboard` package (`pip install tensorboard`).
"""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path
from typing import Any, Optional

from workers.events import Done, EpochEnded, Event, Started
from workers.history import EpochRecord
from workers.layout import HISTORY, OUTCOME, PROGRESS_CSV, TENSORBOARD_PREFIX, checkpoint_dir, write_atomic

log = logging.getLogger(__name__)

PROGRESS_COLUMNS = ("epoch", "train_loss", "val_loss", "seconds", "elapsed")
SCALARS = {"loss/train": "train_loss", "loss/val": "val_loss", "epoch_seconds": "seconds"}  # tag -> column


def progress_text(rows: list[dict]) -> str:
    """progress.csv's content: a header and one row per epoch."""
    out = io.StringIO()
    writer = csv.DictWriter(out, PROGRESS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def read_progress(path: Path) -> dict[int, dict]:
    """The rows of an existing progress.csv by epoch (a resumed run keeps its earlier epochs)."""
    if not path.exists():
        return {}
    rows = csv.DictReader(io.StringIO(path.read_text()))
    return {int(r["epoch"]): {"epoch": int(r["epoch"]), **{k: float(r[k]) for k in PROGRESS_COLUMNS[1:]}}
            for r in rows}


def event_files(event: Event) -> list[str]:
    """The files (or checkpoint directories) `event` produced, relative to the run directory.
    A member on another node sends its epoch-0 checkpoint with its first epoch, so a path may
    not be there yet when the event arrives (the mirror keeps it pending until it is)."""
    name = event.name
    match event:
        case Started(resumed_from=None):
            return [checkpoint_dir(name, 0).as_posix()]
        case EpochEnded(record=record):
            return ([checkpoint_dir(name, record.epoch).as_posix()] if record.finite else []) + [f"{name}/{HISTORY}"]
        case Done():
            return [f"{name}/{HISTORY}", f"{name}/{OUTCOME}"]
    return []


class RunLogs:
    """An event handler for the driver: progress.csv, rewritten whole and atomically after every
    epoch (it is tiny, like history.jsonl), and TensorBoard scalars appended to an event file.
    `elapsed` is seconds since `started` (this run's start; a resumed run starts again from 0)."""

    def __init__(self, run_dir: Path, started: Optional[float] = None):
        self.run_dir = Path(run_dir)
        self.started = time.time() if started is None else started
        self.rows: dict[str, dict[int, dict]] = {}
        self.boards: dict[str, tuple[Any, str]] = {}  # member -> (SummaryWriter, its file's name)
        self.writer_class = self._import_writer()  # now, not on the first epoch: events stay quick

    def __call__(self, event: Event) -> list[str]:
        """Write what `event` adds; returns the paths written, relative to the run directory."""
        match event:
            case Started(resumed_from=resumed_from):
                # first sight of a member in a resumed run: its rows so far; after a restart, the rows
                # up to the checkpoint it resumes from (the epochs after it are trained again)
                rows = self.rows.get(event.name) or read_progress(self.run_dir / event.name / PROGRESS_CSV)
                self.rows[event.name] = {e: r for e, r in rows.items() if e <= (resumed_from or 0)}
            case EpochEnded(record=record, at=at):
                return self._epoch(event.name, record, at)
        return []

    def _epoch(self, name: str, record: EpochRecord, at: float) -> list[str]:
        row = {"epoch": record.epoch, "train_loss": record.train_loss, "val_loss": record.val_loss,
               "seconds": round(record.seconds, 4), "elapsed": round(at - self.started, 3)}
        rows = self.rows.setdefault(name, {})
        rows[record.epoch] = row
        (self.run_dir / name).mkdir(parents=True, exist_ok=True)
        write_atomic(self.run_dir / name / PROGRESS_CSV, progress_text([rows[e] for e in sorted(rows)]))
        written = [f"{name}/{PROGRESS_CSV}"]
        board = self._board(name)
        if board is not None:
            writer, file_name = board
            for tag, column in SCALARS.items():
                writer.add_scalar(tag, row[column], record.epoch, walltime=at)
            writer.flush()  # a user watching with TensorBoard sees the epoch now, not in two minutes
            written.append(f"{name}/{file_name}")
        return written

    @staticmethod
    def _import_writer():
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            log.warning("tensorboardX is not installed, so no TensorBoard scalars are written "
                        "(progress.csv still is); pip install tensorboardX")
            return None
        return SummaryWriter

    def _board(self, name: str):
        """The member's TensorBoard writer, made on its first epoch (None without tensorboardX)."""
        if name in self.boards or self.writer_class is None:
            return self.boards.get(name)
        directory = self.run_dir / name
        before = set(directory.glob(f"{TENSORBOARD_PREFIX}*"))
        writer = self.writer_class(logdir=str(directory), flush_secs=3600)  # flushed per epoch above
        made = sorted(set(directory.glob(f"{TENSORBOARD_PREFIX}*")) - before) or sorted(before)
        self.boards[name] = (writer, made[-1].name)
        return self.boards[name]

    def close(self) -> None:
        for writer, _ in self.boards.values():
            writer.close()
        self.boards.clear()

