"""Custom ensembles as first-class as the built-in (issue 22): a fair baseline of the user's own
architecture, truthful records of in-memory data, every command on such runs in a fresh process,
members that differ, diversity in every report, and config from Python.

Decisions and records are tested without Ray; the end-to-end runs are tiny (digits, 2-3 members,
1 epoch) and marked slow."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch
from torch import nn

import ensemble
from ensemble.builders import baseline_factory, member_factories, member_model, members_differ
from ensemble.config import EnsembleConfig, build_config, recorded_config, resolve
from ensemble.data import load_splits
from ensemble.data.records import read_splits, save_splits
from ensemble.job import prepare
from ensemble.report.diversity import disagreement_matrix, diversity, mean_disagreement
from tests.session_ray import joining_env
from tests.tiny import TINY, TinyAE
from workers.errors import InputError
from workers.models import CAEFactory, Widened, accepts_width, matched_width, trainable_parameters

ROOT = Path(__file__).resolve().parent.parent


class NoWidthAE(nn.Module):
    """A custom autoencoder whose constructor takes no `width`: it cannot be widened into a baseline."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU())
        self.dec = nn.Sequential(nn.Linear(8, 64), nn.Unflatten(1, (1, 8, 8)))

    def encode(self, x):
        return self.enc(x)

    def forward(self, x):
        return self.dec(self.enc(x))


class ConvAE(nn.Module):
    """Another architecture for 1 x 8 x 8 images (3x3 convolutions), for members that differ."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        c = max(1, round(4 * width))
        self.enc = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.dec = nn.Sequential(nn.Upsample(size=(8, 8)), nn.Conv2d(c, 1, 3, padding=1))

    def encode(self, x):
        return self.enc(x)

    def forward(self, x):
        return self.dec(self.enc(x))


def digits_arrays():
    from sklearn.datasets import load_digits
    digits = load_digits()
    return digits.data.astype(np.uint8).reshape(-1, 8, 8), digits.target


def planned(config: EnsembleConfig, autoencoder=None, dataset=None, resume: bool = False, **keys):
    """The driver's first step on `config` resolved as `ensemble.run` resolves it (named, data recorded)."""
    resolved = resolve(config, resume=resume, dataset_given=dataset is not None)
    return prepare.run(resolved.config, autoencoder, dataset, resolved.resume, **keys)


def tiny(tmp_path, *sets) -> EnsembleConfig:
    return build_config({}, TINY + [f"output={tmp_path}", *sets])


# --- 1. a fair baseline ---

def test_a_class_with_width_is_widened_into_the_baseline_with_the_members_parameter_names():
    config = build_config({}, ["members=4"])
    base = baseline_factory(config, (1, 8, 8), [TinyAE] * 4)
    assert base == Widened(TinyAE, 2.0)  # sqrt(members)
    member, wide = TinyAE().state_dict(), base().state_dict()
    assert list(member) == list(wide)
    assert wide["enc.1.weight"].shape == (24, 64) and member["enc.1.weight"].shape == (12, 64)


def test_a_class_without_width_or_a_named_baseline_is_refused_naming_the_ways_out(tmp_path, ray_must_not_start):
    images, labels = digits_arrays()
    with pytest.raises(InputError) as caught:
        ensemble.run(tiny(tmp_path, "name=refused"), autoencoder=NoWidthAE, dataset=(images, labels))
    message = str(caught.value)
    for way_out in ("`width` keyword", "baseline.autoencoder=module:QualName", "baseline_autoencoder=Cls",
                    "baseline.enabled=false"):
        assert way_out in message
    assert not (tmp_path / "refused").exists()  # refused before Ray (the fixture) and any file


def test_a_named_baseline_is_used_as_given_and_recorded_by_name(tmp_path):
    images, labels = digits_arrays()
    plan = planned(tiny(tmp_path, "name=own"), NoWidthAE, (images, labels), False, baseline_autoencoder=ConvAE)
    assert plan.baseline_factory is ConvAE
    assert plan.config.baseline.autoencoder == "tests.test_custom_ensembles:ConvAE"
    assert plan.architectures["baseline"]["class"] == "tests.test_custom_ensembles:ConvAE"
    assert plan.architectures["member_00"] == {"class": "tests.test_custom_ensembles:NoWidthAE", "width": 1.0,
                                               "parameters": trainable_parameters(NoWidthAE())}


