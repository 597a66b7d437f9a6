"""The driver end to end on Ray, on tiny data."""

import json
import shutil

import numpy as np
import pytest
import torch

import ensemble
from ensemble.config import build_config
from tests.tiny import TINY, TinyAE
from workers.errors import InputError
from workers.events import Done, EpochEnded, Started

pytestmark = pytest.mark.slow


def raw_digits():
    from sklearn.datasets import load_digits
    digits = load_digits()
    return torch.tensor(digits.images[:40], dtype=torch.float32).unsqueeze(1)


def test_report_json_has_the_contract_keys(tiny_run):
    result, _ = tiny_run
    raw = json.loads((result.run_dir / "report.json").read_text())
    assert len(raw["members"]) == 2
    for member in raw["members"] + [raw["baseline"]]:
        assert {"index", "epochs_trained", "selected_epoch", "stop_reason", "train_seconds", "history"} <= set(member)
        assert {"epoch", "train_loss", "val_loss", "seconds"} <= set(member["history"][0])
    assert {"test_accuracy", "wall_seconds"} <= set(raw["baseline"])
    assert {"test_accuracy", "wall_seconds", "train_wall_seconds", "combiner_seconds",
            "untrained_test_accuracy"} <= set(raw["ensemble"])
    assert raw["speedup"] == pytest.approx(raw["baseline"]["wall_seconds"] / raw["ensemble"]["wall_seconds"])
    assert raw["config"]["members"] == 2 and raw["config"]["name"] == "tiny"
    assert [m["selected_epoch"] for m in raw["members"]] == [1, 1]  # eager.rule=fixed, epoch=1
    assert [m["status"] for m in raw["members"]] == ["done", "done"] and raw["baseline"]["kind"] == "baseline"
    assert raw["ensemble"]["test_accuracy"] > 0.5  # 10 classes: chance is 0.1
    comparison = raw["comparison"]  # the paired test the verdict states
    assert {"accuracy_difference", "ci95", "mcnemar_p", "chance_accuracy", "outcome"} <= set(comparison)
    assert comparison["accuracy_difference"] == pytest.approx(
        raw["ensemble"]["test_accuracy"] - raw["baseline"]["test_accuracy"])
    assert "95% CI [" in raw["verdict"] and "McNemar p" in raw["verdict"]
    kept = json.loads((result.run_dir / "test_predictions.json").read_text())
    assert len(kept["labels"]) == len(kept["ensemble"]) == len(kept["baseline"]) == raw["dataset"]["test"]


def test_run_directory_holds_checkpoints_history_plots(tiny_run):
    result, _ = tiny_run
    run_dir = result.run_dir
    for name in ("config.json", "report.md", "loss_curves.png", "timeline.png", "accuracy_time.png",
                 "combiner.skops"):
        assert (run_dir / name).stat().st_size > 0, name
    assert (run_dir / "member_00" / "checkpoint_000000").is_dir()
    assert (run_dir / "member_01" / "checkpoint_000001").is_dir()
    assert (run_dir / "baseline" / "history.jsonl").read_text().count("\n") == 2
    assert "| ensemble (2 members)" in (run_dir / "report.md").read_text()


def test_progress_arrives_per_epoch_from_every_member(tiny_run):
    _, events = tiny_run
    epochs = [(e.name, e.record.epoch) for e in events if isinstance(e, EpochEnded)]
    assert epochs.count(("member_00", 1)) == 1 and ("baseline", 2) in epochs
    assert {e.name for e in events if isinstance(e, Done)} == {"member_00", "member_01", "baseline"}
    started = [e for e in events if isinstance(e, Started)]
    assert len(started) == 3 and all(e.resumed_from is None and e.placement["device"] == "cpu" for e in started)
    # train.memory_format=auto: each actor's probe chose a format, named in the placement report.json keeps
    assert all(e.placement["memory_format"] in ("contiguous", "channels_last") for e in started)
    for name in ("member_00", "member_01", "baseline"):  # each member's events in order: started, epochs, done
        kinds = [type(e) for e in events if e.name == name]
        assert kinds[0] is Started and kinds[-1] is Done and set(kinds[1:-1]) == {EpochEnded}


