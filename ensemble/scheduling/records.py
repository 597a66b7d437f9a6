"""A member's live state while the pool trains it (`MemberRecord`, filled from its events), and the
report entry built from it when it is done (`member_report`): the scheduler's per-member record,
kept next to the pool that owns it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import ray

from ensemble.builders import select_epoch
from ensemble.report.schema import EpochSpan, MemberReport
from workers.events import Done, EpochEnded, Event, Lost, Started
from workers.history import read_history
from workers.layout import HISTORY
from workers.outcome import Outcome


@dataclass
class MemberRecord:
    """What the driver learnt about one member while it trained."""
    outcome: Optional[Outcome] = None                     # None: lost (its actor died too often)
    placement: dict = field(default_factory=dict)
    epoch_spans: list[tuple[int, float, float]] = field(default_factory=list)  # (epoch, start, end)
    restarts: int = 0
    lost_reason: Optional[str] = None
    skipped_checkpoints: list[str] = field(default_factory=list)
    # its Done shipment in the object store, with the features its actor encoded when it finished (by epoch)
    shipment: Optional[ray.ObjectRef] = None

    def record(self, event: Event, phase_start: float) -> None:
        """Keep what the report needs from `event` (times relative to the phase's start)."""
        match event:
            case Started(placement=placement, skipped_checkpoints=skipped):
                self.placement = placement
                self.skipped_checkpoints += [s for s in skipped if s not in self.skipped_checkpoints]
            case EpochEnded(at=at, record=record):
                end = at - phase_start
                self.epoch_spans.append((record.epoch, end - record.seconds, end))
            case Done(outcome=outcome):
                self.outcome = outcome
            case Lost(reason=reason):
                self.lost_reason = reason


def member_report(index: int, name: str, run: MemberRecord, fixed_epoch: Optional[int],
                  member_dir: Path, architecture: Optional[dict] = None) -> MemberReport:
    """A member's (or, with index -1, the baseline's) entry: what it trained and which epoch is frozen."""
    kind = "baseline" if index < 0 else "member"
    timeline = [EpochSpan(epoch=e, start=s, end=f) for e, s, f in run.epoch_spans]
    common = dict(index=index, name=name, kind=kind, timeline=timeline, placement=run.placement,
                  restarts=run.restarts, skipped_checkpoints=run.skipped_checkpoints, architecture=architecture)
    if run.outcome is None:  # lost: what it trained is on disk, but it is not used
        history = read_history(member_dir / HISTORY)
        return MemberReport(
            **common, status="lost", epochs_trained=len(history), selected_epoch=None,
            stop_reason=f"lost: {run.lost_reason}", selection_reason="excluded: lost", diverged=False,
            train_seconds=sum(r.seconds for r in history), history=[r.to_json() for r in history])
    outcome = run.outcome
    selection = select_epoch(outcome.history, fixed_epoch)
    return MemberReport(
        **common, status=outcome.status, epochs_trained=outcome.epochs_trained, selected_epoch=selection.epoch,
        stop_reason=outcome.stop_reason, selection_reason=selection.reason, diverged=outcome.diverged,
        train_seconds=outcome.train_seconds, history=[r.to_json() for r in outcome.history])
