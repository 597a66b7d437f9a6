"""Test accuracy against wall-clock, per saved epoch, for the ensemble and the baseline, and the
run's own selected ensemble among them.

For every epoch k the ensemble is built from its members' checkpoints at k (or at a member's
last finite epoch when it stopped earlier) and placed at the moment its slowest member had
finished that epoch; the baseline at k is placed where it finished epoch k. The run's selected
ensemble (each member's selected checkpoint, side `selected`) is placed where its last selected
checkpoint was written, with the run's own test predictions. Both clocks are the run's measured
training timelines, each from the start of its own phase; the combiner's fit is not on this axis.
Every accuracy carries its Wilson 95% interval. Written to `accuracy_vs_time.csv` and
`accuracy_vs_time.png` in the run directory. Each distinct checkpoint is encoded once and the
combiner fits run side by side (`classifier.side_by_side`), a batch at a time; every evaluated
checkpoint set is kept in `accuracy_vs_time_cache.json` and read from there the next time.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Optional

from classifier.side_by_side import available_cores, side_by_side
from ensemble.analysis.timeline import ready_seconds
from ensemble.builders import Autoencoders
from ensemble.config import CombinerConfig
from ensemble.report import RunReport
from ensemble.report.comparison import Comparison, accuracy_words, compare
from ensemble.report.plots import accuracy_vs_time_plot
from ensemble.report.statistics import accuracy_interval, chance_accuracy, format_p
from ensemble.report.verdict import TestPredictions
from ensemble.runs.evaluation import Chosen, checkpoint_features, factory_for, scored
from ensemble.runs.runlock import run_lock
from ensemble.runs.saved_run import SavedRun, last_finite_epoch, open_run, selected_checkpoints, used_members
from workers.layout import CURVES_CACHE, CURVES_CSV, CURVES_PNG, write_atomic
from workers.models import AutoencoderFactory

ENSEMBLE, BASELINE, SELECTED = "ensemble", "baseline", "selected"


@dataclass(frozen=True)
class CurvePoint:
    side: str                    # ENSEMBLE, BASELINE or SELECTED
    epoch: int                   # SELECTED: the newest of its checkpoints
    seconds: float               # training wall-clock of the side when these checkpoints were all written
    checkpoints: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class CurveRow:
    side: str
    epoch: int
    seconds: float
    test_accuracy: float
    ci95: tuple[float, float] = (float("nan"), float("nan"))   # Wilson score interval


@dataclass(frozen=True)
class Curves:
    rows: list[CurveRow]
    csv_path: Path
    png_path: Path
    computed: int                # combiner fits done now
    cached: int                  # points read from the cache or the run's own predictions
    equal_time: Optional[str]    # the selected ensemble against the baseline then (None: no baseline)


def curve_points(report: RunReport) -> list[CurvePoint]:
    """Which checkpoints make each side's model at every saved epoch, and when they were ready; the
    run's selected ensemble last."""
    used = used_members(report)
    last = {m.name: last_finite_epoch(m) for m in used}
    points = []
    for k in range(1, max(last.values(), default=0) + 1):
        epochs = [(m, min(k, last[m.name])) for m in used]
        points.append(CurvePoint(ENSEMBLE, k, ready_seconds(epochs), tuple((m.name, e) for m, e in epochs)))
    base = report.baseline
    if base is not None:
        points += [CurvePoint(BASELINE, k, ready_seconds([(base, k)]), ((base.name, k),))
                   for k in range(1, last_finite_epoch(base) + 1)]
    chosen = [(m, epoch) for m, (_, epoch) in zip(used, selected_checkpoints(used), strict=True)]
    if chosen:
        points.append(CurvePoint(SELECTED, max(e for _, e in chosen), ready_seconds(chosen),
                                 tuple((m.name, e) for m, e in chosen)))
    return points


