"""The report's entries, built from what the pool learnt and what the combiners scored."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

from ensemble.builders import select_epoch
from ensemble.config import EnsembleConfig
from ensemble.data import Splits
from ensemble.report import BaselineReport, DatasetReport, EnsembleReport, EpochSpan, MemberReport
from ensemble.runs.evaluation import CombinerScore
from ensemble.scheduling.placement import Share
from ensemble.scheduling.pool import MemberRun
from workers.history import read_history
from workers.layout import HISTORY

if TYPE_CHECKING:
    from ensemble.job.driver import Phases


def member_report(index: int, name: str, run: MemberRun, fixed_epoch: Optional[int], member_dir: Path) -> MemberReport:
    """A member's (or, with index -1, the baseline's) entry: what it trained and which epoch is frozen."""
    kind = "baseline" if index < 0 else "member"
    timeline = [EpochSpan(epoch=e, start=s, end=f) for e, s, f in run.epoch_spans]
    common = dict(index=index, name=name, kind=kind, timeline=timeline, placement=run.placement,
                  restarts=run.restarts, skipped_checkpoints=run.skipped_checkpoints)
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


def ensemble_report(config: EnsembleConfig, phases: Phases, score: CombinerScore, untrained: Optional[CombinerScore],
                    members: list[MemberReport], share: Share) -> EnsembleReport:
    return EnsembleReport(
        test_accuracy=score.test_accuracy, wall_seconds=phases.members_wall + score.seconds,
        train_wall_seconds=phases.members_wall, combiner_seconds=score.seconds,
        feature_seconds=score.feature_seconds, fit_seconds=score.fit_seconds,
        untrained_test_accuracy=untrained.test_accuracy if untrained is not None else None,
        members_used=[m.index for m in members if m.selected_epoch is not None],
        resources=f"{config.members} members x {share.describe()}", parallel_slots=phases.slots)


def baseline_report(base: MemberReport, phases: Phases, score: CombinerScore, width: float) -> BaselineReport:
    return BaselineReport(
        **base.model_dump(), test_accuracy=score.test_accuracy,
        wall_seconds=phases.baseline_wall + score.seconds, train_wall_seconds=phases.baseline_wall,
        combiner_seconds=score.seconds, resources=phases.baseline_share.describe(), width=width)


def dataset_report(splits: Splits) -> DatasetReport:
    return DatasetReport(source=splits.source, image_shape=list(splits.image_shape), num_classes=splits.num_classes,
                         classes=list(splits.classes), labels=list(splits.label_values),
                         train=len(splits.train_y), val=len(splits.val_y), test=len(splits.test_y))