def test_load_predicts_like_the_original(tiny_run):
    result, _ = tiny_run
    images = raw_digits()
    original = result.predict(images)
    again = ensemble.load(result.run_dir).predict(images)
    assert np.array_equal(original, again) and original.shape == (40,)
    with pytest.raises(InputError, match="must be N x 1 x 8 x 8"):
        result.predict(torch.zeros(2, 3, 8, 8))


def test_loaded_encoders_are_laid_out_as_each_member_trained(tiny_run, tmp_path):
    from workers.memory_format import FORMATS, module_memory_format
    result, _ = tiny_run
    recorded = [m.placement["memory_format"] for m in result.report.members if m.selected_epoch is not None]
    assert [module_memory_format(a) for a in result.autoencoders] == recorded
    assert [module_memory_format(a) for a in ensemble.load(result.run_dir).autoencoders] == recorded
    copy = tmp_path / "flipped"  # a run whose members recorded the other layout is loaded in that one
    shutil.copytree(result.run_dir, copy)
    report = json.loads((copy / "report.json").read_text())
    for member in report["members"]:
        member["placement"]["memory_format"] = next(f for f in FORMATS if f != member["placement"]["memory_format"])
    (copy / "report.json").write_text(json.dumps(report))
    flipped = ensemble.load(copy)
    assert [module_memory_format(a) for a in flipped.autoencoders] == [
        next(f for f in FORMATS if f != layout) for layout in recorded]
    images = raw_digits()  # the same probabilities in either layout, up to the order of float additions
    assert np.allclose(flipped.predict_proba(images), result.predict_proba(images), atol=1e-5)


def test_probabilities_features_and_score_agree_with_predict(tiny_run):
    result, _ = tiny_run
    images = raw_digits()
    labels = result.predict(images)
    probabilities = result.predict_proba(images)
    assert probabilities.shape == (40, 10) and np.allclose(probabilities.sum(axis=1), 1.0)
    assert np.array_equal(result.classes[probabilities.argmax(axis=1)], labels)
    assert list(result.classes) == list(range(10)) and result.report.dataset.classes[3] == "3"
    features = result.transform(images)
    assert features.dtype == np.float32 and features.shape[0] == 40
    assert features.shape[1] == sum(ae.encode(images[:1] / 16).numel() for ae in result.autoencoders)
    assert np.array_equal(result.predict(images[:, 0]), labels)  # N x H x W: one channel added
    assert result.score(images, labels) == 1.0
    assert result.score(images, (labels + 1) % 10) == 0.0


def test_existing_run_directory_is_never_overwritten(tiny_run):
    result, _ = tiny_run
    before = (result.run_dir / "report.json").read_text()
    with pytest.raises(InputError, match="already exists"):
        ensemble.run(build_config({}, TINY + [f"output={result.run_dir.parent}", "name=tiny"]))
    assert (result.run_dir / "report.json").read_text() == before


def test_custom_autoencoder_and_dataset_end_to_end(ray_instance, tmp_path):
    from sklearn.datasets import load_digits
    digits = load_digits()
    images = torch.tensor(digits.images[:600], dtype=torch.float32)  # N x H x W: the channel is added
    labels = torch.tensor(digits.target[:600])
    cfg = build_config({}, ["members=2", "train.epochs=2", "data.train_size=300", "data.val_size=100",
                            "eager.rule=fixed", "eager.epoch=2", "baseline.enabled=false", f"output={tmp_path}",
                            "name=custom", "model.channels=[4, 8]"])
    result = ensemble.run(cfg, autoencoder=TinyAE, dataset=(images, labels), on_event=lambda e: None)
    assert result.report.baseline is None and result.report.speedup is None
    assert result.report.ensemble.test_accuracy > 0.5
    again = ensemble.load(result.run_dir, autoencoder=TinyAE)
    batch = images[:50].unsqueeze(1)
    assert np.array_equal(result.predict(batch), again.predict(batch))


