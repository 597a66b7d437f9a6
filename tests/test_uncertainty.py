"""Verdicts and pictures that carry their uncertainty: words that match the test, time split into
training and combiner, each accuracy with its Wilson interval, plots from zero with chance drawn, and
`curves` placing the run's own selected ensemble. Pure parts without Ray; then tiny real runs."""

import csv

import matplotlib.pyplot as plt
import numpy as np
import pytest
from sklearn.datasets import load_digits

import ensemble
from ensemble.analysis.curves import accuracy_vs_time, verdicts_side_by_side
from ensemble.config import build_config
from ensemble.console import aligned
from ensemble.report import BaselineReport, EnsembleReport, RunReport, plots, summary_table
from ensemble.report.comparison import compare
from ensemble.report.plots import accuracy_bars, draw_accuracy_panel, legend_labels, plain_ticks
from ensemble.report.statistics import wilson_interval
from tests.predictions import LABELS, predicted
from tests.tiny import TINY, made_up_member
from workers.history import EpochRecord
from workers.stopping import EagerStop


def a_tie(seconds, train_seconds):
    """The same predictions quality on both sides (no detectable difference), timed as given."""
    return compare(predicted(0.95, 1), predicted(0.95, 3), LABELS, *seconds, *train_seconds)


# --- the time cell, end to end and on training alone ---

def test_the_time_cell_that_the_combiner_decided_says_so():
    # end to end 20 s against 30 s (faster); training alone 19 s against 19.5 s (within the 5% band)
    c = a_tie((20.0, 30.0), (19.0, 19.5))
    assert (c.outcome, c.time, c.training_time) == ("same-accuracy-faster", "faster", "same")
    assert c.speedup == pytest.approx(1.5) and c.training_speedup == pytest.approx(19.5 / 19.0)
    assert c.timing_note == (
        "The time cell rests on one measurement on this machine (speed-up 1.50x end to end, 1.03x on training "
        "alone: 19.0 s against 19.5 s). On training time alone it would read \"in the same time\": the combiner "
        "fits (1.0 s against 10.5 s) decided it.")
    assert c.text.endswith(c.timing_note)


def test_a_time_cell_that_training_decides_only_says_it_is_one_measurement():
    c = a_tie((20.0, 30.0), (18.0, 28.0))
    assert c.time == c.training_time == "faster"
    assert "would read" not in c.timing_note and "one measurement on this machine" in c.timing_note


def test_a_verdict_at_chance_has_no_timing_note_to_distract():
    c = compare(predicted(0.1, 1), predicted(0.1, 3), LABELS, 20.0, 30.0, 19.0, 19.5)
    assert c.outcome == "not-testable-at-chance" and c.timing_note == ""


def test_each_accuracy_carries_its_wilson_interval():
    c = a_tie((20.0, 30.0), (19.0, 19.5))
    correct = int(np.sum(np.asarray(predicted(0.95, 1)) == LABELS))
    assert c.ensemble_accuracy_ci95 == wilson_interval(correct, LABELS.size)
    low, high = c.baseline_accuracy_ci95
    assert low < c.baseline_accuracy < high and high - low < 0.04  # 1,000 images: about +-1.4 points


def test_wilson_matches_the_published_example():
    # Newcombe (1998) table I, 81 of 263: 0.2553 to 0.3662 (Wilson, no continuity correction)
    low, high = wilson_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)


# --- texts ---

def test_a_plateau_stop_on_a_loss_that_got_worse_reads_right():
    rule = EagerStop(rule="plateau", threshold=0.2, max_epochs=10)
    history = [EpochRecord(epoch=1, train_loss=1.0, val_loss=1.0, seconds=1.0),
               EpochRecord(epoch=2, train_loss=1.0, val_loss=1.6, seconds=1.0)]
    decision = rule(history)
    assert decision.stop and decision.reason == "plateau: validation loss got worse by 60.0% at epoch 2"
    history[1] = EpochRecord(epoch=2, train_loss=1.0, val_loss=0.9, seconds=1.0)
    assert rule(history).reason == "plateau: validation loss improved 10.0% (< 20%) at epoch 2"


def test_two_verdicts_that_disagree_say_why():
    run = a_tie((20.0, 30.0), (19.0, 19.5))
    at_equal_time = compare(predicted(0.97, 1), predicted(0.90, 3), LABELS, 19.0, 15.0)
    text = verdicts_side_by_side(at_equal_time, run, baseline_epoch=2)
    assert text.startswith(" The run's own verdict compares the same ensemble with the baseline's selected "
                           "checkpoint: no detectable accuracy difference on 1,000 test images")
    assert "The two calls differ because the baseline differs" in text and "(epoch 2)" in text
    assert "differ" not in verdicts_side_by_side(run, run, 2).replace("difference", "")


