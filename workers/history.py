"""One epoch's record, and the member's history.jsonl file (one JSON object a line)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Optional

from workers.layout import write_atomic


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    seconds: float

    @property
    def finite(self) -> bool:
        return math.isfinite(self.train_loss) and math.isfinite(self.val_loss)

    def to_json(self) -> dict:
        # JSON has no NaN: a diverged loss is written as null.
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, raw: dict) -> "EpochRecord":
        nan = float("nan")
        return cls(int(raw["epoch"]), _number(raw["train_loss"], nan), _number(raw["val_loss"], nan),
                   float(raw["seconds"]))


def _number(value: Optional[float], missing: float) -> float:
    return missing if value is None else float(value)


def write_history(path: Path, history: Iterable[EpochRecord]) -> None:
    """Rewrite the whole file atomically: it is tiny, and a resume must never see a torn line."""
    write_atomic(path, "".join(json.dumps(r.to_json()) + "\n" for r in history))


def read_history(path: Path) -> list[EpochRecord]:
    if not path.exists():
        return []
    return [EpochRecord.from_json(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