def test_a_baseline_autoencoder_that_does_not_import_is_refused_before_ray(tmp_path):
    with pytest.raises(InputError, match="nowhere.models:Big cannot be imported"):
        planned(tiny(tmp_path, "name=x", "baseline.autoencoder=nowhere.models:Big"), None, None, False)


def test_accepts_width_reads_the_constructor():
    assert accepts_width(TinyAE) and accepts_width(ConvAE) and not accepts_width(NoWidthAE)
    assert accepts_width(lambda **keys: TinyAE(**keys)) and not accepts_width(lambda: TinyAE())


def test_matched_width_finds_the_width_closest_to_the_target():
    width = matched_width(lambda w: round(100 * w * w), 400)
    assert width == pytest.approx(2.0, abs=0.01) and round(100 * width * width) == 400
    assert matched_width(lambda w: 10, 1000, high=8.0) == 8.0  # cannot reach it: the widest allowed


# --- 4. members that differ ---

def test_overrides_give_each_member_its_own_cae_and_the_baseline_matches_their_total(tmp_path):
    config = build_config({}, ["members=3", "model.overrides=[{channels: [4, 8]}, {kernel_size: 3}, {}]"])
    assert members_differ(config) and not members_differ(build_config({}, ["members=3"]))
    assert member_model(config, 1).kernel_size == 3 and member_model(config, 1).channels == (6, 16)
    factories = member_factories(config, (1, 28, 28))
    assert [f.channels for f in factories] == [(4, 8), (6, 16), (6, 16)]
    assert [f.kernel_size for f in factories] == [5, 3, 5]
    base = baseline_factory(config, (1, 28, 28), factories)
    total = sum(trainable_parameters(f()) for f in factories)
    assert isinstance(base, CAEFactory) and base.channels == (6, 16)
    assert abs(trainable_parameters(base()) - total) / total < 0.05
    assert base.width != pytest.approx(3 ** 0.5)  # not sqrt(members): matched on parameters


def test_a_list_of_classes_gives_each_member_its_own_and_is_recorded_as_a_list(tmp_path):
    images, labels = digits_arrays()
    plan = planned(tiny(tmp_path, "members=3", "name=list"), [TinyAE, ConvAE, TinyAE], (images, labels), False)
    assert plan.member_factories == [TinyAE, ConvAE, TinyAE]
    assert plan.config.model.autoencoder == ["tests.tiny:TinyAE", "tests.test_custom_ensembles:ConvAE",
                                             "tests.tiny:TinyAE"]
    assert isinstance(plan.baseline_factory, Widened) and plan.baseline_factory.factory is TinyAE
    again = member_factories(build_config(recorded_config(plan.config), []), (1, 8, 8))
    assert again == [TinyAE, ConvAE, TinyAE]  # what load() and select rebuild from config.json


@pytest.mark.parametrize("sets, match", [
    (["members=3", "model.overrides=[{}, {}]"], "model.overrides lists 2 member.s. but members=3"),
    (["members=2", "model.overrides=[{}, {kernel_sise: 3}]"], r"model.overrides\[1\] has the unknown key "
                                                             "'kernel_sise' .did you mean 'kernel_size'"),
    (["members=2", "model.overrides=[{kernel_size: 4}, {}]"], r"model.overrides\[0\].kernel_size.*must be odd"),
    (["members=2", "model.autoencoder=[tests.tiny:TinyAE]"], "model.autoencoder lists 1 autoencoder.s. but "
                                                            "members=2"),
])
def test_bad_per_member_settings_are_input_errors_naming_the_key(sets, match):
    with pytest.raises(InputError, match=match):
        build_config({}, sets)


