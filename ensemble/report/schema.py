"""RunReport: the model behind report.json (the contract in docs/architecture.md), read here; `files`
writes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ensemble.report.comparison import Comparison
from ensemble.report.diversity import Diversity
from workers.layout import REPORT_JSON


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
    kind: Literal["member", "baseline"] = "member"
    status: Literal["done", "diverged", "lost", "truncated"] = Field(
        "done", description="done: stopped by its rule; diverged: non-finite loss; lost: its actor died too often; "
                            "truncated (`ensemble select` only): its saved history ends before the replayed rule stops")
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
    skipped_checkpoints: list[str] = Field([], description="corrupt checkpoints passed over when it resumed")
    architecture: Optional[dict[str, Any]] = Field(
        None, description="class (module:QualName), width, trainable parameters, and the built-in CAE's settings")
    test_accuracy: Optional[float] = Field(
        None, description="members: the same head kind fitted on this member's features alone; " + "null when the "
                          "run held out no test split")

    @model_validator(mode="before")
    @classmethod
    def _status_of_older_reports(cls, raw: Any) -> Any:
        """Reports written before `kind` and `status` existed: derive them once, here."""
        if isinstance(raw, dict) and "status" not in raw:
            lost = str(raw.get("stop_reason", "")).startswith("lost")
            raw = {**raw, "status": "lost" if lost else ("diverged" if raw.get("diverged") else "done")}
        if isinstance(raw, dict) and "kind" not in raw:
            raw = {**raw, "kind": "baseline" if raw.get("index") == -1 else "member"}
        return raw


WILSON = ("Wilson score 95% interval of the test accuracy; null without a test split or in reports from before "
          "it existed")
NO_TEST = "null when the run held out no test split (data.test_size=0, as the scikit-learn estimator fits)"


class BaselineReport(MemberReport):
    kind: Literal["member", "baseline"] = "baseline"
    test_accuracy: Optional[float] = Field(description=NO_TEST)
    test_accuracy_ci95: Optional[tuple[float, float]] = Field(None, description=WILSON)
    wall_seconds: float = Field(description="baseline training + its combiner, as a user waits for it")
    train_wall_seconds: float
    combiner_seconds: float
    resources: str
    width: float


class EnsembleReport(Model):
    test_accuracy: Optional[float] = Field(description=NO_TEST)
    test_accuracy_ci95: Optional[tuple[float, float]] = Field(None, description=WILSON)
    wall_seconds: float = Field(description="members in parallel + combiner, as a user waits for it")
    train_wall_seconds: float
    combiner_seconds: float
    feature_seconds: float
    fit_seconds: float
    head_tolerance: Optional[float] = Field(
        None, description="the logistic head's lbfgs tolerance, chosen by the rows it fitted on "
                          "(classifier.combiner.lbfgs_tolerance); null for the mlp head and older reports")
    untrained_test_accuracy: Optional[float] = Field(
        description="the same combiner on the untrained (epoch 0) encoders; " + NO_TEST)
    untrained_test_accuracy_ci95: Optional[tuple[float, float]] = Field(None, description=WILSON)
    members_used: list[int]
    resources: str
    parallel_slots: int
    parameters: Optional[int] = Field(None, description="trainable parameters of the members used, summed")
    diversity: Optional[Diversity] = Field(
        None, description="mean pairwise disagreement of the members' own heads, the matrix, and the ensemble "
                          "against its best member (null: no test split, or a report from before it existed)")


class DatasetReport(Model):
    source: str
    image_shape: list[int]
    num_classes: int
    classes: list[str] = []       # class names, class i first (empty in reports from before they were kept)
    labels: list[Any] = []        # each class's label value as the dataset gives it; what predict() returns
    train: int
    val: int
    test: int
    labelled: Optional[int] = Field(None, description="training images the combiner fitted on (null: reports from "
                                                      "before labels_per_class, when it was every training image)")
    labels_per_class: Optional[int] = Field(None, description="data.labels_per_class; null: every training image")
    unlabelled: int = Field(0, description="images without labels the autoencoders trained on besides `train`")
    name: Optional[str] = Field(None, description="data.name, or arrays for data given from Python")
    shape: Optional[list[int]] = Field(None, description="every image the data holds, N x C x H x W")
    dtype: Optional[str] = None
    class_counts: Optional[dict[str, int]] = Field(None, description="images per class, by label value")
    sha256: Optional[str] = Field(None, description="of the images' bytes and the labels: the same data, the same hash")


class RunReport(Model):
    """What a run measured, as report.json holds it: each member, the baseline, the ensemble, the
    speedup, the verdict and its paired test, the dataset and the config that ran.

    `RunResult.report` is one; `RunReport.model_validate_json` reads a report.json (a pydantic model).

    Examples
    --------
    >>> import ensemble
    >>> [key for key in ensemble.RunReport.model_fields][:5]
    ['name', 'members', 'baseline', 'ensemble', 'speedup']
    >>> from pathlib import Path
    >>> report = ensemble.RunReport.model_validate_json(Path("runs/exp1/report.json").read_text())  # doctest: +SKIP
    >>> report.ensemble.test_accuracy, report.speedup                                               # doctest: +SKIP
    (0.95..., 1.4...)
    """

    name: str
    members: list[MemberReport]
    baseline: Optional[BaselineReport]
    ensemble: EnsembleReport
    speedup: Optional[float] = Field(description="baseline.wall_seconds / ensemble.wall_seconds; "
                                     "comparison.training_speedup: the training phases alone")
    verdict: str
    comparison: Optional[Comparison] = Field(
        None, description="the paired test behind the verdict (absent in reports from before it existed)")
    dataset: DatasetReport
    config: dict[str, Any]
    run_id: Optional[str] = Field(
        None, description="the run's random id, in config.json and every checkpoint too (absent in older reports)")

    @property
    def sides(self) -> list[MemberReport]:
        """The members, then the baseline if one was trained."""
        return self.members + ([self.baseline] if self.baseline is not None else [])

    @classmethod
    def read(cls, run_dir: Path) -> "RunReport":
        return cls.model_validate(json.loads((Path(run_dir) / REPORT_JSON).read_text()))
