"""Step 4, evaluate: pick each member's checkpoint (and the baseline's), freeze the encoders, fit
each side's combiner and score it on the test split. What it found is an `Evaluation`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import ray

from classifier.persistence import save_combiner
from ensemble.builders import member_fixed_epoch
from ensemble.job.failures import diverged
from ensemble.job.prepare import Plan
from ensemble.job.train_members import Phases
from ensemble.report import BaselineReport, EnsembleReport, MemberReport
from ensemble.report.entries import CombinerScore, baseline_report, ensemble_report, with_diversity
from ensemble.report.verdict import TestPredictions
from ensemble.runs.evaluation import recorded_layouts, score_checkpoints, score_run
from ensemble.scheduling.beside import FitsBeside
from ensemble.scheduling.pool import too_few_members
from ensemble.scheduling.records import MemberRecord, member_report
from workers.layout import BASELINE, COMBINER, member_name


@dataclass(frozen=True)
class Evaluation:
    members: list[MemberReport]
    ensemble: EnsembleReport
    baseline: Optional[BaselineReport]
    score: CombinerScore
    predictions: Optional[TestPredictions]  # each side's on the same test images (None: no test split)



def run(plan: Plan, run_dir: Path, phases: Phases, fits: FitsBeside) -> Evaluation:
    """Select each member's checkpoint, freeze the encoders, fit the combiners, score on test; the fits
    run beside the features the actors sent, in the object store (`scheduling.beside`)."""
    config = plan.config
    fixed = member_fixed_epoch(config.eager)
    members = [member_report(i, member_name(i), phases.members[member_name(i)], fixed, run_dir / member_name(i),
                             plan.architectures.get(member_name(i))) for i in range(config.members)]
    if all(m.status == "diverged" for m in members):
        raise diverged("every member", config.train.lr)
    chosen = chosen_checkpoints(members)
    problem = too_few_members([name for name, _ in chosen],
                              {m.name: m.stop_reason for m in members if m.selected_epoch is None}, config.min_members)
    if problem:
        raise RuntimeError(problem)
    factories = plan.factories()
    scores = fits(score_run, plan.splits.test_y, sent_features(phases.members), factories, run_dir, chosen,
                  config.combiner, config.seed, layouts=recorded_layouts(members))
    score, untrained, alone = scores.ensemble, scores.untrained, scores.alone  # untrained: None without a test split
    save_combiner(score.combiner, run_dir / COMBINER)
    members, diversity = with_diversity(members, [name for name, _ in chosen], alone,
                                        score.test_predictions, plan.splits.test_y.tolist())
    ensemble = ensemble_report(config, phases.members_wall, phases.slots, plan.member_share.describe(), score,
                               untrained, members, diversity)
    predictions = None if untrained is None else TestPredictions(
        labels=plan.splits.test_y.tolist(), ensemble=score.test_predictions.tolist(),
        untrained=untrained.test_predictions.tolist())
    baseline = None
    if phases.baseline is not None:
        base = member_report(-1, BASELINE, phases.baseline, None, run_dir / BASELINE, plan.architectures.get(BASELINE))
        if base.selected_epoch is None and base.status == "diverged":
            raise diverged("the baseline", config.train.lr)
        if base.selected_epoch is None:
            raise RuntimeError(f"the baseline has no usable checkpoint ({base.stop_reason}).")
        assert plan.baseline_factory is not None  # a baseline was trained
        base_score = fits(score_checkpoints, plan.splits.test_y, sent_features({BASELINE: phases.baseline}),
                          plan.baseline_factory, run_dir, [(BASELINE, base.selected_epoch)], config.combiner,
                          config.seed, who="the baseline's", layouts=recorded_layouts([base]))
        save_combiner(base_score.combiner, run_dir / BASELINE / COMBINER)
        baseline = baseline_report(base, phases.baseline_wall, phases.baseline_share.describe(), base_score,
                                   getattr(plan.baseline_factory, "width", 1.0))
        if predictions is not None:
            predictions.baseline = base_score.test_predictions.tolist()
    return Evaluation(members, ensemble, baseline, score, predictions)


def sent_features(runs: dict[str, MemberRecord]) -> dict[str, ray.ObjectRef]:
    """The shipments holding the features each member's actor sent when it finished (references into the
    object store), taken out of their run records: once the fits are done the store frees them."""
    sent = {}
    for name, member in runs.items():
        if member.shipment is not None:
            sent[name], member.shipment = member.shipment, None
    return sent


def chosen_checkpoints(members: list[MemberReport]) -> list[tuple[str, int]]:
    """(member, selected epoch) of every usable member, in member order."""
    return [(m.name, m.selected_epoch) for m in members if m.selected_epoch is not None]
