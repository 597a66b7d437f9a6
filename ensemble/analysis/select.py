"""Re-selection without training: another eager rule (or a fixed epoch) over a finished run.

The eager rules are pure functions of a loss history, so replaying one over each member's
saved history tells which epoch it would have stopped at; `select_epoch` then picks the
checkpoint, and the combiner is refitted on the saved checkpoints with the run's own splits.
The run's report stays as it was; each selection is written to
`RUN_DIR/selections/<rule>_<combiner>/` (report.json, report.md, plots).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from pydantic import BaseModel

from ensemble.analysis.timeline import ready_seconds
from ensemble.builders import Autoencoders, member_fixed_epoch, member_rule, select_epoch
from ensemble.config import CombinerConfig, EagerConfig, EnsembleConfig, build_config
from ensemble.report import BaselineReport, MemberReport, RunReport
from ensemble.report.entries import CombinerScore, total_parameters, with_diversity
from ensemble.report.files import write_report_files
from ensemble.report.plots import write_plots
from ensemble.report.tables import markdown
from ensemble.report.verdict import TestPredictions, verdict, with_accuracy_intervals
from ensemble.runs.evaluation import member_predictions
from ensemble.runs.runlock import run_lock
from ensemble.runs.saved_run import SavedRun, config_json, open_run, selected_checkpoints
from workers.errors import InputError
from workers.history import EpochRecord
from workers.layout import SELECTIONS
from workers.models import AutoencoderFactory
from workers.stopping import Decision

ALLOWED_SECTIONS = ("eager", "combiner")  # what can change without training
# A rule's parameter given without eager.rule names that rule: `--set eager.epoch=2` means epoch 2.
IMPLIED_RULE = {"eager.epoch": "fixed", "eager.threshold": "plateau", "eager.min_epochs": "plateau",
                "eager.budget_seconds": "budget"}


# --- pure decisions ---

def selection_config(run_config: EnsembleConfig, overrides: Sequence[str]) -> EnsembleConfig:
    """The run's config with eager.* / combiner.* overrides (anything else would need training)."""
    keys = [assignment.partition("=")[0].strip() for assignment in overrides]
    for assignment, key in zip(overrides, keys, strict=True):
        if key.split(".")[0] not in ALLOWED_SECTIONS or "." not in key:
            raise InputError(f"--set {assignment!r}: select re-chooses saved checkpoints and refits the combiner, "
                             f"so only eager.* and combiner.* keys may change; {key!r} would need training "
                             "(use `ensemble run`).")
    implied = sorted({IMPLIED_RULE[key] for key in keys if key in IMPLIED_RULE})
    if "eager.rule" not in keys and len(implied) > 1:
        raise InputError(f"the overrides set parameters of the {' and '.join(implied)} rules; say which rule "
                         "applies with --set eager.rule=...")
    if "eager.rule" not in keys and implied:
        overrides = [f"eager.rule={implied[0]}", *overrides]
    return build_config(run_config.model_dump(mode="json"), list(overrides))


def rule_label(eager: EagerConfig) -> str:
    """A short name for the rule and its parameters, e.g. plateau-0.05, fixed-3, budget-30s, none."""
    if eager.rule == "plateau":
        return f"plateau-{eager.threshold:g}" + (f"-min{eager.min_epochs}" if eager.min_epochs > 1 else "")
    if eager.rule == "fixed":
        return f"fixed-{eager.epoch}"
    if eager.rule == "budget":
        return f"budget-{eager.budget_seconds:g}s"
    return eager.rule


def selection_name(config: EnsembleConfig) -> str:
    """The selection's directory name: what was chosen, e.g. plateau-0.05_concat or fixed-2_soft-vote-mlp."""
    head = "" if config.combiner.head == CombinerConfig().head else f"-{config.combiner.head}"
    cap = "" if config.combiner.max_iter == CombinerConfig().max_iter else f"-iter{config.combiner.max_iter}"
    return f"{rule_label(config.eager)}_{config.combiner.kind}{head}{cap}"


@dataclass(frozen=True)
class Replay:
    trained: list[EpochRecord]   # the prefix of the saved history the rule would have trained
    decision: Optional[Decision]  # None: the saved history ended before the rule said stop


def replay(cfg: EagerConfig, history: Sequence[EpochRecord], max_epochs: int) -> Replay:
    """Ask the stop rule after every saved epoch, as the training loop did."""
    rule = member_rule(cfg, max_epochs)
    for n in range(1, len(history) + 1):
        decision = rule(history[:n])
        if decision.stop:
            return Replay(list(history[:n]), decision)
    return Replay(list(history), None)


