"""Test accuracy against wall-clock, per saved epoch, for the ensemble and the baseline.

For every epoch k the ensemble is built from its members' checkpoints at k (or at a member's
last finite epoch when it stopped earlier) and placed at the moment its slowest member had
finished that epoch; the baseline at k is placed where it finished epoch k. Both clocks are
the run's measured training timelines, each from the start of its own phase; the combiner's
fit is not on this axis. Written to `accuracy_vs_time.csv` and `accuracy_vs_time.png` in the
run directory. A combiner fit costs seconds, so every evaluated checkpoint set is kept in
`accuracy_vs_time_cache.json` and read from there the next time.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ensemble.analysis.timeline import ready_seconds
from ensemble.builders import Autoencoders
from ensemble.config import CombinerConfig
from ensemble.report import RunReport
from ensemble.report.comparison import compare
from ensemble.report.plots import accuracy_vs_time_plot
from ensemble.report.statistics import format_p
from ensemble.runs.evaluation import Chosen
from ensemble.runs.runlock import run_lock
from ensemble.runs.saved_run import SavedRun, last_finite_epoch, open_run, used_members
from workers.layout import CURVES_CACHE, CURVES_CSV, CURVES_PNG, write_atomic
from workers.models import AutoencoderFactory

ENSEMBLE, BASELINE = "ensemble", "baseline"


@dataclass(frozen=True)
class CurvePoint:
    side: str                    # ENSEMBLE or BASELINE
    epoch: int
    seconds: float               # training wall-clock of the side when these checkpoints were all written
    checkpoints: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class CurveRow:
    side: str
    epoch: int
    seconds: float
    test_accuracy: float


@dataclass(frozen=True)
class Curves:
    rows: list[CurveRow]
    csv_path: Path
    png_path: Path
    computed: int                # combiner fits done now
    cached: int                  # points read from the cache
    equal_time: Optional[str]    # both sides compared when the ensemble finished training (None: no baseline)


def curve_points(report: RunReport) -> list[CurvePoint]:
    """Which checkpoints make each side's model at every saved epoch, and when they were ready."""
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
    return points


def cache_key(checkpoints: Chosen, combiner: CombinerConfig, seed: int) -> str:
    """What decides the accuracy, given the run's data: the checkpoints, the combiner and its seed."""
    return f"{combiner.kind}/{combiner.head}/seed{seed}:" + ",".join(f"{name}@{epoch}" for name, epoch in checkpoints)


def accuracy_vs_time(run_dir: str | Path, autoencoder: Autoencoders = None, dataset=None,
                     on_point: Optional[Callable[[CurveRow, bool], None]] = None, trust_code: bool = False,
                     baseline_autoencoder: Optional[AutoencoderFactory] = None) -> Curves:
    """Evaluate (or read from the cache) every point, then write the CSV and the PNG.

    `on_point(row, cached)` is called as each point is ready (fits take seconds each)."""
    saved = open_run(run_dir, autoencoder, dataset, trust_code, baseline_autoencoder)
    with run_lock(saved.run_dir):  # one writer of the cache, the CSV and the plot
        return _accuracy_vs_time(saved, on_point)


def _accuracy_vs_time(saved: SavedRun, on_point: Optional[Callable[[CurveRow, bool], None]]) -> Curves:
    points = curve_points(saved.report)
    saved.require_checkpoints(sorted({c for p in points for c in p.checkpoints}))
    cache = _read_cache(saved.run_dir)
    rows, predictions, computed = [], [], 0
    for point in points:
        key = cache_key(point.checkpoints, saved.config.combiner, saved.config.seed)
        hit = "predictions" in cache.get(key, {})  # entries from before predictions were kept count as misses
        if not hit:
            cache[key] = _evaluate(saved, point.checkpoints)
            computed += 1
            _write_cache(saved.run_dir, cache)  # after every fit, so an interrupted call keeps its work
        rows.append(CurveRow(point.side, point.epoch, point.seconds, cache[key]["test_accuracy"]))
        predictions.append(cache[key]["predictions"])
        if on_point:
            on_point(rows[-1], hit)
    csv_path, png_path = saved.run_dir / CURVES_CSV, saved.run_dir / CURVES_PNG
    _write_csv(rows, csv_path)
    accuracy_vs_time_plot({side: [(r.seconds, r.test_accuracy, r.epoch) for r in rows if r.side == side]
                           for side in (ENSEMBLE, BASELINE)},
                          saved.report.ensemble.untrained_test_accuracy, png_path)
    equal_time = equal_time_comparison(rows, predictions, saved.splits().test_y.tolist())
    return Curves(rows, csv_path, png_path, computed, len(rows) - computed, equal_time)


def equal_time_comparison(rows: list[CurveRow], predictions: list[list[int]], labels: list[int]) -> Optional[str]:
    """The paper's "better accuracy in the same time", tested: the ensemble when it finished training
    against the baseline's newest checkpoint at that moment, paired on the same test images."""
    ensemble = [i for i, r in enumerate(rows) if r.side == ENSEMBLE]
    if not ensemble or not any(r.side == BASELINE for r in rows):
        return None
    last = max(ensemble, key=lambda i: rows[i].seconds)
    at = rows[last].seconds
    earlier = [i for i, r in enumerate(rows) if r.side == BASELINE and r.seconds <= at]
    if not earlier:
        return (f"At equal wall-clock ({at:.1f} s, when the ensemble finished training) the baseline had not "
                "finished an epoch yet.")
    base = max(earlier, key=lambda i: rows[i].seconds)
    c = compare(predictions[last], predictions[base], labels, rows[last].seconds, rows[base].seconds)
    lo, hi = c.ci95
    return (f"At equal wall-clock ({at:.1f} s, when the ensemble finished training): ensemble "
            f"{c.ensemble_accuracy:.4f}, baseline {c.baseline_accuracy:.4f} after epoch {rows[base].epoch}: "
            f"{c.accuracy.replace('same', 'the same')} accuracy (difference {c.accuracy_difference:+.4f}, 95% CI "
            f"[{lo:+.4f}, {hi:+.4f}], McNemar p {format_p(c.mcnemar_p)}).")


def _evaluate(saved: SavedRun, checkpoints: Chosen) -> dict:
    score = saved.score(checkpoints, saved.config.combiner)
    return {"test_accuracy": score.test_accuracy, "combiner_seconds": score.seconds,
            "predictions": score.test_predictions.tolist()}


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
    writer.writerow(["side", "epoch", "seconds", "test_accuracy"])
    writer.writerows([r.side, r.epoch, f"{r.seconds:.3f}", repr(r.test_accuracy)] for r in rows)
    write_atomic(path, text.getvalue())