def cache_key(checkpoints: Chosen, combiner: CombinerConfig, seed: int) -> str:
    """What decides the accuracy, given the run's data: the checkpoints, the combiner (its iteration cap
    when not the default, so earlier caches stay valid) and its seed."""
    cap = "" if combiner.max_iter == CombinerConfig().max_iter else f"/iter{combiner.max_iter}"
    members = ",".join(f"{name}@{epoch}" for name, epoch in checkpoints)
    return f"{combiner.kind}/{combiner.head}{cap}/seed{seed}:{members}"


def accuracy_vs_time(run_dir: str | Path, autoencoder: Autoencoders = None, dataset=None,
                     on_point: Optional[Callable[[CurveRow, bool], None]] = None, trust_code: bool = False,
                     baseline_autoencoder: Optional[AutoencoderFactory] = None) -> Curves:
    """Evaluate (or read from the cache) every point, then write the CSV and the PNG.

    `on_point(row, cached)` is called for each point, in order, once all are ready."""
    saved = open_run(run_dir, autoencoder, dataset, trust_code, baseline_autoencoder)
    with run_lock(saved.run_dir):  # one writer of the cache, the CSV and the plot
        return _accuracy_vs_time(saved, on_point)


def _accuracy_vs_time(saved: SavedRun, on_point: Optional[Callable[[CurveRow, bool], None]]) -> Curves:
    points = curve_points(saved.report)
    saved.require_checkpoints(sorted({c for p in points for c in p.checkpoints}))
    keys = [cache_key(p.checkpoints, saved.config.combiner, saved.config.seed) for p in points]
    cache = _run_own_prediction(saved, keys[-1]) if points and points[-1].side == SELECTED else {}
    cache |= _read_cache(saved.run_dir)
    missing: dict[str, Chosen] = {key: point.checkpoints for key, point in zip(keys, points, strict=True)
               if "predictions" not in cache.get(key, {})}  # entries from before predictions were kept: misses
    _evaluate_missing(saved, missing, cache)
    labels = saved.splits().test_y.tolist()
    rows = [CurveRow(p.side, p.epoch, p.seconds, cache[k]["test_accuracy"],
                     accuracy_interval(cache[k]["predictions"], labels)) for p, k in zip(points, keys, strict=True)]
    for row, key in zip(rows, keys, strict=True):
        if on_point:
            on_point(row, key not in missing)
    csv_path, png_path = saved.run_dir / CURVES_CSV, saved.run_dir / CURVES_PNG
    _write_csv(rows, csv_path)
    comparison = saved.report.comparison
    accuracy_vs_time_plot({side: [(r.seconds, r.test_accuracy, r.epoch, *r.ci95) for r in rows if r.side == side]
                           for side in (ENSEMBLE, BASELINE, SELECTED)},
                          saved.report.ensemble.untrained_test_accuracy,
                          comparison.chance_accuracy if comparison else chance_accuracy(labels), png_path)
    predictions = [cache[k]["predictions"] for k in keys]
    equal_time = equal_time_comparison(rows, predictions, labels, points, comparison)
    return Curves(rows, csv_path, png_path, len(missing), len(rows) - len(missing), equal_time)


def _run_own_prediction(saved: SavedRun, key: str) -> dict:
    """The selected ensemble's test predictions as the run itself made them (test_predictions.json): the
    curve shows the run's own figure, not a refit."""
    own = TestPredictions.read(saved.run_dir)
    if own is None or saved.report.ensemble.test_accuracy is None:
        return {}
    return {key: {"test_accuracy": saved.report.ensemble.test_accuracy, "predictions": own.ensemble}}


def _evaluate_missing(saved: SavedRun, missing: dict[str, Chosen], cache: dict) -> None:
    """Fit every missing point's combiner, a batch of side-by-side fits at a time (one per core), each
    distinct checkpoint encoded once; the cache is written after every batch, so an interrupted call
    keeps its work."""
    splits, combiner, seed = saved.splits(), saved.config.combiner, saved.config.seed
    needed = sorted({c for checkpoints in missing.values() for c in checkpoints})
    factories, layouts = saved.factories(needed), saved.layouts()
    features = {(name, epoch): checkpoint_features(factory_for(factories, name), saved.run_dir / name, epoch,
                                                   splits, {}, layouts[name]) for name, epoch in needed}
    keys, batch = list(missing), available_cores()
    for start in range(0, len(keys), batch):
        chunk = keys[start:start + batch]
        scores = side_by_side([partial(scored, [features[c] for c in missing[key]], splits, combiner, seed, 0.0)
                               for key in chunk])
        for key, score in zip(chunk, scores, strict=True):
            cache[key] = {"test_accuracy": score.test_accuracy, "combiner_seconds": score.seconds,
                          "predictions": score.test_predictions.tolist()}
        _write_cache(saved.run_dir, cache)