def test_members_that_differ_never_train_packed(tmp_path):
    sets = ["members=2", "model.overrides=[{activation: tanh}, {}]", "name=packed"]  # same parameter shapes
    assert planned(tiny(tmp_path, *sets, "resources.members_per_actor=auto"), None, None, False).members_per_actor == 1
    with pytest.raises(InputError, match="members that differ .* cannot train packed"):
        planned(tiny(tmp_path, *sets, "resources.members_per_actor=2"), None, None, False)


def test_a_list_of_classes_of_the_wrong_length_is_refused_before_ray(tmp_path):
    with pytest.raises(InputError, match=r"autoencoder= lists 3 autoencoder\(s\) but members=2"):
        ensemble.run(tiny(tmp_path, "name=x"), autoencoder=[TinyAE] * 3, dataset=digits_arrays())


# --- 2. truthful records of the data ---

def test_arrays_are_recorded_as_arrays_with_the_same_hash_as_the_named_dataset(tmp_path):
    images, labels = digits_arrays()
    named = load_splits(build_config({}, ["data.name=digits"]).data, 0)
    given = load_splits(build_config({}, []).data, 0, (images, labels))
    assert named.record["name"] == "digits" and given.record["name"] == "arrays"
    digest = hashlib.sha256(images.tobytes() + labels.astype("<i8").tobytes()).hexdigest()
    assert named.record["sha256"] == given.record["sha256"] == digest
    assert given.record["shape"] == [1797, 1, 8, 8] and given.record["dtype"] == "uint8"
    assert given.record["class_counts"]["0"] == 178 and sum(given.record["class_counts"].values()) == 1797
    changed = images.copy()
    changed[0, 0, 0] += 1
    assert load_splits(build_config({}, []).data, 0, (changed, labels)).record["sha256"] != digest


def test_config_json_of_a_custom_run_names_no_data_or_model_it_did_not_use(tmp_path):
    plan = planned(tiny(tmp_path, "name=rec", "data.name=npz", "data.root=/somewhere"), TinyAE, digits_arrays(), False)
    recorded = recorded_config(plan.config)
    assert recorded["data"]["name"] == "arrays" and "root" not in recorded["data"]
    assert recorded["model"] == {"autoencoder": "tests.tiny:TinyAE", "overrides": None}
    assert build_config(recorded, []).model.autoencoder == "tests.tiny:TinyAE"  # it reads back


def test_overrides_with_classes_given_from_python_are_refused_by_name(tmp_path):
    config = tiny(tmp_path, "model.overrides=[{channels: [2]}, {}]")
    with pytest.raises(InputError, match=r"model.overrides\[0\] cannot apply when run\(autoencoder=...\)"):
        planned(config, TinyAE, digits_arrays(), False)
    with pytest.raises(InputError, match=r"model.overrides\[1\].kernel_size cannot apply: member 1 is the custom "
                                         r"class tests.tiny:TinyAE"):
        tiny(tmp_path, "model.autoencoder=tests.tiny:TinyAE", "model.overrides=[{}, {kernel_size: 3}]")
    mixed = tiny(tmp_path, "model.autoencoder=tests.tiny:TinyAE", "model.overrides=[{autoencoder: null, "
                 "channels: [2]}, {}]")  # member 0 is a built-in CAE: its channels apply
    assert member_model(mixed, 0).channels == (2,)


@pytest.mark.parametrize("sets, width", [(["baseline.width=null", "members=4"], 2.0),
                                         (["baseline.width=null", "model.overrides=[{channels: [2, 4]}, {}]"], None)])
def test_the_baseline_width_used_is_recorded_not_null(tmp_path, sets, width):
    plan = planned(tiny(tmp_path, *sets), None, None, False)
    recorded = recorded_config(plan.config)["baseline"]["width"]
    assert recorded is not None and recorded == plan.architectures["baseline"]["width"]
    if width is not None:
        assert recorded == width
    again = planned(build_config(recorded_config(plan.config), []), None, None, False)  # read back: the same model
    assert again.architectures["baseline"] == plan.architectures["baseline"]


def test_a_baseline_of_its_own_records_no_width(tmp_path):
    plan = planned(tiny(tmp_path, "baseline.autoencoder=tests.tiny:TinyAE"), None, None, False, trust_code=True)
    assert "width" not in recorded_config(plan.config)["baseline"]


