"""`ensemble select`: another rule over a finished run's saved checkpoints, without training."""

import hashlib
import shutil

import pytest

from ensemble import cli
from ensemble.analysis.select import replay, replay_member, reselect, selection_config, selection_name
from ensemble.config import EagerConfig, EnsembleConfig
from ensemble.report import RunReport
from tests.tiny import made_up_member as member
from workers.errors import InputError
from workers.history import EpochRecord
from workers.layout import SELECTIONS


def file_digests(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def checkpoints(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("checkpoint_*"))


@pytest.mark.slow
def test_three_rules_give_three_reports_without_training(saved_run):
    before, saved_checkpoints = file_digests(saved_run), checkpoints(saved_run)
    original = RunReport.read(saved_run)
    done = [reselect(saved_run, ["eager.epoch=1"]),
            reselect(saved_run, ["eager.rule=plateau", "eager.threshold=0.99"]),
            reselect(saved_run, ["eager.rule=none", "combiner.kind=soft-vote"])]

    assert [d.directory.name for d in done] == ["fixed-1_concat", "plateau-0.99_concat", "none_soft-vote"]
    assert all(d.directory.parent == saved_run / SELECTIONS for d in done)
    for d in done:
        assert (d.directory / "report.json").is_file() and (d.directory / "report.md").is_file()
        assert RunReport.read(d.directory).selection["chosen"] == d.directory.name
    fixed, plateau, everything = (d.report for d in done)
    assert [m.selected_epoch for m in fixed.members] == [1, 1]
    assert [m.epochs_trained for m in plateau.members] == [2, 2]  # any gain below 99% stops at epoch 2
    assert [m.epochs_trained for m in everything.members] == [3, 3]
    assert fixed.ensemble.train_wall_seconds < everything.ensemble.train_wall_seconds  # less training replayed
    assert "member-seconds" in fixed.selection.wall_clock_method and "soft-vote" in everything.to_markdown()
    assert "the baseline's combiner" in everything.selection.refitted

    # no training (timed checks belong to the bench): not one new checkpoint, the saved epochs replayed as they
    # were, the run's own files byte-identical
    assert [m.history for m in everything.members] == [m.history for m in original.members]
    assert checkpoints(saved_run) == saved_checkpoints
    after = file_digests(saved_run)
    assert {k: v for k, v in after.items() if not k.startswith(SELECTIONS)} == before


@pytest.mark.slow
def test_the_run_own_rule_reproduces_its_report(saved_run):
    original = RunReport.read(saved_run)
    again = reselect(saved_run).report
    assert [m.selected_epoch for m in again.members] == [m.selected_epoch for m in original.members]
    assert again.ensemble.test_accuracy == original.ensemble.test_accuracy
    assert again.ensemble.train_wall_seconds == pytest.approx(original.ensemble.train_wall_seconds)
    assert again.selection.refitted == ["the ensemble's combiner"]
    ours, theirs = again.comparison, original.comparison  # the same paired test on the same predictions
    assert (ours.accuracy_difference, ours.mcnemar_p, ours.ci95) == (theirs.accuracy_difference, theirs.mcnemar_p,
                                                                     theirs.ci95)
    assert f"ensemble {again.ensemble.test_accuracy:.4f} in {again.ensemble.wall_seconds:.1f} s" in again.verdict
    assert again.verdict.startswith(("Supports the claim", "Does not support the claim", "Cannot test"))


@pytest.mark.slow
def test_cli_select_prints_the_summary(saved_run, capsys):
    assert cli.main(["select", str(saved_run), "--set", "eager.epoch=2", "--set", "combiner.kind=hard-vote"]) == 0
    out = capsys.readouterr().out
    assert "Speed-up (baseline wall / ensemble wall)" in out and "fixed-2_hard-vote" in out


@pytest.mark.parametrize("target, overrides, message", [
    ("missing", [], "does not exist"),
    ("empty", [], "not a finished run"),
    ("run", ["eager.epoch=4"], "beyond what was trained"),
    ("run", ["train.lr=0.1"], "only eager.* and combiner.*"),
    ("run", ["eager.epoch=2", "eager.threshold=0.1"], "say which rule"),
    ("run", ["combiner.kind=median"], "combiner.kind"),
    ("gap", ["eager.epoch=2"], "lacks the checkpoint"),
    ("selection", [], "is a selection"),
])
@pytest.mark.slow
def test_bad_input_exits_2_and_leaves_the_run_untouched(saved_run, tmp_path, capsys, target, overrides, message):
    run_dir = {"missing": tmp_path / "missing", "empty": tmp_path, "run": tmp_path / "copy",
               "gap": tmp_path / "copy", "selection": tmp_path / "copy" / SELECTIONS / "none_concat"}[target]
    if target != "missing" and target != "empty":
        shutil.copytree(saved_run, tmp_path / "copy", ignore=shutil.ignore_patterns(SELECTIONS, "accuracy_vs_time*"))
    if target == "selection":
        reselect(tmp_path / "copy")
    if target == "gap":
        shutil.rmtree(run_dir / "member_01" / "checkpoint_000002")
    before = file_digests(run_dir) if run_dir.exists() else None
    assert cli.main(["select", str(run_dir), *[a for o in overrides for a in ("--set", o)]]) == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split()) and "Traceback" not in err
    assert (file_digests(run_dir) if run_dir.exists() else None) == before


