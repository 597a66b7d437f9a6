"""Test accuracy against the number of labelled images per class, from a finished run's checkpoints.

The paper's setting is little labelled data: the autoencoders learn from images alone and only the
combiner needs labels. For every count k of `per_class` and each of `draws` seeded draws, k training
images of every class keep their labels and only the heads are fitted again, for three sides on the
same draw: the ensemble's selected checkpoints, the same members untrained (epoch 0) and the
baseline's selected checkpoint. The draws are shared, so the differences between sides are paired.
Each side's features are computed once; a point costs a head fit. No autoencoder trains, no
checkpoint is written and the run's report is unchanged: labels.json and labels.png are added.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from classifier.combiner import fit_combiner
from classifier.features import member_features
from ensemble.builders import Autoencoders
from ensemble.data.labelled import labelled_subset
from ensemble.report.plots import labels_plot
from ensemble.report.statistics import chance_accuracy, mean_test, p_text
from ensemble.runs.evaluation import Chosen, load_autoencoder
from ensemble.runs.runlock import run_lock
from ensemble.runs.saved_run import SavedRun, open_run, selected_checkpoints, used_members
from workers.errors import InputError
from workers.layout import LABELS_JSON, LABELS_PNG, write_atomic
from workers.models import AutoencoderFactory

ENSEMBLE, UNTRAINED, BASELINE = "ensemble", "untrained", "baseline"
DIFFERENCES = {"ensemble_minus_baseline": (ENSEMBLE, BASELINE), "ensemble_minus_untrained": (ENSEMBLE, UNTRAINED)}


@dataclass(frozen=True)
class LabelsRow:
    per_class: int
    labelled: int                      # labelled training images in all (per_class x classes)
    accuracy: dict[str, list[float]]   # side -> test accuracy on each draw, draw 0 first

    def estimate(self, side: str) -> dict:
        """Mean and 95% t interval over the draws (null with one draw, or when every draw scored the same),
        clipped to [0, 1]: with few draws the t interval can reach past what an accuracy can be."""
        mean, ci, _ = mean_test(self.accuracy[side])
        clipped = [max(ci[0], 0.0), min(ci[1], 1.0)] if ci else None
        return {"mean": mean, "ci95": clipped, "draws": self.accuracy[side]}

    def difference(self, first: str, second: str) -> Optional[dict]:
        """`first` minus `second`, paired by draw: mean, 95% t interval and the t-test's p against 0."""
        if first not in self.accuracy or second not in self.accuracy:
            return None
        values = [a - b for a, b in zip(self.accuracy[first], self.accuracy[second], strict=True)]
        mean, ci, p = mean_test(values)
        return {"mean": mean, "ci95": list(ci) if ci else None, "p": p, "draws": values}

    def to_json(self) -> dict:
        row: dict[str, object] = {"per_class": self.per_class, "labelled": self.labelled}
        row.update({side: self.estimate(side) for side in self.accuracy})
        row.update({key: diff for key, (a, b) in DIFFERENCES.items() if (diff := self.difference(a, b))})
        return row


@dataclass(frozen=True)
class LabelCurve:
    run: str
    draws: int
    rows: list[LabelsRow]
    json_path: Path
    png_path: Path


def parse_counts(text: str) -> list[int]:
    """'1,5,10' -> [1, 5, 10]: whole numbers of at least 1, each once, in increasing order."""
    try:
        counts = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise InputError(f"--per-class takes whole numbers separated by commas, such as 1,5,10; got {text!r}."
                         ) from None
    if not counts or counts[0] < 1:
        raise InputError(f"--per-class needs counts of at least 1 labelled image per class; got {text!r}.")
    return counts


def side_checkpoints(saved: SavedRun) -> dict[str, Chosen]:
    """Each side's checkpoints: the ensemble's selected ones, the same members at epoch 0, the baseline's."""
    used = used_members(saved.report)
    sides: dict[str, Chosen] = {ENSEMBLE: selected_checkpoints(used), UNTRAINED: [(m.name, 0) for m in used]}
    base = saved.report.baseline
    if base is not None and base.selected_epoch is not None:
        sides[BASELINE] = [(base.name, base.selected_epoch)]
    return sides


def label_curve(run_dir: str | Path, per_class: Sequence[int], draws: int = 5,
                autoencoder: Autoencoders = None, dataset=None,
                on_row: Optional[Callable[[LabelsRow], None]] = None, trust_code: bool = False,
                baseline_autoencoder: Optional[AutoencoderFactory] = None) -> LabelCurve:
    """Fit the heads on every count's draws, then write labels.json and labels.png into `run_dir`.

    Every input (counts larger than the smallest class, missing checkpoints) is checked before any fit.
    `on_row(row)` is called as each count is done."""
    if draws < 1:
        raise InputError(f"--draws must be at least 1; got {draws}.")
    saved = open_run(run_dir, autoencoder, dataset, trust_code, baseline_autoencoder)
    with run_lock(saved.run_dir):  # one writer of labels.json and labels.png
        return _label_curve(saved, per_class, draws, on_row)