# --- pictures ---

def test_legends_name_architectures_only_when_members_differ():
    a, b = made_up_member([3, 2]), made_up_member([3, 2]).model_copy(update={"index": 1, "name": "member_01"})
    small = {"class": "m:ConvAutoencoder", "settings": {"channels": [4, 8], "kernel_size": 5}, "width": 1.0}
    wide = {**small, "settings": {"channels": [8, 16], "kernel_size": 3}}
    same = RunReport.model_construct(members=[a.model_copy(update={"architecture": small}),
                                              b.model_copy(update={"architecture": small})], baseline=None)
    assert legend_labels(same) == {"member_00": "member_00", "member_01": "member_01"}
    differ = RunReport.model_construct(members=[a.model_copy(update={"architecture": small}),
                                                b.model_copy(update={"architecture": wide})], baseline=None)
    assert legend_labels(differ) == {"member_00": "member_00 (ConvAutoencoder [4, 8] k5)",
                                     "member_01": "member_01 (ConvAutoencoder [8, 16] k3)"}


def test_log_axis_ticks_are_plain_numbers():
    fig, ax = plt.subplots()
    ax.plot([1, 6, 20, 100], [0.1, 0.5, 0.8, 0.9])
    ax.set_xscale("log")
    plain_ticks(ax.xaxis, [1, 6, 20, 100])
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "6", "20", "100"]
    plt.close(fig)


@pytest.mark.parametrize("losses", [[15.3, 9.8], [4.0, 0.3, 0.002]])  # within a decade; across three
def test_the_loss_plots_log_axis_is_labelled_with_plain_numbers_at_their_ticks(monkeypatch, tmp_path, losses):
    drawn = []
    monkeypatch.setattr(plots, "save", lambda fig, path: drawn.append(fig))
    plots.loss_curves(RunReport.model_construct(members=[made_up_member(losses)], baseline=None), tmp_path / "l.png")
    (fig,) = drawn
    fig.canvas.draw()
    ax = fig.axes[0]
    labels = [t for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True) if t.get_text()]
    assert len(labels) >= 2 and not any("$" in t.get_text() for t in labels)  # no mathtext to parse
    for label in labels:  # each label the value at its own tick
        assert float(label.get_text()) == pytest.approx(label.get_position()[1], rel=1e-5)
    plt.close(fig)


# --- real runs ---

def random_labels_run(tmp_path):
    """Digits with labels drawn at random: nothing the images hold predicts them, so both sides sit at chance."""
    digits = load_digits()
    images = digits.data.astype(np.uint8).reshape(-1, 8, 8)
    labels = np.random.default_rng(0).integers(0, 10, size=len(images))
    config = build_config({}, TINY + [f"output={tmp_path}", "name=chance", "data.test_size=300"])
    return ensemble.run(config, dataset=(images, labels), on_event=lambda e: None).report


@pytest.mark.slow
def test_a_run_at_chance_says_so_in_its_verdict_and_its_plot(ray_instance, tmp_path):
    report = random_labels_run(tmp_path)
    c = report.comparison
    assert c.outcome == "not-testable-at-chance" and c.supports_claim is None
    assert report.verdict.startswith("Cannot test the claim on this data: neither model beats chance")
    assert "the same accuracy" not in report.verdict
    for label, value, (low, high) in accuracy_bars(report):  # every bar's interval reaches down to chance
        assert low <= c.chance_accuracy + 0.02 and low <= value <= high, label
    fig, ax = plt.subplots()
    draw_accuracy_panel(ax, report)
    assert ax.get_ylim() == (0.0, 1.0)  # from zero: a run at chance looks like one
    assert any(list(line.get_ydata()) == [c.chance_accuracy] * 2 for line in ax.lines)  # the chance line
    assert "error bars: Wilson 95% CI" in ax.get_title()
    plt.close(fig)
    assert (tmp_path / "chance" / "accuracy_time.png").stat().st_size > 0