def equal_time_comparison(rows: list[CurveRow], predictions: list[list[int]], labels: list[int],
                          points: list[CurvePoint], run_comparison: Optional[Comparison] = None) -> Optional[str]:
    """The paper's "better accuracy in the same time", tested: the run's selected ensemble when its last
    selected checkpoint was written, against the baseline's newest checkpoint at that moment, paired on
    the same test images; then the run's own verdict beside it, and why the two differ when they do."""
    chosen = [i for i, r in enumerate(rows) if r.side == SELECTED]
    if not chosen or not any(r.side == BASELINE for r in rows):
        return None
    at = rows[chosen[0]].seconds
    which = ("the run's selected ensemble (" + ", ".join(f"{name} epoch {epoch}"
                                                         for name, epoch in points[chosen[0]].checkpoints) + ")")
    earlier = [i for i, r in enumerate(rows) if r.side == BASELINE and r.seconds <= at]
    if not earlier:
        return (f"At equal wall-clock ({at:,.1f} s, when {which} was ready) the baseline had not finished an "
                "epoch yet.")
    base = max(earlier, key=lambda i: rows[i].seconds)
    c = compare(predictions[chosen[0]], predictions[base], labels, rows[chosen[0]].seconds, rows[base].seconds)
    assert c.ci95 is not None and c.accuracy is not None and c.mcnemar_p is not None  # compared with a baseline
    lo, hi = c.ci95
    text = (f"At equal wall-clock ({at:,.1f} s of training, when {which} was ready): ensemble "
            f"{c.ensemble_accuracy:.4f}, baseline {c.baseline_accuracy:.4f} after epoch {rows[base].epoch}: "
            f"{accuracy_words(c.accuracy, c.n)} (difference {c.accuracy_difference:+.4f}, 95% CI "
            f"[{lo:+.4f}, {hi:+.4f}], McNemar p {format_p(c.mcnemar_p)}).")
    return text + verdicts_side_by_side(c, run_comparison, rows[base].epoch)


def verdicts_side_by_side(equal_time: Comparison, run: Optional[Comparison], baseline_epoch: int) -> str:
    """The run's own accuracy call beside the equal-time one, and why they differ when they do: never
    two verdicts that silently disagree."""
    if run is None or run.accuracy is None or run.mcnemar_p is None:  # the two are set together
        return ""
    text = (f" The run's own verdict compares the same ensemble with the baseline's selected checkpoint: "
            f"{accuracy_words(run.accuracy, run.n)} (McNemar p {format_p(run.mcnemar_p)}).")
    if run.accuracy != equal_time.accuracy:
        text += (f" The two calls differ because the baseline differs: here it is stopped at the same training "
                 f"time (epoch {baseline_epoch}), there it trained until its own rule stopped it.")
    return text


def _read_cache(run_dir: Path) -> dict:
    path = run_dir / CURVES_CACHE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:  # a damaged cache only costs recomputation
        return {}


def _write_cache(run_dir: Path, cache: dict) -> None:
    write_atomic(run_dir / CURVES_CACHE, json.dumps(cache, indent=1, sort_keys=True))


def _write_csv(rows: list[CurveRow], path: Path) -> None:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["side", "epoch", "seconds", "test_accuracy", "ci95_low", "ci95_high"])
    writer.writerows([r.side, r.epoch, f"{r.seconds:.3f}", repr(r.test_accuracy), f"{r.ci95[0]:.4f}",
                      f"{r.ci95[1]:.4f}"] for r in rows)
    write_atomic(path, text.getvalue())
