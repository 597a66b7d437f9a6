"""Node-local training directories, and the bytes that move between them and the run directory.

The driver's run directory is the source of truth. A member actor on the driver's own machine
trains straight in it. Anywhere else (another node, whose disk the driver cannot see) it trains
in a scratch directory on its node's local disk: the driver seeds that directory with the
member's newest valid checkpoint from the run directory (so a member restarted on any node
resumes), and after every epoch the actor sends back what is new there (checkpoints, history,
outcome) as bytes, which the driver writes into the run directory. No Ray here: the actor and
the driver call these functions; the bytes travel beside the actor's events. The driver builds
a member's `Handoff` (`ensemble.scheduling.pool`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from workers.checkpoints import (
    CHECKPOINT_PATTERN,
    MANIFEST,
    STATE,
    WEIGHTS,
    checkpoint_files,
    list_checkpoints,
    write_checkpoint_files,
)
from workers.layout import HISTORY, OUTCOME, write_atomic

SCRATCH_ENV = "ENSEMBLE_SCRATCH"  # a node's local directory for members' scratch; default: the system temp dir
Files = dict[str, bytes]          # path relative to a member directory -> content


def machine(node_id: str) -> str:
    """Who can see whose files. The Ray node id tells nodes apart even when several share one
    host (as in tests); the host name tells a Ray Client laptop apart from the head node."""
    return f"{node_id}@{socket.gethostname()}"


@dataclass(frozen=True)
class Handoff:
    """What the driver gives a (re)started member actor along with its spec."""
    driver: str                 # machine() of the driver
    scratch_name: str           # "<run>-<hash of the run directory>/<member>", unique per run on a node
    files: Files = field(default_factory=dict)  # the newest valid checkpoint, or outcome.json once finished


def checkpoint_entries(checkpoint: Path) -> Files:
    """A checkpoint directory's files, named as `receive` expects them."""
    return {f"{checkpoint.name}/{name}": data for name, data in checkpoint_files(checkpoint).items()}


def receive(member_dir: Path, files: Files) -> None:
    """Write files a member sent (or the driver seeded) into `member_dir`: each checkpoint
    verified against its manifest and renamed into place whole, history and outcome replaced
    atomically. Only the names a member directory holds are accepted."""
    checkpoints: dict[str, Files] = {}
    for name, data in files.items():
        parts = PurePosixPath(name).parts
        if parts in ((HISTORY,), (OUTCOME,)):
            continue
        if len(parts) != 2 or not CHECKPOINT_PATTERN.match(parts[0]) or parts[1] not in (WEIGHTS, STATE, MANIFEST):
            raise ValueError(f"refusing to write {name!r}: not a file of a member directory")
        checkpoints.setdefault(parts[0], {})[parts[1]] = data
    for directory, content in sorted(checkpoints.items()):
        epoch = CHECKPOINT_PATTERN.match(directory)
        assert epoch is not None  # every directory passed the pattern in the loop above
        write_checkpoint_files(member_dir, int(epoch.group(1)), content)
    for name in (HISTORY, OUTCOME):  # after the checkpoints: an outcome never precedes its checkpoint
        if name in files:
            Path(member_dir).mkdir(parents=True, exist_ok=True)
            write_atomic(Path(member_dir) / name, files[name])


class Workdir:
    """Actor side: the directory a member trains in, and what to send the driver after each epoch."""

    def __init__(self, run_member_dir: str | Path, given: Handoff, here: str):
        self.remote = given.driver != here
        if not self.remote:  # the driver's own machine: train in the run directory, send nothing
            self.path, self.sent = Path(run_member_dir), set()
            return
        root = Path(os.environ.get(SCRATCH_ENV) or Path(tempfile.gettempdir()) / "eager-ensembles")
        self.path = root / given.scratch_name
        shutil.rmtree(self.path, ignore_errors=True)  # a dead actor's leftovers: the run directory decides
        receive(self.path, given.files)
        self.sent = {epoch for epoch, _ in list_checkpoints(self.path)}

    def news(self) -> Files:
        """Checkpoints the driver has not received yet, plus the current history and outcome."""
        if not self.remote:
            return {}
        files: Files = {}
        for epoch, path in list_checkpoints(self.path):
            if epoch not in self.sent:
                files.update(checkpoint_entries(path))
                self.sent.add(epoch)
        for name in (HISTORY, OUTCOME):
            if (self.path / name).exists():
                files[name] = (self.path / name).read_bytes()
        return files

    def close(self) -> None:
        """The member finished and the driver has (or is about to get) everything: free the disk."""
        if self.remote:
            shutil.rmtree(self.path, ignore_errors=True)
            with contextlib.suppress(OSError):  # the run's scratch directory, once its last member is done
                self.path.parent.rmdir()
