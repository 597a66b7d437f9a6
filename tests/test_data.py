"""ensemble.data: loaders, stratified splits, normalisation, bootstrap. Nothing is downloaded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.datasets
from torch.utils.data import Dataset

from ensemble.config import DataConfig
from ensemble.data import load_splits
from ensemble.data.splits import resolve_auto, split_counts
from tests.data_files import (
    TEST_MARK,
    TRAIN_MARK,
    cifar10_checking_these_files,
    write_cifar10,
    write_image_folder,
    write_mnist,
)
from workers.errors import InputError
from workers.sampling import bootstrap_indices


class DownloadAttempted(Exception):
    pass


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """A download attempt fails the test at once, whatever the loader does with other errors."""
    def refuse(*args, **kwargs):
        raise DownloadAttempted(args)
    for module in ("torchvision.datasets.mnist", "torchvision.datasets.cifar"):
        monkeypatch.setattr(f"{module}.download_and_extract_archive", refuse)


@pytest.fixture(scope="module")
def mnist_5k():
    return load_splits(DataConfig(), seed=0)


def decoded(x: torch.Tensor, pixel_max: float = 255.0) -> torch.Tensor:
    """The integer pixel codes of data_files (20 * label + 5 * channel + mark) back from minmax images."""
    return (x * pixel_max).round().long()


def assert_balanced(labels: torch.Tensor, num_classes: int) -> None:
    counts = torch.bincount(labels, minlength=num_classes)
    assert counts.max() - counts.min() <= 1, counts


# --- embedded datasets ---

def test_mnist_5k_default_splits(mnist_5k):
    s = mnist_5k
    assert (len(s.train_y), len(s.val_y), len(s.test_y)) == (3000, 1000, 1000)
    assert s.image_shape == (1, 28, 28) and s.num_classes == 10 and "mnist-5k" in s.source
    for x, y in ((s.train_x, s.train_y), (s.val_x, s.val_y), (s.test_x, s.test_y)):
        assert x.dtype == torch.float32 and x.is_contiguous() and y.dtype == torch.int64
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert_balanced(y, 10)
    assert s.train_x.max() == 1.0  # scaled by the known 0..255 range


def test_mnist_5k_splits_are_disjoint(mnist_5k):
    rows = torch.cat([mnist_5k.train_x, mnist_5k.val_x, mnist_5k.test_x]).flatten(1)
    assert len(torch.unique(rows, dim=0)) == 5000  # the 5,000 digits are distinct: every one is used exactly once


def test_same_seed_same_splits_other_seed_other_splits(mnist_5k):
    again = load_splits(DataConfig(), seed=0)
    other = load_splits(DataConfig(), seed=1)
    assert torch.equal(again.train_x, mnist_5k.train_x) and torch.equal(again.test_y, mnist_5k.test_y)
    assert not torch.equal(other.train_x, mnist_5k.train_x)


def test_digits_are_1x8x8_scaled_by_their_0_to_16_range():
    s = load_splits(DataConfig(name="digits", train_size=500, val_size=200, test_size=300), seed=0)
    assert s.image_shape == (1, 8, 8) and (len(s.train_y), len(s.val_y), len(s.test_y)) == (500, 200, 300)
    assert s.normalizer.scale == (16.0,) and s.train_x.max() == 1.0


# --- torchvision datasets from tiny files in the real formats ---

def test_mnist_reads_idx_files_through_torchvision(tmp_path):
    write_mnist(tmp_path, train_per_class=6, test_per_class=3)
    s = load_splits(DataConfig(name="mnist", root=str(tmp_path), train_size=30, val_size=20), seed=0)
    assert (len(s.train_y), len(s.val_y), len(s.test_y)) == (30, 20, 30)  # test: the whole official t10k split
    assert s.image_shape == (1, 28, 28)
    assert torch.equal(decoded(s.train_x)[:, 0, 0, 0], 20 * s.train_y + TRAIN_MARK)  # images kept their labels
    assert torch.equal(decoded(s.val_x)[:, 0, 0, 0], 20 * s.val_y + TRAIN_MARK)
    assert torch.equal(decoded(s.test_x)[:, 0, 0, 0], 20 * s.test_y + TEST_MARK)  # test comes from t10k only
    assert_balanced(s.train_y, 10)


def test_mnist_test_size_subsamples_the_official_test_split(tmp_path):
    write_mnist(tmp_path)
    s = load_splits(DataConfig(name="mnist", root=str(tmp_path), train_size=30, val_size=20, test_size=10), seed=0)
    assert len(s.test_y) == 10 and torch.equal(torch.bincount(s.test_y), torch.ones(10, dtype=torch.long))
    with pytest.raises(InputError, match="test_size=31 .* only 30 test images"):
        load_splits(DataConfig(name="mnist", root=str(tmp_path), train_size=30, val_size=20, test_size=31), seed=0)


def test_mnist_with_download_true_uses_files_already_there(tmp_path):
    write_mnist(tmp_path)
    s = load_splits(DataConfig(name="mnist", root=str(tmp_path), download=True, train_size=30, val_size=20), seed=0)
    assert len(s.train_y) == 30  # no_downloads would have failed the test otherwise


def test_cifar10_reads_python_batches_through_torchvision(tmp_path, monkeypatch):
    write_cifar10(tmp_path, per_class_per_batch=1, test_per_class=2)
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", cifar10_checking_these_files(tmp_path))
    s = load_splits(DataConfig(name="cifar10", root=str(tmp_path), train_size=30, val_size=10), seed=0)
    assert (len(s.train_y), len(s.val_y), len(s.test_y)) == (30, 10, 20)
    assert s.image_shape == (3, 32, 32) and s.classes[3] == "class-3"
    channel = torch.arange(3).view(1, 3)
    assert torch.equal(decoded(s.train_x)[:, :, 0, 0], 20 * s.train_y[:, None] + 5 * channel + TRAIN_MARK)
    assert torch.equal(decoded(s.test_x)[:, :, 7, 9], 20 * s.test_y[:, None] + 5 * channel + TEST_MARK)


def test_cifar10_files_that_fail_the_official_checksums_are_an_input_error(tmp_path):
    folder = write_cifar10(tmp_path)
    with pytest.raises(InputError, match="checksums") as caught:
        load_splits(DataConfig(name="cifar10", root=str(tmp_path), train_size=30, val_size=10), seed=0)
    assert str(folder) in str(caught.value)


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST/raw"), ("cifar10", "cifar-10-batches-py")])
def test_missing_files_name_the_path_and_the_fix(tmp_path, name, folder):
    with pytest.raises(InputError, match="data.download=true") as caught:
        load_splits(DataConfig(name=name, root=str(tmp_path / "nowhere")), seed=0)
    assert str(tmp_path / "nowhere" / folder) in str(caught.value)


@pytest.mark.parametrize("content, reason", [
    (b"\x00\x00\x08\x03garbage", "holds 11 bytes, fewer than an IDX header"),
    (b"PK\x03\x04" + bytes(40), "starts with 0x504b0304, not the IDX magic number 0x00000803"),
    (b"\x00\x00\x08\x03" + (60).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(100),
     "holds 116 bytes but its header declares 60 x 28 x 28 values (47,056 bytes)"),
])
def test_corrupt_idx_file_is_an_input_error_that_says_what_is_wrong(tmp_path, content, reason):
    raw = write_mnist(tmp_path)
    (raw / "train-images-idx3-ubyte").write_bytes(content)
    with pytest.raises(InputError, match="not valid IDX files") as caught:
        load_splits(DataConfig(name="mnist", root=str(tmp_path), train_size=30, val_size=20), seed=0)
    assert f"train-images-idx3-ubyte {reason}" in str(caught.value)


def test_images_as_nested_lists_work_and_ragged_ones_are_named():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 255, (60, 6, 6)).tolist()
    labels = [i % 3 for i in range(60)]
    s = load_splits(DataConfig(name="npz", train_size=30, val_size=15), seed=0, dataset=(images, labels))
    assert s.image_shape == (1, 6, 6) and len(s.test_y) == 15
    ragged = images[:59] + [[[0] * 5] * 6]
    with pytest.raises(InputError, match="differ in shape"):
        load_splits(DataConfig(name="npz", train_size=30, val_size=15), seed=0, dataset=(ragged, labels))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_images_with_a_nan_or_infinite_pixel_are_refused_in_every_float_type(dtype, bad):
    from ensemble.data.sources import as_images
    images = torch.zeros(4, 1, 6, 6, dtype=dtype)
    assert as_images(images, "the images").dtype == dtype  # finite: taken as they are
    images[2, 0, 3, 1] = bad
    with pytest.raises(InputError, match="the images: images contain NaN or infinite values"):
        as_images(images, "the images")


def test_constant_images_train_but_are_warned_about():
    images, labels = torch.full((60, 1, 6, 6), 7.0), torch.arange(60) % 3
    with pytest.warns(UserWarning, match="every training image of custom dataset .* is constant"):
        load_splits(DataConfig(name="npz", train_size=30, val_size=15), seed=0, dataset=(images, labels))


@pytest.mark.parametrize("name", ["mnist", "cifar10", "folder", "npz"])
def test_datasets_read_from_disk_need_data_root(name):
    with pytest.raises(InputError, match="data.root"):
        load_splits(DataConfig(name=name), seed=0)


# --- image folders and npz files ---

def test_grayscale_folder_stays_one_channel(tmp_path):
    write_image_folder(tmp_path, {"cat": "L", "dog": "L", "owl": "L"}, per_class=6, size=(6, 5))
    s = load_splits(DataConfig(name="folder", root=str(tmp_path), train_size=9, val_size=3), seed=0)
    assert s.image_shape == (1, 5, 6) and s.classes == ("cat", "dog", "owl")
    assert (len(s.train_y), len(s.val_y), len(s.test_y)) == (9, 3, 6)
    assert torch.equal(decoded(s.train_x)[:, 0, 4, 5], 20 * s.train_y + TRAIN_MARK)


def test_folder_mixing_grayscale_and_rgb_becomes_rgb(tmp_path):
    write_image_folder(tmp_path, {"gray": "L", "rgb": "RGB"})
    s = load_splits(DataConfig(name="folder", root=str(tmp_path), train_size=6, val_size=2), seed=0)
    assert s.image_shape == (3, 5, 6)
    codes = decoded(torch.cat([s.train_x, s.val_x, s.test_x]))[:, :, 0, 0]
    labels = torch.cat([s.train_y, s.val_y, s.test_y])
    assert (codes[labels == 0] == TRAIN_MARK).all()  # gray copied to all three channels
    assert torch.equal(codes[labels == 1][0], torch.tensor([21, 26, 31]))


def test_folder_with_different_image_sizes_names_them(tmp_path):
    write_image_folder(tmp_path, {"x": "L"}, size=(6, 5))
    write_image_folder(tmp_path, {"y": "L"}, size=(7, 5))
    with pytest.raises(InputError, match=r"6x5 \(6 images.*7x5 \(6 images"):
        load_splits(DataConfig(name="folder", root=str(tmp_path), train_size=6, val_size=2), seed=0)


def test_npz_channels_last_with_arbitrary_labels(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 200, size=(40, 4, 5, 3)).astype(np.float64)  # N x H x W x C
    y = np.repeat([70, -3, 12, 5], 10)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    s = load_splits(DataConfig(name="npz", root=str(tmp_path / "data.npz"), train_size=20, val_size=8), seed=0)
    assert s.image_shape == (3, 4, 5) and s.classes == ("-3", "5", "12", "70") and s.num_classes == 4
    assert (len(s.train_y), len(s.val_y), len(s.test_y)) == (20, 8, 12)
    assert s.train_x.min() == 0.0 and s.train_x.max() == 1.0  # npz: the training split's own min and max
    assert torch.equal(torch.bincount(s.train_y), torch.full((4,), 5))


def test_npz_problems_are_input_errors(tmp_path):
    path = tmp_path / "data.npz"
    with pytest.raises(InputError, match="does not exist"):
        load_splits(DataConfig(name="npz", root=str(path)), seed=0)
    np.savez(path, images=np.zeros((4, 2, 2)), y=np.arange(4))
    with pytest.raises(InputError, match="lacks array 'x'"):
        load_splits(DataConfig(name="npz", root=str(path)), seed=0)
    np.savez(path, x=np.zeros((4, 2, 2)), y=np.arange(3))
    with pytest.raises(InputError, match="one value per image"):
        load_splits(DataConfig(name="npz", root=str(path)), seed=0)


# --- sizes ---

def test_sizes_beyond_the_data_name_the_numbers(mnist_5k):
    with pytest.raises(InputError, match=r"train_size=4,500 \+ data.val_size=1,000 asks for 5,500 .* only 5,000"):
        load_splits(DataConfig(train_size=4500), seed=0)


def test_no_images_left_for_the_test_set_is_an_input_error(mnist_5k):
    with pytest.raises(InputError, match="no images would remain for the test set"):
        load_splits(DataConfig(train_size=None), seed=0)


def test_train_size_null_takes_the_rest_when_test_size_is_set(mnist_5k):
    s = load_splits(DataConfig(train_size=None, val_size=500, test_size=500), seed=0)
    assert (len(s.train_y), len(s.val_y), len(s.test_y)) == (4000, 500, 500)


def test_too_few_images_for_a_stratified_split(mnist_5k):
    with pytest.raises(InputError, match="stratified validation split"):
        load_splits(DataConfig(val_size=5), seed=0)  # fewer images than the 10 classes
    x, y = torch.zeros(11, 3, 3), torch.tensor([0] * 10 + [1])
    with pytest.raises(InputError, match="the smallest has 1"):
        load_splits(DataConfig(train_size=5, val_size=3), seed=0, dataset=(x, y))


# --- sizes as counts or fractions (pure functions of the config and the number of images) ---

@pytest.mark.parametrize("sizes, pool, official, expected", [
    ({}, 5000, None, (3000, 1000, None)),                              # the defaults, where they fit
    ({}, 400, None, (240, 80, None)),                                  # too small: 60% / 20% / the rest
    ({"test_size": 0}, 400, None, (320, 80, 0)),                       # no test split: 80% / 20%
    ({}, 3000, 10000, (2400, 600, None)),                              # an official test split is kept apart
    ({"train_size": 0.5, "val_size": 0.25}, 401, None, (200, 101, None)),  # train rounds down, held-out up
    ({"train_size": None, "val_size": 0.2, "test_size": 0.1}, 400, None, (None, 80, 40)),
    ({"train_size": 100, "val_size": 0.1, "test_size": 0.5}, 1000, 60, (100, 100, 30)),  # test: of the official split
])
def test_sizes_become_counts_like_train_test_split(sizes, pool, official, expected):
    resolved, _ = resolve_auto(DataConfig(**sizes), pool, official)
    counts = split_counts(resolved, pool, official)
    assert (counts.train, counts.val, counts.test) == expected


def test_auto_falls_back_to_fractions_with_one_line_saying_so():
    resolved, note = resolve_auto(DataConfig(), 400, None)
    assert (resolved.train_size, resolved.val_size) == (0.6, 0.2)
    assert note.count("\n") == 0 and "240/80/80 train/val/test" in note and "too few" in note
    widest = resolve_auto(DataConfig(), 4_000, None)[1]  # the largest pool that still falls back
    assert all(len("warning: " + n) <= 120 for n in (note, widest))  # as every line a run prints, with the prefix
    assert resolve_auto(DataConfig(), 5000, None) == (DataConfig(train_size=3000, val_size=1000), None)
    assert resolve_auto(DataConfig(train_size=10, val_size=5), 400, None) == (DataConfig(train_size=10, val_size=5),
                                                                              None)


@pytest.mark.parametrize("sizes, pool, official, message", [
    ({"train_size": 0.7, "val_size": 0.4}, 400, None, "add up to 1.1: fractions of the dataset cannot sum past 1"),
    ({"train_size": 0.8, "val_size": 0.2}, 400, None, "no images would remain for the test set"),
    ({"train_size": 0.001, "val_size": 10}, 400, None, "data.train_size=0.001 is 0 of the 400 images"),
    ({"train_size": 300, "val_size": 0.3}, 400, None, r"data.train_size=300 \+ data.val_size=0.3 \(120 images\) "
                                                       "asks for 420 images"),
    ({"train_size": 10, "val_size": 5, "test_size": 61}, 400, 60, "data.test_size=61 but the data has only 60 test"),
])
def test_sizes_that_cannot_work_are_input_errors(sizes, pool, official, message):
    with pytest.raises(InputError, match=message):
        split_counts(DataConfig(**sizes), pool, official)


def test_a_small_custom_dataset_without_sizes_splits_60_20_20():
    x, y = torch.rand(400, 8, 8), torch.arange(400) % 4
    s = load_splits(DataConfig(), seed=0, dataset=(x, y))
    assert (len(s.train_y), len(s.val_y), len(s.test_y)) == (240, 80, 80) and s.data.train_size == 0.6
    assert "too few for the default split sizes" in s.note
    held_in = load_splits(DataConfig(train_size=None, val_size=0.2, test_size=0), seed=0, dataset=(x, y))
    assert (len(held_in.train_y), len(held_in.val_y), len(held_in.test_y)) == (320, 80, 0)
    assert held_in.test_x.shape == (0, 1, 8, 8) and held_in.note is None


def test_a_stratified_fraction_too_small_for_every_class_is_an_input_error():
    x, y = torch.rand(40, 4, 4), torch.tensor([0] * 36 + [1] * 4)
    with pytest.raises(InputError, match=r"cannot draw a stratified validation split \(data.val_size\) of 1 from 40"):
        load_splits(DataConfig(train_size=0.5, val_size=0.01), seed=0, dataset=(x, y))


# --- custom data (the Python API) ---

def test_custom_pair_without_channel_axis():
    x = torch.rand(30, 6, 6) * 4
    y = np.array(["b", "a", "c"] * 10)
    s = load_splits(DataConfig(train_size=15, val_size=6), seed=0, dataset=(x, y))
    assert s.image_shape == (1, 6, 6) and s.classes == ("a", "b", "c") and len(s.test_y) == 9
    assert "custom dataset" in s.source


class _PairDataset(Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.full((2, 4, 4), float(i % 3)), torch.tensor(i % 3)


def test_custom_torch_dataset():
    s = load_splits(DataConfig(train_size=12, val_size=6), seed=0, dataset=_PairDataset(24))
    assert s.image_shape == (2, 4, 4) and s.num_classes == 3 and len(s.test_y) == 6
    assert torch.equal(s.train_x[:, 1, 2, 3] * 2, s.train_y.float())  # minmax over the training range 0..2


def test_custom_dataset_of_wrong_kind():
    with pytest.raises(InputError, match="torch Dataset"):
        load_splits(DataConfig(), seed=0, dataset=42)


# --- normalisation ---

def test_standardize_uses_training_statistics_per_channel(tmp_path):
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(50, 10, (60, 1, 4, 4)), rng.normal(-7, 0.5, (60, 1, 4, 4))], axis=1)
    y = np.repeat(np.arange(3), 20)
    s = load_splits(DataConfig(normalize="standardize", train_size=30, val_size=15), seed=0, dataset=(x, y))
    mean, std = s.train_x.mean(dim=(0, 2, 3)), s.train_x.std(dim=(0, 2, 3), correction=0)
    assert torch.allclose(mean, torch.zeros(2), atol=1e-5) and torch.allclose(std, torch.ones(2), atol=1e-5)
    assert abs(s.normalizer.shift[0] - 50) < 3 and abs(s.normalizer.shift[1] + 7) < 0.3


def test_normalizer_maps_raw_pixels_like_the_splits(mnist_5k):
    raw = torch.tensor([0, 51, 255], dtype=torch.uint8).view(3, 1, 1, 1)
    assert torch.allclose(mnist_5k.normalizer(raw).flatten(), torch.tensor([0.0, 0.2, 1.0]))


# --- bootstrap ---

def test_bootstrap_indices_are_seeded_draws_with_replacement():
    first = bootstrap_indices(200, seed=7)
    assert torch.equal(first, bootstrap_indices(200, seed=7))
    assert not torch.equal(first, bootstrap_indices(200, seed=8))
    assert first.dtype == torch.int64 and len(first) == 200 and 0 <= first.min() and first.max() < 200
    assert 100 < len(torch.unique(first)) < 160  # about 63% distinct