def test_saved_splits_read_back_identical_and_missing_ones_ask_for_the_data(tmp_path):
    splits = load_splits(build_config({}, []).data, 0, digits_arrays())
    save_splits(tmp_path, splits)
    again = load_splits(build_config({}, ["data.name=arrays"]).data, 0, run_dir=tmp_path)
    for key in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(again, key), getattr(splits, key))
    assert again.record == splits.record and again.label_values == splits.label_values
    assert again.normalizer == splits.normalizer
    assert read_splits(tmp_path / "none") is None
    with pytest.raises(InputError, match="pass the same data again from Python: dataset="):
        load_splits(build_config({}, ["data.name=arrays"]).data, 0, run_dir=tmp_path / "none")


# --- 5. diversity ---

def test_disagreement_is_the_share_of_images_two_members_differ_on():
    matrix = disagreement_matrix([[0, 1, 2, 3], [0, 1, 2, 0], [1, 1, 0, 0]])
    assert matrix.tolist() == [[0, 0.25, 0.75], [0.25, 0, 0.5], [0.75, 0.5, 0]]
    assert mean_disagreement(matrix) == pytest.approx(0.5)
    assert mean_disagreement(disagreement_matrix([[0, 1]])) is None


def test_the_ensemble_is_compared_with_its_best_member_by_the_paired_test():
    labels = [0] * 100
    members = [[0] * 60 + [1] * 40, [0] * 70 + [1] * 30]
    better = diversity([3, 5], members, [0] * 100, labels)
    assert better.best_member == 5 and better.best_member_accuracy == 0.7
    assert better.difference == pytest.approx(0.3) and better.mcnemar_p < 0.05
    assert "is better than its best member, member 5 (0.7000)" in better.sentence
    same = diversity([3, 5], members, [0] * 71 + [1] * 29, labels)
    assert "is not shown to differ from its best member" in same.sentence


# --- 6. config from Python ---

def test_config_from_python_takes_dicts_and_names_bad_keys():
    assert EnsembleConfig.from_dict({"members": 3, "train": {"epochs": 2}}).train.epochs == 2
    assert EnsembleConfig.from_dict({"members": 3, "train.epochs": 2}).train.epochs == 2
    with pytest.raises(InputError, match="config key 'members' has value 0"):
        EnsembleConfig(members=0)
    with pytest.raises(InputError, match="unknown config key 'train.epoch' .did you mean 'train.epochs'"):
        EnsembleConfig(train={"epoch": 2})
    with pytest.raises(InputError, match="config key 'model.autoencoder' has value .*cannot hold"):
        EnsembleConfig.from_dict({"model": {"autoencoder": TinyAE}})
    from ensemble.config import TrainConfig
    with pytest.raises(InputError, match="config key 'train.lr'"):
        TrainConfig(lr=-1)


def test_run_takes_config_keys_and_refuses_bad_ones_before_ray(tmp_path, ray_must_not_start):
    with pytest.raises(InputError, match="unknown config key 'membres' .did you mean 'members'"):
        ensemble.run(membres=3)
    with pytest.raises(InputError, match="config key 'train.epochs' has value 0"):
        ensemble.run(tiny(tmp_path), train={"epochs": 0})


def test_select_and_curves_take_autoencoder_options():
    for command in ("select", "curves"):
        out = subprocess.run([sys.executable, "-m", "ensemble", command, "--help"], capture_output=True, text=True,
                             cwd=ROOT, env=fresh_env())
        assert "--autoencoder MODULE:NAME" in out.stdout and "--baseline-autoencoder" in out.stdout


# --- end to end ---

def fresh_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def in_fresh_process(*argv: str, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=ROOT,
                          env={**fresh_env(), **(env or {})}, timeout=600)


@pytest.fixture(scope="module")
def arrays_run(ray_instance, tmp_path_factory):
    """A custom run as a new user makes one: TinyAE (which takes `width`) on in-memory digits."""
    output = tmp_path_factory.mktemp("custom")
    images, labels = digits_arrays()
    cfg = build_config({}, TINY + ["train.epochs=1", f"output={output}", "name=arrays"])
    return ensemble.run(cfg, autoencoder=TinyAE, dataset=(images, labels), on_event=lambda e: None)