def test_predict_returns_the_datasets_own_label_values(ray_instance, tmp_path):
    from sklearn.datasets import load_digits
    digits = load_digits()
    keep = digits.target < 3
    images = torch.tensor(digits.images[keep], dtype=torch.float32)
    names = np.array(["zero", "one", "two"])[digits.target[keep]]
    cfg = build_config({}, TINY + ["data.train_size=200", "data.val_size=100", "data.test_size=null",
                                   "baseline.enabled=false", f"output={tmp_path}", "name=named"])
    result = ensemble.run(cfg, dataset=(images, names), on_event=lambda e: None)
    assert list(result.classes) == ["one", "two", "zero"]  # sorted, as np.unique orders them
    predicted = result.predict(images[:60])
    assert set(predicted) <= {"zero", "one", "two"}
    assert result.score(images[:60], names[:60]) == pytest.approx(np.mean(predicted == names[:60]))
    assert result.score(images[:60], names[:60]) > 0.8
    assert list(ensemble.load(result.run_dir).predict(images[:60])) == list(predicted)


class WrongShapeAE(TinyAE):
    def forward(self, x):
        return self.enc(x)


@pytest.mark.parametrize("overrides, kwargs, message", [
    (["data.name=npz", "data.root=/nonexistent/x.npz"], {}, "/nonexistent/x.npz"),
    (["resources.cpus_per_member=64"], {}, "64 CPU"),
    ([], {"autoencoder": WrongShapeAE}, "reconstruction of shape"),
])
def test_bad_input_is_an_input_error_and_writes_nothing(ray_instance, tmp_path, overrides, kwargs, message):
    cfg = build_config({}, TINY + [f"output={tmp_path / 'out'}", "name=bad"] + overrides)
    with pytest.raises(InputError, match=message):
        ensemble.run(cfg, **kwargs)
    assert not (tmp_path / "out" / "bad").exists()


def test_members_beyond_the_free_slots_queue_on_warm_actors_and_all_finish(ray_instance, tmp_path):
    """3 members of 1 CPU each on 2 CPUs: at most 2 actors ever start, so one trains a second
    member after its first, and a member learns exactly what it learns on an actor of its own."""
    sets = TINY + ["members=3", "train.epochs=1", "baseline.enabled=false", f"output={tmp_path}"]
    result = ensemble.run(build_config({}, sets + ["name=queued"]), on_event=lambda e: None)
    assert [m.epochs_trained for m in result.report.members] == [1, 1, 1]
    assert result.report.ensemble.parallel_slots == 2
    pids = [m.placement["pid"] for m in result.report.members]
    assert len(set(pids)) <= 2


def test_an_actor_reused_for_a_second_member_trains_it_as_a_fresh_actor_would(ray_instance, no_kept_actors, tmp_path):
    import ray

    from ensemble.builders import member_rule, member_seed, train_settings
    from ensemble.data import load_splits
    from ensemble.scheduling.pool import handoff
    from workers.actor import MemberActor, MemberSpec
    from workers.layout import member_name
    from workers.scratch import machine

    cfg = build_config({}, TINY + ["train.epochs=2", "eager.rule=none"])
    splits = load_splits(cfg.data, cfg.seed)
    data = ray.put({"train_x": splits.train_x.numpy(), "val_x": splits.val_x.numpy()})
    driver = machine(ray.get_runtime_context().get_node_id())

    def train(actor, index: int, where: str):
        spec = MemberSpec(member_name(index), str(tmp_path / where / member_name(index)), TinyAE,
                          train_settings(cfg, member_seed(cfg.seed, index)), member_rule(cfg.eager, cfg.train.epochs))
        events = [ray.get(ref).event for ref in actor.train.remote(spec, data, handoff(spec.directory, driver))]
        return [e.record.val_loss for e in events if isinstance(e, EpochEnded)], events[0].placement["pid"]

    reused, fresh = (MemberActor.options(num_cpus=1).remote(1) for _ in range(2))
    first, pid = train(reused, 0, "reused")
    again, same_pid = train(reused, 1, "reused")
    alone, other_pid = train(fresh, 1, "fresh")
    assert pid == same_pid != other_pid and len(again) == 2
    assert again == alone and again != first
    for actor in (reused, fresh):
        ray.kill(actor)


