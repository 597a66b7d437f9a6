"""`ensemble run --repeats K`: one run directory per seed and a mean +- sd summary."""

import json

import pytest

from ensemble import cli
from ensemble.analysis.repeats import FIGURES, mean_sd, repeats_verdict, run_repeats
from ensemble.config import build_config
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
    assert "| ensemble test accuracy | " in table and " ± " in table and "seeds 7..9" in table
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


def test_verdict_claims_agreement_only_when_every_run_agrees():
    def figures(**means):
        return {key: mean_sd([means.get(key, 0.5)] * 3) for key in FIGURES}

    assert repeats_verdict(figures(), ["supports"] * 3, [0, 1, 2]).startswith("Supports the claim in all 3 runs")
    mixed = repeats_verdict(figures(), ["supports", "neither", "supports"], [0, 1, 2])
    assert mixed.startswith("Mixed: supports the claim in 2 of 3 runs, so these runs do not settle it")
    assert "1 of 3: does not support the claim" in mixed
    assert "cannot test the claim" in repeats_verdict(figures(), [None] * 3, [0, 1, 2])
    single = mean_sd([0.9])
    assert (single.mean, single.sd) == (0.9, None)