@pytest.mark.slow
def test_the_baseline_of_a_custom_run_is_its_own_class_widened(arrays_run):
    from workers.checkpoints import load_weights
    run_dir = arrays_run.run_dir
    member = load_weights(run_dir / "member_00" / "checkpoint_000001")
    base = load_weights(run_dir / "baseline" / "checkpoint_000001")
    assert list(member) == list(base)
    assert member["enc.1.weight"].shape == (12, 64) and base["enc.1.weight"].shape == (18, 64)  # width 1.5
    report = arrays_run.report
    assert report.baseline.architecture == {"class": "tests.tiny:TinyAE", "width": 1.5,
                                            "parameters": trainable_parameters(TinyAE(1.5))}
    assert report.members[0].architecture["parameters"] == trainable_parameters(TinyAE())
    assert report.ensemble.parameters == 2 * trainable_parameters(TinyAE())
    markdown = (run_dir / "report.md").read_text()
    assert f"| {2 * trainable_parameters(TinyAE()):,} |" in markdown
    assert f"| {trainable_parameters(TinyAE(1.5)):,} |" in markdown


@pytest.mark.slow
def test_the_records_of_an_arrays_run_are_truthful(arrays_run):
    run_dir = arrays_run.run_dir
    config = json.loads((run_dir / "config.json").read_text())
    assert config["data"]["name"] == "arrays" and "root" not in config["data"] and "channels" not in config["model"]
    images, labels = digits_arrays()
    dataset = json.loads((run_dir / "report.json").read_text())["dataset"]
    assert dataset["sha256"] == hashlib.sha256(images.tobytes() + labels.astype("<i8").tobytes()).hexdigest()
    assert dataset["name"] == "arrays" and dataset["shape"] == [1797, 1, 8, 8] and dataset["dtype"] == "uint8"
    assert (run_dir / "splits.npz").is_file()


@pytest.mark.slow
def test_every_report_has_member_accuracy_and_diversity(arrays_run):
    report = arrays_run.report
    accuracies = [m.test_accuracy for m in report.members]
    assert all(0 < a <= 1 for a in accuracies)
    d = report.ensemble.diversity
    assert d.members == [0, 1] and d.best_member_accuracy == max(accuracies)
    assert 0 <= d.mean_disagreement <= 1 and d.matrix[0][1] == d.matrix[1][0] == d.mean_disagreement
    markdown = (arrays_run.run_dir / "report.md").read_text()
    assert "Diversity: Members' own heads disagree on" in markdown and "its best member, member" in markdown
    assert f"{accuracies[0]:.4f}" in markdown


@pytest.mark.slow
def test_select_curves_load_and_serving_work_on_an_arrays_run_in_a_fresh_process(arrays_run):
    run_dir = str(arrays_run.run_dir)
    select = in_fresh_process("-m", "ensemble", "select", run_dir, "--set", "combiner.kind=soft-vote",
                              "--autoencoder", "tests.tiny:TinyAE")
    assert select.returncode == 0, select.stderr
    selected = json.loads((arrays_run.run_dir / "selections" / "fixed-1_soft-vote" / "report.json").read_text())
    assert selected["ensemble"]["diversity"]["members"] == [0, 1]
    untrusted = in_fresh_process("-m", "ensemble", "curves", run_dir)  # the recorded class: not imported unasked
    assert untrusted.returncode == 2 and "--trust-code" in untrusted.stderr
    curves = in_fresh_process("-m", "ensemble", "curves", run_dir, "--trust-code")
    assert curves.returncode == 0, curves.stderr
    assert (arrays_run.run_dir / "accuracy_vs_time.csv").is_file()
    images, _ = digits_arrays()
    expected = arrays_run.predict(images[:20]).tolist()
    code = ("import sys, json, numpy as np, ensemble; from ensemble.serving.replica import load_for_serving; "
            "from sklearn.datasets import load_digits; x = load_digits().data.astype(np.uint8).reshape(-1, 8, 8)[:20]; "
            "print(json.dumps([ensemble.load(sys.argv[1], trust_code=True).predict(x).tolist(), "
            "load_for_serving(sys.argv[1], 'tests.tiny:TinyAE').predict(x).tolist()]))")
    loaded = in_fresh_process("-c", code, run_dir)
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout.strip().splitlines()[-1]) == [expected, expected]


