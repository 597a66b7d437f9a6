"""Driver side of node-local storage: what a (re)started member's actor is given to resume on
any node (see `workers.scratch` for the actor side and the files' path back)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from workers.checkpoints import load_latest_valid, sweep_temporaries
from workers.layout import OUTCOME
from workers.scratch import Files, Handoff, checkpoint_entries


def handoff(member_dir: Path, driver: str) -> Handoff:
    """Before (re)starting a member: its newest valid checkpoint (or its outcome once finished)
    and a scratch name unique to this run on any node."""
    member_dir = Path(member_dir).absolute()
    key = hashlib.sha256(str(member_dir.parent).encode()).hexdigest()[:10]
    sweep_temporaries(member_dir)  # a driver killed mid-write left these
    files: Files = {}
    if (member_dir / OUTCOME).exists():  # finished: the actor returns the outcome without training
        files[OUTCOME] = (member_dir / OUTCOME).read_bytes()
    else:
        latest, _ = load_latest_valid(member_dir)
        if latest is not None:
            files = checkpoint_entries(latest.path)
    return Handoff(driver, f"{member_dir.parent.name}-{key}/{member_dir.name}", files)