@pytest.mark.slow
def test_a_real_runs_report_holds_every_interval_and_both_speedups(tiny_run):
    result, _ = tiny_run
    report = RunReport.read(result.run_dir)
    e, b, c = report.ensemble, report.baseline, report.comparison
    assert c.speedup == pytest.approx(report.speedup)
    assert c.training_speedup == pytest.approx(b.train_wall_seconds / e.train_wall_seconds)
    assert c.ensemble_train_seconds == e.train_wall_seconds and c.baseline_train_seconds == b.train_wall_seconds
    for accuracy, interval in ((e.test_accuracy, e.test_accuracy_ci95), (b.test_accuracy, b.test_accuracy_ci95),
                               (e.untrained_test_accuracy, e.untrained_test_accuracy_ci95)):
        assert interval[0] <= accuracy <= interval[1]
    assert tuple(e.test_accuracy_ci95) == c.ensemble_accuracy_ci95
    assert "one measurement on this machine" in report.verdict or c.outcome == "not-testable-at-chance"
    markdown = (result.run_dir / "report.md").read_text()
    assert f"{e.test_accuracy:.4f} [{e.test_accuracy_ci95[0]:.4f}, {e.test_accuracy_ci95[1]:.4f}]" in markdown
    assert f"on training alone: {c.training_speedup:.2f}x" in markdown
    assert f"{report.dataset.train:,} train" in markdown
    console = aligned(summary_table(report))
    assert max(len(line) for line in console.splitlines()) <= 120


@pytest.mark.slow
def test_curves_place_and_name_the_runs_selected_ensemble(saved_run):
    report = RunReport.read(saved_run)
    done = accuracy_vs_time(saved_run)
    with open(saved_run / "accuracy_vs_time.csv") as handle:
        rows = list(csv.DictReader(handle))
    selected = [r for r in rows if r["side"] == "selected"]
    assert len(selected) == 1 and float(selected[0]["test_accuracy"]) == report.ensemble.test_accuracy
    low, high = float(selected[0]["ci95_low"]), float(selected[0]["ci95_high"])
    assert (low, high) == tuple(round(x, 4) for x in report.ensemble.test_accuracy_ci95)
    assert "the run's selected ensemble (member_00 epoch 3, member_01 epoch 3)" in done.equal_time
    if done.equal_time.startswith("At equal wall-clock (") and "had not finished" not in done.equal_time:
        assert "The run's own verdict compares the same ensemble" in done.equal_time


def test_the_console_summary_of_members_that_differ_fits_120_columns():
    small = {"class": "tests.tiny:ConvAutoencoder", "settings": {"channels": [6, 16], "kernel_size": 5},
             "width": 1.0, "parameters": 5129}
    wide = {**small, "settings": {"channels": [16, 32, 64], "kernel_size": 3}, "parameters": 123456}
    reason = "plateau: validation loss improved 18.8% (< 20%) at epoch 14"
    members = [made_up_member([3, 2, 1], stop_reason=reason).model_copy(
        update={"index": i, "name": f"member_{i:02d}", "architecture": wide if i % 2 else small, "test_accuracy": 0.95})
        for i in range(5)]
    base = made_up_member([3, 2], stop_reason="max epochs: reached the limit of 20 epochs").model_dump(
        exclude={"test_accuracy", "kind"})
    baseline = BaselineReport(**{**base, "index": -1, "name": "baseline", "architecture": {**wide, "width": 2.24}},
                              test_accuracy=0.947, test_accuracy_ci95=(0.9312, 0.9594), wall_seconds=1234.5,
                              train_wall_seconds=1200.0, combiner_seconds=34.5, resources="2 CPU", width=2.24)
    e = EnsembleReport(test_accuracy=0.956, test_accuracy_ci95=(0.9416, 0.9670), wall_seconds=15.7,
                       train_wall_seconds=14.4, combiner_seconds=1.3, feature_seconds=0.3, fit_seconds=1.0,
                       untrained_test_accuracy=0.962, untrained_test_accuracy_ci95=(0.9489, 0.9717),
                       members_used=list(range(5)), resources="5 members x 1 CPU", parallel_slots=5,
                       parameters=384375)
    report = RunReport.model_construct(members=members, baseline=baseline, ensemble=e, speedup=78.6,
                                       comparison=None, verdict="Supports the claim.")
    console = aligned(summary_table(report))
    assert max(len(line) for line in console.splitlines()) <= 120, console
    assert "| member_00, member_02, member_04 | ConvAutoencoder [6, 16] k5 | 5,129 |" in " ".join(console.split())
    assert "1,234.5" in console and "384,375" in console and "0.9560 [0.9416, 0.9670]" in console
