"""The report's entries, and the records they are built from: what the driver learnt about each
member while it trained (`MemberRecord`, kept by the scheduling pool) and what a fitted combiner
scored (`CombinerScore`, from `ensemble.runs.evaluation`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from classifier.combiner import EnsembleCombiner
from ensemble.builders import select_epoch
from ensemble.config import EnsembleConfig
from ensemble.data import Splits
from ensemble.report.diversity import Diversity, diversity
from ensemble.report.schema import BaselineReport, DatasetReport, EnsembleReport, EpochSpan, MemberReport
from workers.encoding import EncodedEpochs
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
    features: EncodedEpochs = field(default_factory=dict)  # what its actor encoded when it finished, by epoch

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


@dataclass
class CombinerScore:
    """A combiner fitted on frozen encoders, with its test accuracy and predictions, timed."""
    combiner: EnsembleCombiner
    test_accuracy: Optional[float]  # None: the run held out no test split (data.test_size=0)
    test_predictions: np.ndarray
    feature_seconds: float
    fit_seconds: float
    # each member's features, kept for its own head (`runs.evaluation.member_predictions`); not timed here
    train_features: Optional[Sequence[np.ndarray]] = field(default=None, repr=False)
    test_features: Optional[Sequence[np.ndarray]] = field(default=None, repr=False)

    @property
    def seconds(self) -> float:
        return self.feature_seconds + self.fit_seconds


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


def ensemble_report(config: EnsembleConfig, members_wall: float, slots: int, share: str, score: CombinerScore,
                    untrained: Optional[CombinerScore], members: list[MemberReport],
                    diversity: Optional[Diversity] = None) -> EnsembleReport:
    """The ensemble's entry: `members_wall` seconds of training in `slots` parallel slots of `share` each."""
    return EnsembleReport(
        parameters=total_parameters([m for m in members if m.selected_epoch is not None]), diversity=diversity,
        test_accuracy=score.test_accuracy, wall_seconds=members_wall + score.seconds,
        train_wall_seconds=members_wall, combiner_seconds=score.seconds,
        feature_seconds=score.feature_seconds, fit_seconds=score.fit_seconds,
        head_tolerance=getattr(score.combiner, "tol_", None),
        untrained_test_accuracy=untrained.test_accuracy if untrained is not None else None,
        members_used=[m.index for m in members if m.selected_epoch is not None],
        resources=f"{config.members} members x {share}", parallel_slots=slots)


def baseline_report(base: MemberReport, baseline_wall: float, share: str, score: CombinerScore,
                    width: float) -> BaselineReport:
    return BaselineReport(
        **base.model_dump(exclude={"test_accuracy"}), test_accuracy=score.test_accuracy,
        wall_seconds=baseline_wall + score.seconds, train_wall_seconds=baseline_wall,
        combiner_seconds=score.seconds, resources=share, width=width)


def total_parameters(members: Sequence[MemberReport]) -> Optional[int]:
    counts = [(m.architecture or {}).get("parameters") for m in members]
    known = [count for count in counts if count is not None]
    return sum(known) if counts and len(known) == len(counts) else None


def dataset_report(splits: Splits) -> DatasetReport:
    return DatasetReport(source=splits.source, image_shape=list(splits.image_shape), num_classes=splits.num_classes,
                         classes=list(splits.classes), labels=list(splits.label_values),
                         train=len(splits.train_y), val=len(splits.val_y), test=len(splits.test_y),
                         labelled=len(splits.labelled_y), labels_per_class=splits.data.labels_per_class if splits.data
                         else None, unlabelled=len(splits.unlabelled_x) if splits.unlabelled_x is not None else 0,
                         **(splits.record or {}))


def with_diversity(members: list[MemberReport], used: Sequence[str], member_predictions: Sequence[np.ndarray],
                   ensemble_predictions: np.ndarray, labels: Sequence[int]
                   ) -> tuple[list[MemberReport], Optional[Diversity]]:
    """Each used member's own test accuracy, and the ensemble's diversity; unchanged without a test split."""
    if not member_predictions or not len(labels):
        return members, None
    own = dict(zip(used, member_predictions, strict=True))
    truth = np.asarray(labels)
    members = [m.model_copy(update={"test_accuracy": float(np.mean(own[m.name] == truth)) if m.name in own
                                    else None}) for m in members]
    indices = {m.name: m.index for m in members}
    return members, diversity([indices[name] for name in used], member_predictions, ensemble_predictions, truth)
