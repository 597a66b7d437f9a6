"""`ensemble run --repeats K`: one run directory per seed and a mean +- sd summary."""

import json

import numpy as np
import pytest

from ensemble import cli
from ensemble.analysis.repeats import FIGURES, mean_sd, repeats_verdict, run_repeats
from ensemble.config import build_config
from ensemble.report.comparison import compare, compare_repeats
from tests.tiny import TINY
from workers.errors import InputError

ONE_EPOCH = TINY + ["members=1", "train.epochs=1", "baseline.max_epochs=1"]  # start-up dominates: keep actors few


@pytest.mark.slow
def test_three_repeats_give_mean_and_sd_of_every_headline(ray_instance, tmp_path):
    cfg = build_config({}, ONE_EPOCH + [f"output={tmp_path}", "name=rep", "seed=7"])
    done = run_repeats(cfg, 3, on_event=lambda event: None)

    assert [r.run_dir.name for r in done.results] == ["rep-r0", "rep-r1", "rep-r2"]
    assert [r.report.config["seed"] for r in done.results] == [7, 8, 9]
    summary = json.loads((tmp_path / "rep-summary" / "summary.json").read_text())
    assert summary["seeds"] == [7, 8, 9] and set(summary["figures"]) == set(FIGURES)
    accuracies = [r.report.ensemble.test_accuracy for r in done.results]
    figure = summary["figures"]["ensemble_test_accuracy"]
    assert figure["values"] == accuracies
    assert figure["mean"] == pytest.approx(sum(accuracies) / 3) and figure["sd"] is not None
    assert all(summary["figures"][key]["sd"] is not None for key in FIGURES)
    table = (tmp_path / "rep-summary" / "summary.md").read_text()
    assert "| ensemble test accuracy | " in table and " ± " in table and "3 seeds (7..9)" in table
    assert summary["claim_outcomes"] == [r.report.comparison.outcome for r in done.results]
    assert summary["comparison"]["runs"] == 3 and "paired t-test p" in summary["verdict"]
    low, high = summary["comparison"]["speedup_ci95"]  # the speed-up's interval across seeds, in the sentence
    assert low <= summary["comparison"]["geometric_mean_speedup"] <= high
    assert f"95% CI [{low:.2f}x, {high:.2f}x] across seeds" in summary["verdict"]
    assert "speed-up on training alone" in table
    assert (tmp_path / "rep-summary" / "repeats.png").stat().st_size > 0


def test_repeats_never_overwrite_and_exclude_resume(tmp_path, capsys):
    (tmp_path / "rep-r1").mkdir(parents=True)
    (tmp_path / "rep-r1" / "report.json").write_text("{}")
    args = ["run", "--output", str(tmp_path), "--name", "rep", "--repeats", "2",
            *[a for o in TINY for a in ("--set", o)]]
    assert cli.main(args) == 2
    assert "rep-r1" in capsys.readouterr().err and not (tmp_path / "rep-r0").exists()
    assert cli.main(["run", "--resume", str(tmp_path / "rep-r1"), "--repeats", "2"]) == 2
    with pytest.raises(InputError, match="at least 1"):
        run_repeats(build_config({}, TINY), 0)


def test_the_verdict_across_seeds_rests_on_the_paired_differences_tested_across_seeds():
    labels = np.repeat(np.arange(10), 50)

    def run_with(gap: float, seed: int):
        rng = np.random.default_rng(seed)
        right_base = rng.random(500) < 0.9
        right_ens = right_base | (rng.random(500) < gap)  # the ensemble gets right what the baseline does, and more
        as_predictions = [np.where(r, labels, (labels + 1) % 10) for r in (right_ens, right_base)]
        return compare(*as_predictions, labels, 20.0, 30.0)

    figures = {key: mean_sd([0.01, 0.02, 0.03]) for key in FIGURES}
    small_gains = compare_repeats([run_with(0.02, seed) for seed in range(5)], list(range(5)))
    text = repeats_verdict(small_gains, figures)
    assert small_gains.supports_claim and "paired t-test p" in text and "sign test p" in text
    assert text.endswith("against the same combiner on the untrained encoders.") and "0.0200 ± 0.0100" in text
    no_baseline = compare_repeats([compare(labels, None, labels, 20.0)] * 2, [0, 1])
    assert repeats_verdict(no_baseline, figures).startswith("No baseline was trained")
    single = mean_sd([0.9])
    assert (single.mean, single.sd) == (0.9, None)