def test_random_labels_cannot_test_the_claim(ray_instance, tmp_path):
    """The README's Python API example on random images with random labels: both sides at chance."""
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.rand(600, 1, 8, 8, generator=generator), torch.randint(0, 10, (600,), generator=generator)
    cfg = build_config({}, TINY + ["data.train_size=300", "data.val_size=100", "data.test_size=null",
                                   f"output={tmp_path}", "name=random"])
    report = ensemble.run(cfg, autoencoder=TinyAE, dataset=(images, labels), on_event=lambda e: None).report
    assert report.comparison.outcome == "not-testable-at-chance" and report.comparison.supports_claim is None
    assert report.verdict.startswith("Cannot test the claim on this data: neither model beats chance")
    assert "Supports" not in report.verdict


def test_the_last_member_trains_on_the_cores_idle_actors_hold(ray_instance, tmp_path):
    """3 members of 1 CPU on 2 CPUs: when the other actor has nothing left to train, its CPU goes to the
    member still training, which then runs its epochs on both cores. The actors start a little apart,
    so the lend reaches the last member at no fixed epoch: judged by when each of its epochs ran."""
    events = []
    sets = TINY + ["members=3", "train.epochs=16", "eager.rule=none", "baseline.enabled=false",
                   "data.train_size=1100", "data.val_size=300", "data.test_size=290", f"output={tmp_path}", "name=lent"]
    ensemble.run(build_config({}, sets), on_event=events.append)
    last = [e.name for e in events if isinstance(e, Started)][-1]
    freed = max(e.at for e in events if isinstance(e, Done) and e.name != last)  # the other actor goes idle
    epochs = [(e.at - e.record.seconds, e.at, e.threads) for e in events
              if isinstance(e, EpochEnded) and e.name == last]
    before = [threads for _, end, threads in epochs if end < freed]
    after = [threads for begin, _, threads in epochs if begin > freed + 0.3]  # the lend has had time to arrive
    assert set(before) <= {1} and after and set(after) == {2}, (before, after)
    first = [e.threads for e in events if isinstance(e, EpochEnded) and e.name == "member_00"]
    assert set(first) == {1}  # while every slot was busy, nobody had more than its share


def test_packed_members_train_as_they_would_alone(ray_instance, tmp_path):
    """resources.members_per_actor=2: an actor trains two members as one batched computation; each
    member's losses are the ones it has alone (to float rounding), its events and files its own."""
    sets = TINY + ["members=3", "train.epochs=2", "eager.rule=none", "baseline.enabled=false",
                   "resources.lend_idle_cpus=false", f"output={tmp_path}"]
    alone = ensemble.run(build_config({}, sets + ["name=alone"]), on_event=lambda e: None).report
    events = []
    packed = ensemble.run(build_config({}, sets + ["name=packed", "resources.members_per_actor=2"]),
                          on_event=events.append).report
    pids = {e.name: e.placement["pid"] for e in events if isinstance(e, Started)}
    assert len(set(pids.values())) < 3 and pids["member_00"] == pids["member_01"]  # one actor, one pack of two
    for a, b in zip(alone.members, packed.members, strict=True):
        assert [h.epoch for h in a.history] == [h.epoch for h in b.history] == [1, 2]
        assert [h.val_loss for h in b.history] == pytest.approx([h.val_loss for h in a.history], rel=1e-5)
        assert (tmp_path / "packed" / b.name / "checkpoint_000002" / "manifest.json").is_file()
