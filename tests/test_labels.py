"""Few labels: `data.labels_per_class` (the combiner's labelled subset), unlabelled images for the
autoencoders only, and `ensemble labels` (accuracy against labels per class from checkpoints).

The subset and the input checks are pure and tested without Ray; runs that start Ray are `slow`
and tiny (8x8 digits, two members)."""

import json

import numpy as np
import pytest
import torch

from ensemble.config import DataConfig, build_config
from ensemble.data import load_splits
from ensemble.data.labelled import labelled_subset
from workers.errors import InputError

DIGITS = {"name": "digits", "train_size": 300, "val_size": 100, "test_size": 200}


# --- the labelled subset: a pure function ---

def test_subset_takes_the_count_from_every_class_seeded():
    labels = np.repeat(np.arange(4), [10, 7, 12, 5])
    subset = labelled_subset(labels, 3, seed=7)
    assert np.bincount(labels[subset]).tolist() == [3, 3, 3, 3]
    assert np.array_equal(subset, np.sort(subset)) and len(set(subset.tolist())) == 12
    assert np.array_equal(subset, labelled_subset(labels, 3, seed=7))
    assert not np.array_equal(subset, labelled_subset(labels, 3, seed=8))
    assert not np.array_equal(labelled_subset(labels, 3, (7, 0)), labelled_subset(labels, 3, (7, 1)))
    assert labelled_subset(labels, None, seed=7) is None
    assert labelled_subset(labels, 3, seed=-1) is not None  # negative run seeds are allowed


def test_subset_larger_than_a_class_names_the_class():
    labels = np.repeat(np.arange(3), [10, 4, 12])
    with pytest.raises(InputError, match=r"labels_per_class=5 but class 'b' has only 4"):
        labelled_subset(labels, 5, seed=0, classes=("a", "b", "c"))
    assert len(labelled_subset(labels, 4, seed=0)) == 12  # every image of the smallest class is allowed


@pytest.mark.parametrize("count", [0, -3])
def test_zero_or_negative_counts_are_config_errors(count):
    with pytest.raises(InputError, match="data.labels_per_class"):
        build_config({}, [f"data.labels_per_class={count}"])
    with pytest.raises(InputError, match="at least 1"):
        labelled_subset(np.zeros(5, dtype=int), count, seed=0)


# --- the splits: what the combiner and the autoencoders each get ---

def test_splits_label_a_subset_and_keep_every_training_image_for_the_autoencoders():
    splits = load_splits(DataConfig(**DIGITS, labels_per_class=2), seed=0)
    assert len(splits.train_y) == 300 and len(splits.autoencoder_x) == 300
    assert np.bincount(splits.labelled_y.numpy()).tolist() == [2] * 10
    assert torch.equal(splits.labelled_x, splits.train_x[splits.labelled])
    again = load_splits(DataConfig(**DIGITS, labels_per_class=2), seed=0)
    assert torch.equal(splits.labelled, again.labelled)  # `ensemble select` re-draws the run's own subset
    every = load_splits(DataConfig(**DIGITS), seed=0)
    assert every.labelled is None and len(every.labelled_y) == 300


def test_labels_per_class_larger_than_the_training_split_holds_is_an_input_error():
    with pytest.raises(InputError, match=r"labels_per_class=40 but class '\d' has only \d+ images in the training"):
        load_splits(DataConfig(**DIGITS, labels_per_class=40), seed=0)


