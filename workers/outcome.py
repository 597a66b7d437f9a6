"""How a member's training ended, kept as outcome.json in its directory: a restarted or resumed
run reads it and does not train a finished member again."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from workers.history import EpochRecord
from workers.layout import OUTCOME, write_atomic


@dataclass
class Outcome:
    history: list[EpochRecord]
    stop_reason: str
    diverged: bool
    train_seconds: float
    resumed_from: Optional[int] = None
    skipped_checkpoints: list[str] = field(default_factory=list)  # corrupt ones passed over on resume

    @property
    def epochs_trained(self) -> int:
        return len(self.history)

    @property
    def status(self) -> str:
        return "diverged" if self.diverged else "done"


def read_outcome(member_dir: Path) -> Optional[Outcome]:
    path = Path(member_dir) / OUTCOME
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    raw["history"] = [EpochRecord.from_json(r) for r in raw["history"]]
    return Outcome(**raw)


def write_outcome(member_dir: Path, outcome: Outcome) -> None:
    raw = asdict(outcome)
    raw["history"] = [r.to_json() for r in outcome.history]
    write_atomic(Path(member_dir) / OUTCOME, json.dumps(raw, indent=1))