# --- the pure decisions, on made-up histories ---

def test_replay_stops_where_the_rule_would_have():
    records = [EpochRecord(i + 1, v, v, 1.0) for i, v in enumerate([10, 8, 7.9, 7])]
    done = replay(EagerConfig(rule="plateau", threshold=0.1), records, max_epochs=20)
    assert len(done.trained) == 3 and "plateau" in done.decision.reason
    assert replay(EagerConfig(rule="none"), records, max_epochs=20).decision is None  # history ran out


def test_replayed_member_keeps_its_measured_seconds_and_flags_a_short_history():
    again = replay_member(member([10, 8, 7.9, 7]), EagerConfig(rule="plateau", threshold=0.1), 20)
    assert (again.epochs_trained, again.selected_epoch, again.train_seconds) == (3, 3, 3.0)
    assert [s.epoch for s in again.timeline] == [1, 2, 3] and again.status == "done"
    longer = replay_member(member([10, 5, 2], stop_reason="plateau: ..."), EagerConfig(rule="none"), 20)
    assert longer.status == "truncated" and "the run stopped it: plateau" in longer.stop_reason
    with pytest.raises(InputError, match="epoch 5 is beyond"):
        replay_member(member([10, 5, 2]), EagerConfig(rule="fixed", epoch=5), 20)
    diverged = replay_member(member([10, None, None]), EagerConfig(rule="fixed", epoch=3), 20)
    assert diverged.selected_epoch is None and diverged.status == "diverged"  # excluded, as in a run


def test_selection_config_and_name():
    base = EnsembleConfig()
    assert selection_name(selection_config(base, ["eager.epoch=2"])) == "fixed-2_concat"
    assert selection_name(selection_config(base, ["eager.threshold=0.05"])) == "plateau-0.05_concat"
    assert selection_name(selection_config(base, ["eager.rule=budget", "eager.budget_seconds=12.5",
                                                  "combiner.kind=soft-vote", "combiner.head=mlp"])) \
        == "budget-12.5s_soft-vote-mlp"
    for bad in (["seed=3"], ["data.train_size=10"], ["eager"]):
        with pytest.raises(InputError, match="only eager"):
            selection_config(base, bad)


def test_a_selection_and_a_curve_point_with_another_iteration_cap_are_kept_apart():
    from ensemble.analysis.curves import cache_key
    from ensemble.analysis.select import selection_name
    from ensemble.config import CombinerConfig, build_config
    assert selection_name(build_config({}, ["eager.rule=fixed", "eager.epoch=2"])) == "fixed-2_concat"
    assert selection_name(build_config({}, ["eager.rule=fixed", "eager.epoch=2", "combiner.max_iter=800"])) == \
        "fixed-2_concat-iter800"
    chosen = [("member_00", 2)]
    assert cache_key(chosen, CombinerConfig(), 0) == "concat/logistic/seed0:member_00@2"  # earlier caches hold
    assert cache_key(chosen, CombinerConfig(max_iter=800), 0) == "concat/logistic/iter800/seed0:member_00@2"