def _label_curve(saved: SavedRun, per_class: Sequence[int], draws: int,
                 on_row: Optional[Callable[[LabelsRow], None]]) -> LabelCurve:
    sides = side_checkpoints(saved)
    saved.require_checkpoints(sorted({c for chosen in sides.values() for c in chosen}))
    splits, seed = saved.splits(), saved.config.seed
    subsets = {k: [labelled_subset(splits.train_y.numpy(), k, (seed, draw), splits.classes, "--per-class")
                   for draw in range(draws)] for k in per_class}
    features = {side: _features(saved, chosen) for side, chosen in sides.items()}
    rows = []
    for k in per_class:
        accuracy = {side: [_head_accuracy(saved, train, test, subset) for subset in subsets[k]]
                    for side, (train, test) in features.items()}
        rows.append(LabelsRow(k, len(subsets[k][0]), accuracy))
        if on_row:
            on_row(rows[-1])
    curve = LabelCurve(saved.report.name, draws, rows, saved.run_dir / LABELS_JSON, saved.run_dir / LABELS_PNG)
    _write(curve, saved, sides)
    return curve


def _features(saved: SavedRun, chosen: Chosen) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The frozen checkpoints' features of every training image and of the test images."""
    splits = saved.splits()
    factories, layouts = saved.factories(chosen), saved.layouts()
    autoencoders = [load_autoencoder(factories[name], saved.run_dir / name, epoch, layouts[name])
                    for name, epoch in chosen]
    return member_features(autoencoders, splits.train_x), member_features(autoencoders, splits.test_x)


def _head_accuracy(saved: SavedRun, train: list[np.ndarray], test: list[np.ndarray], subset: np.ndarray) -> float:
    """The run's combiner fitted on the labelled `subset` of the training features, scored on test."""
    splits, combiner = saved.splits(), saved.config.combiner
    head, _ = fit_combiner(combiner.kind, combiner.head, [f[subset] for f in train], splits.train_y.numpy()[subset],
                           random_state=saved.config.seed, max_iter=combiner.max_iter, who="a label curve's")
    return float(np.mean(head.predict_members(test) == splits.test_y.numpy()))


def _write(curve: LabelCurve, saved: SavedRun, sides: dict[str, Chosen]) -> None:
    splits = saved.splits()
    document = {"run": curve.run, "draws": curve.draws, "seed": saved.config.seed,
                "combiner": {"kind": saved.config.combiner.kind, "head": saved.config.combiner.head},
                "train_images": len(splits.train_y), "test_images": len(splits.test_y),
                "checkpoints": {side: [list(c) for c in chosen] for side, chosen in sides.items()},
                "rows": [row.to_json() for row in curve.rows]}
    write_atomic(curve.json_path, json.dumps(document, indent=2))
    series = {}
    for side in sides:
        points = []
        for row in curve.rows:
            estimate = row.estimate(side)
            low, high = estimate["ci95"] or (estimate["mean"], estimate["mean"])
            points.append((row.per_class, estimate["mean"], low, high))
        series[side] = points
    labels_plot(series, chance_accuracy(splits.test_y.numpy()), curve.png_path)


def labels_table(curve: LabelCurve) -> str:
    """The console's (and the docs') table: each side's mean [95% CI], and the paired differences."""
    sides = [side for side in (ENSEMBLE, UNTRAINED, BASELINE) if side in curve.rows[0].accuracy]
    diffs = [key for key, (a, b) in DIFFERENCES.items() if b in sides]
    header = ["labels per class", "labelled"] + sides + [key.replace("_minus_", " - ") for key in diffs]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in curve.rows:
        cells = [str(row.per_class), f"{row.labelled:,}"]
        cells += [_interval(row.estimate(side)) for side in sides]
        cells += [_interval(row.difference(*DIFFERENCES[key]), signed=True) for key in diffs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + (f"\n\nMeans over {curve.draws} label draws; intervals: 95% t intervals over the draws"
                               "; p: paired t-test over the draws.")


def _interval(value: Optional[dict], signed: bool = False) -> str:
    if value is None:  # a difference with a side that did not run
        return "n/a"
    form = "+.3f" if signed else ".3f"
    text = format(value["mean"], form)
    if value["ci95"]:
        text += f" [{value['ci95'][0]:{form}}, {value['ci95'][1]:{form}}]"
    if signed and value.get("p") is not None:
        text += f" p {p_text(value['p'])}"
    return text