def _images(n, shape=(8, 8), seed=0):
    return torch.randint(0, 17, (n, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _labels(n):
    return torch.arange(n) % 3


def test_unlabelled_images_join_only_the_autoencoders_training_images():
    splits = load_splits(DataConfig(train_size=60, val_size=15, test_size=15), 0,
                         dataset=(_images(90), _labels(90)), unlabelled=_images(40, seed=1))
    assert len(splits.unlabelled_x) == 40 and len(splits.autoencoder_x) == 100
    assert len(splits.labelled_y) == 60 and (len(splits.val_y), len(splits.test_y)) == (15, 15)
    # scaled like the labelled images (the training split's own min and max)
    assert torch.equal(splits.unlabelled_x, splits.normalizer(_images(40, seed=1).unsqueeze(1)))


@pytest.mark.parametrize("unlabelled, message", [
    (_images(5, (6, 6)), r"unlabelled images are 1 x 6 x 6 .* labelled images are 1 x 8 x 8"),
    (_images(5, (3, 8, 8)), r"unlabelled images are 3 x 8 x 8"),
    (torch.full((5, 8, 8), float("nan")), "NaN"),
])
def test_bad_unlabelled_images_are_input_errors(unlabelled, message):
    with pytest.raises(InputError, match=message):
        load_splits(DataConfig(train_size=60, val_size=15, test_size=15), 0,
                    dataset=(_images(90), _labels(90)), unlabelled=unlabelled)


def test_npz_x_unlabelled_trains_the_autoencoders_only(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x=_images(90).numpy(), y=_labels(90).numpy(), x_unlabelled=_images(25, seed=2).numpy())
    splits = load_splits(DataConfig(name="npz", root=str(path), train_size=60, val_size=15, test_size=15), 0)
    assert len(splits.autoencoder_x) == 85 and len(splits.labelled_y) == 60
    np.savez(path, x=_images(90).numpy(), y=_labels(90).numpy(), x_unlabelled=_images(25, (4, 4)).numpy())
    with pytest.raises(InputError, match="unlabelled images of npz .* 1 x 4 x 4"):
        load_splits(DataConfig(name="npz", root=str(path), train_size=60, val_size=15, test_size=15), 0)


def test_folder_unlabelled_subfolder_is_not_a_class(tmp_path):
    from PIL import Image
    for folder, count in (("cat", 12), ("dog", 12), ("unlabelled", 7)):
        (tmp_path / folder / "deeper").mkdir(parents=True)
        for i in range(count):
            place = tmp_path / folder / ("deeper" if i % 2 else "") / f"{i}.png"
            Image.fromarray(_images(1, seed=i)[0].numpy() * 15).save(place)
    splits = load_splits(DataConfig(name="folder", root=str(tmp_path), train_size=16, val_size=4, test_size=4), 0)
    assert splits.classes == ("cat", "dog")
    assert len(splits.unlabelled_x) == 7 and len(splits.autoencoder_x) == 23


def test_prepare_rejects_bad_labels_before_ray_starts(tmp_path, ray_must_not_start):
    from ensemble.job import prepare
    config = build_config({}, ["data.name=digits", "data.labels_per_class=500", f"output={tmp_path}"])
    with pytest.raises(InputError, match="labels_per_class=500"):
        prepare.run(config, None, None, resume=False)
    with pytest.raises(InputError, match="unlabelled images are 1 x 5 x 5"):
        prepare.run(build_config({}, ["data.name=digits", f"output={tmp_path}"]), None, None, False, _images(3, (5, 5)))
    assert not list(tmp_path.iterdir())


def test_report_and_caption_say_how_many_labels_the_combiner_used():
    from ensemble.report.entries import dataset_report
    from ensemble.report.tables import labels_caption
    splits = load_splits(DataConfig(train_size=60, val_size=15, test_size=15, labels_per_class=4), 0,
                         dataset=(_images(90), _labels(90)), unlabelled=_images(10))
    report = dataset_report(splits)
    assert (report.train, report.labelled, report.labels_per_class, report.unlabelled) == (60, 12, 4, 10)
    caption = labels_caption(report)
    assert "12 labelled images (4 per class) of the 60 training images" in caption
    assert "10 unlabelled images (70 in all)" in caption
    assert labels_caption(dataset_report(load_splits(DataConfig(**DIGITS), 0))) == ""


def test_the_papers_small_mnist_setting_from_a_local_copy(tmp_path):
    """The guide's command: 4.8k train / 1.2k validation from MNIST's training images, its official
    test split kept whole (written here in the real IDX format; the pixels do not matter)."""
    from tests.data_files import write_mnist
    write_mnist(tmp_path, train_per_class=600, test_per_class=20)
    config = build_config({}, ["data.name=mnist", f"data.root={tmp_path}", "data.train_size=4800",
                               "data.val_size=1200", "data.labels_per_class=10"])
    with pytest.warns(UserWarning, match="constant"):
        splits = load_splits(config.data, config.seed)
    sizes = (len(splits.train_y), len(splits.val_y), len(splits.test_y), len(splits.labelled_y))
    assert sizes == (4800, 1200, 200, 100)


# --- `ensemble labels`: the pure parts ---

def test_per_class_counts_parse_and_bad_ones_are_input_errors():
    from ensemble.analysis.labels import parse_counts
    assert parse_counts("10,1, 5,5") == [1, 5, 10]
    for text in ("", "0,5", "a,b"):
        with pytest.raises(InputError, match="--per-class"):
            parse_counts(text)


def test_rows_pair_the_sides_by_draw():
    from ensemble.analysis.labels import LabelCurve, LabelsRow, labels_table
    row = LabelsRow(5, 50, {"ensemble": [0.80, 0.82, 0.78], "untrained": [0.81, 0.80, 0.80],
                            "baseline": [0.70, 0.74, 0.69]})
    diff = row.difference("ensemble", "baseline")
    assert diff["draws"] == pytest.approx([0.10, 0.08, 0.09]) and diff["mean"] == pytest.approx(0.09)
    assert diff["ci95"][0] > 0 and diff["p"] < 0.05  # consistent across draws: the paired test sees it
    assert row.estimate("ensemble")["ci95"][0] < 0.80 < row.estimate("ensemble")["ci95"][1]
    assert LabelsRow(5, 50, {"ensemble": [0.3, 0.9]}).estimate("ensemble")["ci95"] == [0.0, 1.0]  # t reaches past
    document = row.to_json()
    assert set(document) >= {"ensemble", "untrained", "baseline", "ensemble_minus_baseline",
                             "ensemble_minus_untrained"}
    alone = LabelsRow(1, 10, {"ensemble": [0.5], "untrained": [0.4]})  # one draw, no baseline
    assert alone.estimate("ensemble")["ci95"] is None and "ensemble_minus_baseline" not in alone.to_json()
    table = labels_table(LabelCurve("r", 3, [row], None, None))
    assert "| 5 | 50 | 0.800 [" in table and "+0.090 [" in table


def test_labels_command_on_a_directory_without_a_run_exits_2(tmp_path, capsys):
    from ensemble.cli import main
    assert main(["labels", str(tmp_path), "--per-class", "1,5"]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["labels", str(tmp_path), "--per-class", "0"]) == 2
    assert main(["labels", str(tmp_path), "--autoencoder", "no_such_module:AE"]) == 2
    assert "no_such_module:AE cannot be imported" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


# --- Ray runs (slow, tiny) ---

@pytest.mark.slow
def test_unlabelled_images_reach_the_actors(ray_instance):
    import ray

    from ensemble.scheduling.session import share_data
    splits = load_splits(DataConfig(train_size=60, val_size=15, test_size=15), 0,
                         dataset=(_images(90), _labels(90)), unlabelled=_images(40, seed=1))
    shared = ray.get(share_data(splits))
    assert len(shared["train_x"]) == 100 and len(shared["val_x"]) == 15


@pytest.mark.slow
def test_one_label_per_class_scores_clearly_lower_than_every_label(tiny_run, tmp_path):
    import ensemble
    from tests.tiny import TINY
    full, _ = tiny_run
    few = ensemble.run(build_config({}, TINY + [f"output={tmp_path}", "name=few", "data.labels_per_class=1"]),
                       on_event=lambda e: None)
    assert few.report.dataset.labelled == 10 and full.report.dataset.labelled == full.report.dataset.train
    assert "10 labelled images (1 per class)" in (few.run_dir / "report.md").read_text()
    few_scores = (few.report.ensemble.test_accuracy, few.report.baseline.test_accuracy)
    full_scores = (full.report.ensemble.test_accuracy, full.report.baseline.test_accuracy)
    assert all(f < a - 0.1 for f, a in zip(few_scores, full_scores, strict=True)), (few_scores, full_scores)


def _files(run_dir):
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_labels_command_writes_json_and_plot_and_nothing_else(saved_run, tmp_path, capsys):
    import shutil

    from ensemble.cli import main
    # a copy: labels.json in the session's run would show up in every later test's copy of it
    saved_run = shutil.copytree(saved_run, tmp_path / "saved")
    before = _files(saved_run)
    report = (saved_run / "report.json").read_bytes()
    assert main(["labels", str(saved_run), "--per-class", "1,5", "--draws", "2"]) == 0
    out = capsys.readouterr().out
    assert "| labels per class |" in out and "ensemble - baseline" in out
    after = _files(saved_run)
    assert set(after) - set(before) == {"labels.json", "labels.png"}
    assert {k: v for k, v in after.items() if k in before} == before  # no checkpoint or report touched
    assert (saved_run / "report.json").read_bytes() == report
    document = json.loads((saved_run / "labels.json").read_text())
    assert [row["per_class"] for row in document["rows"]] == [1, 5]
    assert [row["labelled"] for row in document["rows"]] == [10, 50]
    first = document["rows"][0]
    assert len(first["ensemble"]["draws"]) == 2 and set(first) >= {"untrained", "baseline",
                                                                   "ensemble_minus_baseline"}
    assert document["checkpoints"]["untrained"] == [[name, 0] for name, _ in document["checkpoints"]["ensemble"]]
    assert (saved_run / "labels.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_labels_command_rejects_more_labels_than_a_class_has(saved_run, capsys):
    from ensemble.cli import main
    before = _files(saved_run)
    assert main(["labels", str(saved_run), "--per-class", "5,500"]) == 2
    assert "--per-class=500 but class" in capsys.readouterr().err
    assert _files(saved_run) == before


@pytest.mark.slow
def test_labels_command_on_a_custom_autoencoder_without_a_baseline(ray_instance, tmp_path, capsys):
    import ensemble
    from ensemble.cli import main
    from tests.tiny import TINY, TinyAE
    result = ensemble.run(build_config({}, TINY + [f"output={tmp_path}", "name=custom", "baseline.enabled=false"]),
                          autoencoder=TinyAE, on_event=lambda e: None)
    args = ["labels", str(result.run_dir), "--per-class", "2", "--draws", "2", "--autoencoder", "tests.tiny:TinyAE"]
    assert main(args) == 0
    assert "ensemble - untrained" in capsys.readouterr().out
    row = json.loads((result.run_dir / "labels.json").read_text())["rows"][0]
    assert "baseline" not in row and "ensemble_minus_baseline" not in row and len(row["untrained"]["draws"]) == 2