@pytest.mark.slow
def test_resume_continues_an_arrays_run_in_a_fresh_process(arrays_run, ray_instance, tmp_path):
    """An interrupted run on arrays (here: its report removed, as before the evaluation) resumes from
    its saved splits, with no data given. It joins the session's Ray: its own Ray start is not the point."""
    import shutil
    run_dir = tmp_path / "again"
    shutil.copytree(arrays_run.run_dir, run_dir)
    for name in ("report.json", "report.md"):
        (run_dir / name).unlink()
    resumed = in_fresh_process("-m", "ensemble", "run", "--resume", str(run_dir), "--quiet", "--trust-code",
                               env=joining_env(ray_instance))
    assert resumed.returncode == 0, resumed.stderr
    again = json.loads((run_dir / "report.json").read_text())
    assert again["ensemble"]["test_accuracy"] == arrays_run.report.ensemble.test_accuracy
    assert again["dataset"]["sha256"] == arrays_run.report.dataset.sha256


@pytest.mark.slow
def test_members_that_differ_by_overrides_train_report_and_load(ray_instance, tmp_path):
    cfg = build_config({}, TINY + ["members=3", "train.epochs=1", "baseline.width=null", f"output={tmp_path}",
                                   "name=overrides", "model.overrides=[{channels: [2, 4]}, {kernel_size: 3}, {}]"])
    result = ensemble.run(cfg, on_event=lambda e: None)
    settings = [m.architecture["settings"] for m in result.report.members]
    assert [s["channels"] for s in settings] == [[2, 4], [4, 8], [4, 8]]
    assert [s["kernel_size"] for s in settings] == [5, 3, 5]
    total = sum(m.architecture["parameters"] for m in result.report.members)
    assert result.report.ensemble.parameters == total
    assert abs(result.report.baseline.architecture["parameters"] - total) / total < 0.1
    images, _ = digits_arrays()
    assert ensemble.load(result.run_dir).predict(images[:10]).tolist() == result.predict(images[:10]).tolist()
    from ensemble.analysis.select import reselect
    selected = reselect(result.run_dir, ["combiner.kind=soft-vote"]).report  # each member rebuilt as it trained
    assert [m.architecture for m in selected.members] == [m.architecture for m in result.report.members]
    assert len(selected.ensemble.diversity.matrix) == 3


@pytest.mark.slow
def test_members_of_different_classes_train_report_and_load(ray_instance, tmp_path):
    images, labels = digits_arrays()
    cfg = build_config({}, TINY + ["members=3", "train.epochs=1", "baseline.enabled=false", f"output={tmp_path}",
                                   "name=classes"])
    result = ensemble.run(cfg, autoencoder=[TinyAE, ConvAE, TinyAE], dataset=(images, labels),
                          on_event=lambda e: None)
    classes = [m.architecture["class"] for m in result.report.members]
    assert classes == ["tests.tiny:TinyAE", "tests.test_custom_ensembles:ConvAE", "tests.tiny:TinyAE"]
    assert result.report.members[1].architecture["parameters"] == trainable_parameters(ConvAE())
    assert len(result.report.ensemble.diversity.matrix) == 3
    expected = result.predict(images[:10]).tolist()
    assert ensemble.load(result.run_dir).predict(images[:10]).tolist() == expected
    code = ("import sys, json, numpy as np; from ensemble.serving.replica import load_for_serving; "
            "from sklearn.datasets import load_digits; x = load_digits().data.astype(np.uint8).reshape(-1, 8, 8)[:10]; "
            "print(json.dumps(load_for_serving(sys.argv[1], None, trust_code=True).predict(x).tolist()))")
    served = in_fresh_process("-c", code, str(result.run_dir))
    assert served.returncode == 0, served.stderr
    assert json.loads(served.stdout.strip().splitlines()[-1]) == expected
