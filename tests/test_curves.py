"""Accuracy against wall-clock: per saved epoch, checked against fits computed here directly."""

import csv

import pytest

import ensemble.analysis.curves
from ensemble import cli
from ensemble.analysis.curves import accuracy_vs_time, curve_points
from ensemble.config import EnsembleConfig
from ensemble.data import load_splits
from ensemble.report import EnsembleReport, RunReport
from ensemble.runs.evaluation import fit_and_score, load_autoencoder
from tests.tiny import made_up_member as member
from workers.layout import CURVES_CACHE, CURVES_CSV, CURVES_PNG
from workers.models import CAEFactory


def direct_accuracy(run_dir, report, name, epoch, width=1.0):
    """The figure the curve should show, computed here from the run's config without ensemble.curves."""
    config = EnsembleConfig.model_validate(report.config)
    splits = load_splits(config.data, config.seed)
    m = config.model
    factory = CAEFactory(splits.image_shape, m.channels, m.kernel_size, m.activation, m.pooling, width=width)
    names = [name] if name == "baseline" else [x.name for x in report.members]
    encoders = [load_autoencoder(factory, run_dir / n, epoch) for n in names]
    return fit_and_score(encoders, splits.train_x, splits.train_y, splits.test_x, splits.test_y,
                         config.combiner.kind, config.combiner.head, config.seed).test_accuracy


@pytest.mark.slow
def test_csv_and_png_agree_with_direct_per_epoch_figures(saved_run, monkeypatch):
    report = RunReport.read(saved_run)
    done = accuracy_vs_time(saved_run)
    assert (saved_run / CURVES_PNG).stat().st_size > 0 and (saved_run / CURVES_CACHE).is_file()
    with open(saved_run / CURVES_CSV) as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["side"], int(r["epoch"])) for r in rows] == [("ensemble", 1), ("ensemble", 2), ("ensemble", 3),
                                                           ("baseline", 1), ("baseline", 2), ("baseline", 3),
                                                           ("selected", 3)]
    # the selected ensemble (every member at epoch 3 here, the same checkpoints as the ensemble at 3) comes
    # from the run's own test predictions; the other five are fitted
    assert done.computed + done.cached == 7 and done.computed in (0, 5)
    ensemble_done = max(float(r["seconds"]) for r in rows if r["side"] == "ensemble")
    if any(r["side"] == "baseline" and float(r["seconds"]) <= ensemble_done for r in rows):
        assert done.equal_time.startswith("At equal wall-clock") and "McNemar p" in done.equal_time
    else:  # its own actor's start put the baseline's first epoch later than the whole ensemble
        assert done.equal_time.endswith("the baseline had not finished an epoch yet.")
    for row in rows[:-1]:
        side, epoch = row["side"], int(row["epoch"])
        width = report.baseline.width if side == "baseline" else 1.0
        assert float(row["test_accuracy"]) == direct_accuracy(saved_run, report, side, epoch, width), row
        sides = [report.baseline] if side == "baseline" else report.members
        ends = [next(s.end for s in m.timeline if s.epoch == epoch) for m in sides]
        assert float(row["seconds"]) == pytest.approx(max(ends), abs=1e-3)  # when its slowest member finished
    chosen = next(r for r in rows if r["side"] == "baseline" and int(r["epoch"]) == report.baseline.selected_epoch)
    assert float(chosen["test_accuracy"]) == report.baseline.test_accuracy  # the run's own figure, on the curve

    # the second time every point comes from the cache: a fit would fail here
    monkeypatch.setattr(ensemble.analysis.curves, "scored", lambda *a, **k: pytest.fail("refitted"))
    again = accuracy_vs_time(saved_run)
    assert (again.computed, again.cached) == (0, 7)
    assert [r.test_accuracy for r in again.rows] == [r.test_accuracy for r in done.rows]


@pytest.mark.slow
def test_cli_curves_reads_the_cache(saved_run, capsys):
    accuracy_vs_time(saved_run)  # fills the cache if the test above did not run
    assert cli.main(["curves", str(saved_run)]) == 0
    out = capsys.readouterr().out
    assert "0 point(s) fitted now, 7 read from the cache" in out and "(cached)" in out
    assert "At equal wall-clock" in out


def test_cli_curves_on_a_missing_run_exits_2(tmp_path, capsys):
    assert cli.main(["curves", str(tmp_path / "nope")]) == 2
    assert "does not exist" in " ".join(capsys.readouterr().err.split())


def test_a_member_that_stopped_early_is_held_at_its_last_epoch():
    slow, quick = member([10, 8, 7]), member([10, 9], seconds=3.0)
    slow = slow.model_copy(update={"name": "member_00"})
    quick = quick.model_copy(update={"index": 1, "name": "member_01"})
    used = EnsembleReport(test_accuracy=0, wall_seconds=0, train_wall_seconds=0, combiner_seconds=0,
                          feature_seconds=0, fit_seconds=0, untrained_test_accuracy=0, members_used=[0, 1],
                          resources="", parallel_slots=2)
    report = RunReport.model_construct(members=[slow, quick], baseline=None, ensemble=used)
    points = curve_points(report)
    assert [p.checkpoints for p in points] == [(("member_00", 1), ("member_01", 1)),
                                               (("member_00", 2), ("member_01", 2)),
                                               (("member_00", 3), ("member_01", 2)),
                                               (("member_00", 3), ("member_01", 2))]  # the run's selected ones
    assert [p.side for p in points] == ["ensemble", "ensemble", "ensemble", "selected"]
    assert [p.seconds for p in points] == [5.0, 8.0, 8.0, 8.0]  # the slower member finished 2 at 2 + 2 x 3 s