def replay_member(member: MemberReport, cfg: EagerConfig, max_epochs: int) -> MemberReport:
    """The member as `cfg` would have trained and selected it, from its saved history.

    A lost member stays excluded. A fixed epoch the member never trained is an InputError
    (unless the member diverged before it, which excludes it, as in a run)."""
    if member.status == "lost":
        return member
    done = replay(cfg, [EpochRecord.from_json(h.model_dump()) for h in member.history], max_epochs)
    fixed = member_fixed_epoch(cfg)
    selection = select_epoch(done.trained, fixed)
    diverged = done.decision.diverged if done.decision else member.diverged
    if selection.epoch is None and fixed is not None and not diverged:
        raise InputError(f"{member.name} trained {len(done.trained)} epoch(s); epoch {fixed} is beyond what was "
                         f"trained. Choose eager.epoch between 1 and {len(done.trained)}.")
    last = len(done.trained)
    stop_reason = done.decision.reason if done.decision else (
        f"saved history ends at epoch {last} before this rule would stop (the run stopped it: {member.stop_reason})")
    status = ("diverged" if diverged else "done") if done.decision else "truncated"
    return member.model_copy(update=dict(
        status=status, epochs_trained=last, selected_epoch=selection.epoch, stop_reason=stop_reason,
        selection_reason=selection.reason, diverged=diverged, train_seconds=sum(r.seconds for r in done.trained),
        history=member.history[:last], timeline=[s for s in member.timeline if s.epoch <= last]))


def replayed_train_wall(original: RunReport, replayed: Sequence[MemberReport]) -> float:
    """When the members' phase would have ended: the slowest member's replayed stop epoch on the
    run's measured timeline, plus the run's own measured wind-down after its last epoch."""
    wind_down = original.ensemble.train_wall_seconds - ready_seconds((m, m.epochs_trained) for m in original.members)
    return ready_seconds((m, m.epochs_trained) for m in replayed) + max(0.0, wind_down)


def wall_clock_note(train_wall: float, member_seconds: float, combiner_seconds: float, queued: bool) -> str:
    note = (f"Members' wall-clock is replayed, not re-measured: the members' phase ends when the slowest member "
            f"finishes the epoch this rule stops it at, read from the run's measured per-epoch timeline, plus the "
            f"run's measured wind-down after its last epoch: {train_wall:.1f} s. Training time summed over members "
            f"(history seconds up to each stop epoch): {member_seconds:.1f} member-seconds. The combiner was "
            f"refitted now and timed ({combiner_seconds:.1f} s).")
    if queued:
        note += (" Members queued for CPU/GPU slots in this run; members that stop earlier would have freed slots "
                 "sooner, so the replayed wall-clock is an upper bound.")
    return note


class SelectionInfo(BaseModel):
    source_run: str
    chosen: str                  # the selection's directory name
    overrides: list[str]
    rule: dict
    combiner: dict
    wall_clock_method: str
    member_seconds: float
    truncated_members: list[str]
    refitted: list[str]          # what was fitted again now (the rest is copied from the run's report)


class SelectionReport(RunReport):
    selection: SelectionInfo

    def to_markdown(self) -> str:
        s = self.selection
        lines = [markdown(self), "## How this selection was made", "",
                 f"Re-selected from the saved checkpoints of run `{s.source_run}` without any training "
                 f"(`ensemble select` with {' '.join('--set ' + o for o in s.overrides) or 'no overrides'}).",
                 "", f"Rule: {rule_summary(s.rule)}; combiner: {s.combiner['kind']} ({s.combiner['head']} head).",
                 "", s.wall_clock_method, "", f"Fitted again now: {', '.join(s.refitted)}.", ""]
        return "\n".join(lines)


def rule_summary(rule: dict) -> str:
    parameters = {"plateau": ("threshold", "min_epochs"), "fixed": ("epoch",), "budget": ("budget_seconds",)}
    chosen = ", ".join(f"{key} {rule[key]}" for key in parameters.get(rule["rule"], ()))
    return rule["rule"] + (f" ({chosen})" if chosen else "")


def selection_verdict(report_verdict: str, truncated_names: Sequence[str]) -> str:
    if not truncated_names:
        return report_verdict
    return (report_verdict + f" Caution: {', '.join(truncated_names)} would have trained past the last saved epoch "
            "under this rule; the figures use what was saved, so they show less training than the rule asks for.")


# --- the command ---

@dataclass(frozen=True)
class SelectionResult:
    report: SelectionReport
    directory: Path


def reselect(run_dir: str | Path, overrides: Sequence[str] = (), autoencoder: Autoencoders = None,
             dataset=None, trust_code: bool = False, baseline_autoencoder: Optional[AutoencoderFactory] = None
             ) -> SelectionResult:
    """Re-select every member's checkpoint under `overrides` (eager.*, combiner.*), refit, report.

    Nothing trains and the run's own files are not touched; the selection is written to
    `run_dir/selections/<name>/`, replacing an earlier selection of the same name.
    """
    saved = open_run(run_dir, autoencoder, dataset, trust_code, baseline_autoencoder)
    with run_lock(saved.run_dir):  # one writer: two selections at once would mix their files
        return _reselect(saved, overrides)


