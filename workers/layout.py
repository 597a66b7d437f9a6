"""The run directory's layout, in one place: every file name a run writes, and the one atomic
write (temporary file, fsync, rename) that writes every one of them.

```
<output>/<run-name>/
  config.json  report.json  report.md  loss_curves.png  timeline.png  accuracy_time.png
  combiner.skops  normalization.json  test_predictions.json
  member_00/ history.jsonl  progress.csv  events.out.tfevents.*  outcome.json  checkpoint_000000/ ...
  baseline/  the same, plus its own combiner.skops
  selections/<rule>_<combiner>/   accuracy_vs_time.csv/.png/_cache.json   labels.json/.png   (written by analysis)
<output>/<sweep-name>/  sweep.json  sweep.md  sweep.png  and a run directory per cell and seed
```
A reader (a resumed run, `ensemble select`, another process) sees a file's old bytes or its
new ones, never half of them; checkpoints are whole directories renamed into place
(`workers.checkpoints`).
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

# --- the run directory ---
CONFIG_JSON = "config.json"
REPORT_JSON, REPORT_MD = "report.json", "report.md"
COMBINER = "combiner.skops"
NORMALIZATION = "normalization.json"
SPLITS = "splits.npz"  # in-memory data's splits as drawn (data.save_splits), for analysis in a fresh process
TEST_PREDICTIONS = "test_predictions.json"  # each side's class indices on the test images
PLOTS = ("loss_curves.png", "timeline.png", "accuracy_time.png")
BASELINE = "baseline"
WRITER_LOCK = ".writer.lock"  # names the one command writing the run (ensemble.job.runlock); a dot: never uploaded

# --- a member's (or the baseline's) directory ---
HISTORY = "history.jsonl"
OUTCOME = "outcome.json"
PROGRESS_CSV = "progress.csv"               # epoch, losses, seconds, elapsed: written by the driver
TENSORBOARD_PREFIX = "events.out.tfevents"  # TensorBoard scalars, appended by the driver (a log, not replaced)
CHECKPOINT_PATTERN = re.compile(r"^checkpoint_(\d{6})$")
WEIGHTS, STATE, MANIFEST = "model.safetensors", "state.pt", "manifest.json"  # a checkpoint directory's files
TEMP_PREFIX = ".tmp-checkpoint"  # a checkpoint being written; renamed into place when whole

# --- written later by the analysis commands ---
SELECTIONS = "selections"
CURVES_CSV, CURVES_PNG, CURVES_CACHE = "accuracy_vs_time.csv", "accuracy_vs_time.png", "accuracy_vs_time_cache.json"
SUMMARY_JSON, SUMMARY_MD, SUMMARY_PNG = "summary.json", "summary.md", "repeats.png"
LABELS_JSON, LABELS_PNG = "labels.json", "labels.png"  # `ensemble labels`: accuracy against labels per class

# --- a sweep's directory: <output>/<sweep-name>/ holds these and one run directory per cell and seed ---
SWEEP_JSON, SWEEP_MD, SWEEP_PNG = "sweep.json", "sweep.md", "sweep.png"


RUN_ID = "run_id"  # the key, in config.json and report.json (and each checkpoint's manifest), of the run's id
MEMBER_NAME = re.compile(r"^member_(\d{2,})$")  # a member's directory name; nothing else (no "../") is one


def member_name(index: int) -> str:
    """The directory (and display) name of member `index`."""
    return f"member_{index:02d}"


def member_directory(run_dir: str | Path, name: str) -> str:
    """Where member (or baseline) `name` writes, as its actor is told: absolute, because an actor's working
    directory is the driver's only when the run started Ray itself (on a cluster that `ray start` began
    in another folder, a relative path would land there)."""
    return str((Path(run_dir) / name).absolute())


def checkpoint_dir(member_dir: str | Path, epoch: int) -> Path:
    return Path(member_dir) / f"checkpoint_{epoch:06d}"


def write_synced(path: Path, data: bytes) -> None:
    """Write and fsync one new file (a temporary, or a file inside a directory renamed later). A failed
    write (a full disk) names the file, which the OS error alone does not."""
    try:
        with open(path, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        if err.filename is not None:
            raise
        raise OSError(err.errno, err.strerror, str(path)) from None


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Replace `path` with `data` so that a reader sees the old or the new bytes, never a mix,
    even if this process is killed midway (the temporary is a dot name, swept or ignored)."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        write_synced(tmp, payload)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
