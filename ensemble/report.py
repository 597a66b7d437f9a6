"""RunReport (the model behind report.json), the summary table, report.md and the plots."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

REPORT_JSON, REPORT_MD = "report.json", "report.md"


class Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class EpochEntry(Model):
    epoch: int
    train_loss: Optional[float]   # null when the loss was not finite
    val_loss: Optional[float]
    seconds: float


class EpochSpan(Model):
    epoch: int
    start: float                  # seconds since its phase began
    end: float


class MemberReport(Model):
    index: int
    name: str
    epochs_trained: int
    selected_epoch: Optional[int] = Field(description="checkpoint frozen for the combiner; null: excluded")
    stop_reason: str
    selection_reason: str
    diverged: bool
    train_seconds: float
    history: list[EpochEntry]
    timeline: list[EpochSpan] = []
    placement: dict[str, Any] = {}
    restarts: int = 0


class BaselineReport(MemberReport):
    test_accuracy: float
    wall_seconds: float = Field(description="baseline training + its combiner, as a user waits for it")
    train_wall_seconds: float
    combiner_seconds: float
    resources: str
    width: float


class EnsembleReport(Model):
    test_accuracy: float
    wall_seconds: float = Field(description="members in parallel + combiner, as a user waits for it")
    train_wall_seconds: float
    combiner_seconds: float
    feature_seconds: float
    fit_seconds: float
    untrained_test_accuracy: float = Field(description="the same combiner on the untrained (epoch 0) encoders")
    members_used: list[int]
    resources: str
    parallel_slots: int


class DatasetReport(Model):
    source: str
    image_shape: list[int]
    num_classes: int
    classes: list[str] = []       # class names, class i first (empty in reports from before they were kept)
    labels: list[Any] = []        # each class's label value as the dataset gives it; what predict() returns
    train: int
    val: int
    test: int


class RunReport(Model):
    name: str
    members: list[MemberReport]
    baseline: Optional[BaselineReport]
    ensemble: EnsembleReport
    speedup: Optional[float] = Field(description="baseline.wall_seconds / ensemble.wall_seconds")
    verdict: str
    dataset: DatasetReport
    config: dict[str, Any]

    def write(self, run_dir: Path) -> None:
        tmp = run_dir / f".{REPORT_JSON}.tmp-{os.getpid()}"
        tmp.write_text(self.model_dump_json(indent=2))
        os.replace(tmp, run_dir / REPORT_JSON)
        (run_dir / REPORT_MD).write_text(self.to_markdown())

    def to_markdown(self) -> str:
        return markdown(self)

    @classmethod
    def read(cls, run_dir: Path) -> "RunReport":
        return cls.model_validate(json.loads((Path(run_dir) / REPORT_JSON).read_text()))


def verdict(ensemble: EnsembleReport, baseline: Optional[BaselineReport], tolerance: float = 0.005) -> str:
    """What the measured figures say about the paper's claim, and no more."""
    gain = ensemble.test_accuracy - ensemble.untrained_test_accuracy
    training = (f" Autoencoder training changed the ensemble's accuracy by {gain:+.4f} against the same "
                f"combiner on the untrained encoders ({ensemble.untrained_test_accuracy:.4f}).")
    return _claim(ensemble, baseline, tolerance) + training


# What one run's figures say about the claim, by outcome of `claim_outcome`.
CLAIM_OUTCOMES = {
    "supports": "Supports the claim: same or better accuracy in less time",
    "supports-same-time": "Supports the claim: better accuracy in the same time",
    "better-not-faster": "Better accuracy but not in less time",
    "faster-less-accurate": "Faster but less accurate: does not support the claim",
    "neither": "Does not support the claim: neither faster nor more accurate",
}
TIME_TOLERANCE = 0.05  # wall-clocks within 5% of each other count as the same time


def claim_outcome(ensemble: EnsembleReport, baseline: BaselineReport, tolerance: float = 0.005) -> str:
    """A key of CLAIM_OUTCOMES: accuracy within `tolerance` counts as the same, and wall-clocks
    within TIME_TOLERANCE of the baseline's as the same time (a run is never "faster" by noise)."""
    margin = TIME_TOLERANCE * baseline.wall_seconds
    faster = ensemble.wall_seconds < baseline.wall_seconds - margin
    same_time = abs(ensemble.wall_seconds - baseline.wall_seconds) <= margin
    delta = ensemble.test_accuracy - baseline.test_accuracy
    if faster and delta >= -tolerance:
        return "supports"
    if same_time and delta > tolerance:
        return "supports-same-time"
    if not faster and delta > tolerance:
        return "better-not-faster"
    return "faster-less-accurate" if faster else "neither"


def _claim(ensemble: EnsembleReport, baseline: Optional[BaselineReport], tolerance: float) -> str:
    if baseline is None:
        return "No baseline was trained, so this run cannot test the claim."
    figures = (f"ensemble {ensemble.test_accuracy:.4f} in {ensemble.wall_seconds:.1f} s, "
               f"baseline {baseline.test_accuracy:.4f} in {baseline.wall_seconds:.1f} s")
    return f"{CLAIM_OUTCOMES[claim_outcome(ensemble, baseline, tolerance)]} ({figures})."


def summary_table(report: RunReport) -> str:
    e, b = report.ensemble, report.baseline
    lines = ["| | test accuracy | wall seconds | train seconds | combiner seconds | resources |",
             "|---|---|---|---|---|---|",
             f"| ensemble ({len(e.members_used)} members) | {e.test_accuracy:.4f} | {e.wall_seconds:.1f} | "
             f"{e.train_wall_seconds:.1f} | {e.combiner_seconds:.1f} | {e.resources} |"]
    if b is not None:
        lines.append(f"| baseline (width x{b.width:.2f}) | {b.test_accuracy:.4f} | {b.wall_seconds:.1f} | "
                     f"{b.train_wall_seconds:.1f} | {b.combiner_seconds:.1f} | {b.resources} |")
    lines.append(f"| untrained encoders (epoch 0) | {e.untrained_test_accuracy:.4f} | | | | |")
    speed = f"{report.speedup:.2f}x" if report.speedup is not None else "n/a"
    lines += ["", f"Speed-up (baseline wall / ensemble wall): {speed}", "",
              "| member | epochs | selected | stopped because |", "|---|---|---|---|"]
    rows = report.members + ([b] if b is not None else [])
    lines += [f"| {m.name} | {m.epochs_trained} | {m.selected_epoch if m.selected_epoch is not None else 'excluded'} "
              f"| {m.stop_reason} |" for m in rows]
    lines += ["", report.verdict]
    return "\n".join(lines)


def markdown(report: RunReport) -> str:
    d = report.dataset
    return "\n".join([
        f"# Run {report.name}", "",
        f"Data: {d.source}; {d.train} train / {d.val} validation / {d.test} test images of shape "
        f"{'x'.join(map(str, d.image_shape))}, {d.num_classes} classes.", "",
        summary_table(report), "",
        "![validation loss](loss_curves.png)", "", "![timeline](timeline.png)", "",
        "![accuracy and wall-clock](accuracy_time.png)", ""])