def _reselect(saved: SavedRun, overrides: Sequence[str]) -> SelectionResult:
    original = saved.report
    config = selection_config(saved.config, overrides)
    members = [replay_member(m, config.eager, config.train.epochs) for m in original.members]
    used = [m for m in members if m.selected_epoch is not None]
    if len(used) < config.min_members:  # the same floor a run keeps
        excluded = "; ".join(f"{m.name}: {m.selection_reason}" for m in members if m.selected_epoch is None)
        raise InputError(f"under this rule only {len(used)} member(s) have a usable checkpoint, fewer than "
                         f"min_members={config.min_members} (excluded: {excluded}).")
    fitted = _refit(saved, config, used)
    train_wall = replayed_train_wall(original, members)
    score = fitted.score
    members, diversity = with_diversity(members, [m.name for m in used], member_predictions(
        score, saved.splits().labelled_y, config.combiner, config.seed), score.test_predictions,
        saved.splits().test_y.tolist())
    ensemble = original.ensemble.model_copy(update=dict(
        test_accuracy=score.test_accuracy, wall_seconds=train_wall + score.seconds, train_wall_seconds=train_wall,
        combiner_seconds=score.seconds, feature_seconds=score.feature_seconds, fit_seconds=score.fit_seconds,
        untrained_test_accuracy=fitted.untrained_accuracy, members_used=[m.index for m in used],
        parameters=total_parameters(used), diversity=diversity))
    baseline, name = fitted.baseline, selection_name(config)
    ensemble, baseline = with_accuracy_intervals(fitted.predictions, ensemble, baseline)
    comparison, text = verdict(fitted.predictions, ensemble, baseline)
    member_seconds = sum(m.train_seconds for m in members)
    cut = [m.name for m in members if m.status == "truncated"]
    report = SelectionReport(
        name=f"{original.name} / {name}", members=members, baseline=baseline, ensemble=ensemble,
        speedup=baseline.wall_seconds / ensemble.wall_seconds if baseline is not None else None,
        verdict=selection_verdict(text, cut), comparison=comparison, dataset=original.dataset,
        config=config_json(config),
        selection=SelectionInfo(
            source_run=original.name, chosen=name, overrides=list(overrides),
            rule=config.eager.model_dump(), combiner=config.combiner.model_dump(),
            wall_clock_method=wall_clock_note(train_wall, member_seconds, score.seconds,
                                              original.ensemble.parallel_slots < len(original.members)),
            member_seconds=member_seconds, truncated_members=cut, refitted=fitted.refitted))
    return SelectionResult(report, _write(saved, name, report, fitted.predictions))


@dataclass(frozen=True)
class Refitted:
    """What a selection fitted again, and what it reused of the run's own."""
    score: CombinerScore
    untrained_accuracy: Optional[float]
    baseline: Optional[BaselineReport]
    predictions: TestPredictions
    refitted: list[str]


def _refit(saved: SavedRun, config: EnsembleConfig, used: Sequence[MemberReport]) -> Refitted:
    """The ensemble's combiner on the selected checkpoints; the untrained reference and the baseline
    again only when this selection changes them (or the run kept no test predictions to reuse)."""
    original, kept = saved.report, TestPredictions.read(saved.run_dir)
    chosen = selected_checkpoints(used)
    same_combiner = config.combiner == saved.config.combiner
    same_untrained = kept is not None and same_combiner and [m.index for m in used] == original.ensemble.members_used
    saved.require_checkpoints(chosen + ([] if same_untrained else [(m.name, 0) for m in used]))
    score, refitted = saved.score(chosen, config.combiner), ["the ensemble's combiner"]
    untrained_accuracy, untrained = original.ensemble.untrained_test_accuracy, kept.untrained if kept else None
    if not same_untrained:
        again = saved.score([(m.name, 0) for m in used], config.combiner)
        untrained_accuracy, untrained = again.test_accuracy, again.test_predictions.tolist()
        refitted.append("the combiner on the untrained (epoch 0) encoders")
    baseline, baseline_predictions = original.baseline, kept.baseline if kept else None
    if baseline is not None and (not same_combiner or baseline_predictions is None):
        base_score = saved.score(selected_checkpoints([baseline]), config.combiner)
        baseline = baseline.model_copy(update=dict(
            test_accuracy=base_score.test_accuracy, combiner_seconds=base_score.seconds,
            wall_seconds=baseline.train_wall_seconds + base_score.seconds))
        baseline_predictions = base_score.test_predictions.tolist()
        refitted.append("the baseline's combiner")
    predictions = TestPredictions(labels=saved.splits().test_y.tolist(), ensemble=score.test_predictions.tolist(),
                                  untrained=untrained, baseline=baseline_predictions)
    return Refitted(score, untrained_accuracy, baseline, predictions, refitted)


def _write(saved: SavedRun, name: str, report: SelectionReport, predictions: TestPredictions) -> Path:
    """Write into a temporary directory, then swap it in: a failure never leaves half a selection."""
    parent = saved.run_dir / SELECTIONS
    target, tmp = parent / name, parent / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write_plots(report, tmp)
        predictions.write(tmp)
        write_report_files(report, tmp)
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
