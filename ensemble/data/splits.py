"""Stratified, seeded train / validation / test splits, normalised with training statistics only.

`load_splits` draws the splits from a `Source` and normalises them; the `Normalizer` it returns
maps the dataset's own pixel scale to the trained one, so predict() can take raw images.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sized, Union, cast, overload

import numpy as np
import torch

from ensemble.config import ARRAYS, AUTO_COUNTS, DataConfig
from ensemble.data.bounds import check_fits_in_memory, check_image_size
from ensemble.data.labelled import join_unlabelled, labelled_subset, unlabelled_images
from ensemble.data.normalizer import Normalizer
from ensemble.data.records import data_record, read_splits
from ensemble.data.sources import Labelled, Source, load_source
from workers.errors import InputError
from workers.layout import SPLITS


@dataclass(frozen=True)
class Splits:
    """The three splits as normalised float32 tensors (N x C x H x W) with int64 labels 0..K-1."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    source: str  # human description, e.g. "mnist-5k (5,000 MNIST digits, embedded)"
    normalizer: Normalizer  # the dataset's own pixel scale -> the scale of the tensors above
    classes: tuple[str, ...]  # class names; label i is classes[i]
    label_values: tuple = ()  # label i as the dataset gives it (ints for built-in sets, the user's own values)
    data: Optional[DataConfig] = None  # the data config with `auto` sizes resolved
    note: Optional[str] = None  # says so when `auto` sizes fell back to fractions
    unlabelled_x: Optional[torch.Tensor] = None  # normalised images without labels: the autoencoders' only
    labelled: Optional[torch.Tensor] = None  # indices of the training images the combiner sees (None: all)
    record: Optional[dict] = None  # what data this is: name, shape, dtype, class counts, sha256 (data.records)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        channels, height, width = self.train_x.shape[1:]
        return channels, height, width

    @property
    def autoencoder_x(self) -> torch.Tensor:
        """What the autoencoders train on: every training image, and the unlabelled ones after them."""
        return self.train_x if self.unlabelled_x is None else torch.cat([self.train_x, self.unlabelled_x])

    @property
    def labelled_x(self) -> torch.Tensor:
        """The training images the combiner fits on (data.labels_per_class of each class, or all)."""
        return self.train_x if self.labelled is None else self.train_x[self.labelled]

    @property
    def labelled_y(self) -> torch.Tensor:
        return self.train_y if self.labelled is None else self.train_y[self.labelled]


def load_splits(cfg: DataConfig, seed: int, dataset=None, unlabelled=None, run_dir: Optional[Path] = None
                ) -> Splits:
    """Load `cfg.name` (or the custom `dataset`, which replaces data.name/root/download), split, normalise.

    `dataset`: a torch Dataset of (image, label) pairs, or an (images, labels) pair of tensors
    or arrays. Custom labels may be any sortable values; they become 0..K-1 in sorted order.
    `unlabelled`: images without labels (the layout of `dataset`'s); with the source's own (an npz's
    x_unlabelled, a folder's unlabelled/) they join the autoencoders' training images only.
    Sizes set to `auto` are resolved against the data (`resolve_auto`); `Splits.data` holds them.
    The combiner's labelled subset (data.labels_per_class) is drawn from the training split with `seed`.
    data.name=arrays without `dataset`: the splits the run in `run_dir` saved (`saved_splits`).
    """
    if dataset is None and cfg.name == ARRAYS:
        return saved_splits(cfg, run_dir)
    data = load_source(cfg, dataset)
    check_bounds(data, cfg.max_pixels, unlabelled)
    official = len(data.test.y) if data.test is not None else None
    cfg, note = resolve_auto(cfg, len(data.pool.y), official, data.description)
    train, val, test = _split(data, split_counts(cfg, len(data.pool.y), official, data.description), seed)
    warn_if_constant(train.x, data.description)
    extra = join_unlabelled(unlabelled_images(data.unlabelled, data.pool.x, f"the unlabelled images of "
                                              f"{data.description}") if data.unlabelled is not None else None,
                            unlabelled_images(unlabelled, data.pool.x) if unlabelled is not None else None)
    labelled = labelled_subset(train.y.numpy(), cfg.labels_per_class, seed, data.classes)
    # the labelled training split alone sets the scale, so a run read back without its unlabelled
    # images (a custom run's `ensemble select`) scales every image as the run did
    normalizer = _fit_normalizer(cfg.normalize, train.x, data.pixel_range)
    return Splits(normalizer(train.x), train.y, normalizer(val.x), val.y, normalizer(test.x), test.y,
                  num_classes=len(data.classes), source=data.description, normalizer=normalizer,
                  classes=data.classes, label_values=data.label_values or tuple(range(len(data.classes))),
                  data=cfg, note=note, unlabelled_x=normalizer(extra) if extra is not None else None,
                  labelled=torch.from_numpy(labelled) if labelled is not None else None,
                  record=data_record(data, ARRAYS if dataset is not None else cfg.name))


def check_bounds(data: Source, max_pixels: int, unlabelled=None) -> None:
    """Before any image is converted to float32: each image within data.max_pixels, and the whole
    float32 copy within the memory free on this machine."""
    check_image_size(tuple(data.pool.x.shape), max_pixels, data.description)
    parts: tuple[Sized, ...] = (data.pool.y, data.test.y if data.test is not None else (),
                                data.unlabelled if data.unlabelled is not None else (),
                                unlabelled if unlabelled is not None else ())
    count = sum(len(part) for part in parts)
    check_fits_in_memory(count, tuple(data.pool.x.shape[1:]), data.description)


def saved_splits(cfg: DataConfig, run_dir: Optional[Path]) -> Splits:
    """The splits a run on in-memory arrays drew, as it saved them; an InputError asking for the data
    when it saved none (data.save_splits=false, or a run from before splits were saved)."""
    saved = read_splits(run_dir, cfg) if run_dir is not None else None
    if saved is None:
        where = f"run {str(run_dir)!r}" if run_dir is not None else "this config"
        raise InputError(f"{where} trained on in-memory arrays (data.name=arrays) and no {SPLITS} holds the splits "
                         "it drew (data.save_splits=false, or there is no run directory); pass the same data again "
                         "from Python: dataset=(images, labels).")
    return Splits(**saved)


# --- split sizes: pure functions of the config and the number of images ---

@dataclass(frozen=True)
class SplitCounts:
    train: Optional[int]  # None: every pool image not drawn for validation or test
    val: int
    test: Optional[int]   # None: the rest of the pool, or the whole official test split; 0: no test split


def resolve_auto(cfg: DataConfig, pool: int, official_test: Optional[int], description: str = "the data"
                 ) -> tuple[DataConfig, Optional[str]]:
    """`auto` train/validation sizes made concrete: the default counts (3,000 / 1,000) when the data
    has room for them and the test split, else the fractions 60% / 20% (80% / 20% when no test
    split is drawn from these images), with a one-line note saying so."""
    auto = [key for key in AUTO_COUNTS if getattr(cfg, key) == "auto"]
    if not auto:
        return cfg, None
    test_from_pool = official_test is None and cfg.test_size != 0
    test = _count(cfg.test_size, pool, held_out=True) if test_from_pool and cfg.test_size is not None else 0
    if sum(AUTO_COUNTS.values()) + max(test, int(test_from_pool)) <= pool:
        return cfg.model_copy(update={key: AUTO_COUNTS[key] for key in auto}), None
    fractions = {"train_size": 0.6 if test_from_pool else 0.8, "val_size": 0.2}
    resolved = cfg.model_copy(update={key: fractions[key] for key in auto})
    counts = split_counts(resolved, pool, official_test, description)
    train = counts.train if counts.train is not None else pool - counts.val - (counts.test or 0)
    test = counts.test if counts.test is not None else (official_test or pool - train - counts.val)
    # at most 111 characters (pool < 10,000 here): with the log's "warning: " it stays within the 120
    # columns the docs promise of every line a run prints
    sizes = ", ".join(f"{key.removesuffix('_size')} {fractions[key]}" for key in auto)
    note = (f"{pool:,} images are too few for the default split sizes: {sizes} -> "
            f"{train:,}/{counts.val:,}/{test:,} train/val/test")
    return resolved, note


def split_counts(cfg: DataConfig, pool: int, official_test: Optional[int], description: str = "the data"
                 ) -> SplitCounts:
    """Each size as a number of images: a fraction of the pool (of the official test split for
    test_size) rounds as train_test_split rounds it, down for training and up for held-out splits.
    Sizes that cannot work are an InputError naming them."""
    if official_test is not None and isinstance(cfg.test_size, int) and cfg.test_size > official_test:
        raise InputError(f"data.test_size={cfg.test_size:,} but {description} has only {official_test:,} "
                         "test images; lower data.test_size or set it to null for all of them.")
    from_pool = {"data.train_size": cfg.train_size, "data.val_size": cfg.val_size}
    if official_test is None:
        from_pool["data.test_size"] = cfg.test_size
    fractions = {key: size for key, size in from_pool.items() if isinstance(size, float)}
    if sum(fractions.values()) > 1:
        raise InputError(f"{' + '.join(f'{k}={v:g}' for k, v in fractions.items())} add up to "
                         f"{sum(fractions.values()):g}: fractions of the dataset cannot sum past 1.")
    counts = {key: _count(size, pool, held_out=key != "data.train_size") for key, size in from_pool.items()}
    shown = {key: f"{size:g} ({counts[key]:,} images)" if isinstance(size, float) else f"{size:,}"
             for key, size in from_pool.items() if size is not None}
    for key in ("data.train_size", "data.val_size"):
        if counts[key] == 0:
            raise InputError(f"{key}={cfg.train_size if key == 'data.train_size' else cfg.val_size} is 0 of the "
                             f"{pool:,} images in {description}; give a larger fraction or a count.")
    total = sum(count for count in counts.values() if count is not None)
    if total > pool:
        where = "training images (its official test split is kept apart)" if official_test is not None else "images"
        raise InputError(f"{' + '.join(f'{key}={text}' for key, text in shown.items())} asks for {total:,} images, "
                         f"but {description} has only {pool:,} {where}; lower these sizes.")
    if official_test is None and cfg.test_size is None and (cfg.train_size is None or total == pool):
        train = "null (all that remain)" if cfg.train_size is None else shown["data.train_size"]
        raise InputError(f"no images would remain for the test set: {description} has {pool:,} images and "
                         f"data.train_size={train} with data.val_size={shown['data.val_size']} uses them all; "
                         "set data.test_size (0 holds no test split out) or lower data.train_size.")
    test = _count(cfg.test_size, official_test, held_out=True) if official_test is not None else counts.get(
        "data.test_size")
    return SplitCounts(counts["data.train_size"], cast(int, counts["data.val_size"]), test)  # val_size is never null


@overload
def _count(size: Union[int, float], total: int, held_out: bool) -> int: ...
@overload
def _count(size: object, total: int, held_out: bool) -> Optional[int]: ...
def _count(size, total: int, held_out: bool) -> Optional[int]:
    """A size as a count of `total` images; None stays None."""
    if not isinstance(size, float):
        return size
    return math.ceil(size * total) if held_out else math.floor(size * total)


def _split(data: Source, counts: SplitCounts, seed: int) -> tuple[Labelled, Labelled, Labelled]:
    """Validation first, then the test images (when drawn from the pool), then training: all stratified."""
    labels = data.pool.y.numpy()
    rest = np.arange(len(labels))
    val, rest = _stratified_draw(rest, labels, counts.val, seed, "validation split (data.val_size)")
    test = None
    if data.test is not None:
        test_all = np.arange(len(data.test.y))
        drawn, _ = _stratified_draw(test_all, data.test.y.numpy(), len(test_all) if counts.test is None
                                    else counts.test, seed, "test split (data.test_size)")
        test = _take(data.test, drawn)
    elif counts.test is not None:
        drawn, rest = _stratified_draw(rest, labels, counts.test, seed, "test split (data.test_size)")
        test = _take(data.pool, drawn)
    train_size = len(rest) if counts.train is None else counts.train
    train, rest = _stratified_draw(rest, labels, train_size, seed, "training split (data.train_size)")
    if test is None:
        test = _take(data.pool, rest)  # every image not used for training or validation
    return _take(data.pool, train), _take(data.pool, val), test


def _stratified_draw(indices: np.ndarray, labels: np.ndarray, size: int, seed: int,
                     split: str) -> tuple[np.ndarray, np.ndarray]:
    """`size` of `indices` with every class in proportion (seeded), and the indices left over."""
    if size == len(indices):
        return indices, indices[:0]
    if size == 0:  # data.test_size=0: no test split
        return indices[:0], indices
    from sklearn.model_selection import train_test_split
    try:
        drawn, rest = train_test_split(indices, train_size=size, stratify=labels[indices], random_state=seed % 2**32)
        return drawn, rest
    except ValueError as err:  # too few images of some class, or fewer images than classes
        counts = np.bincount(labels[indices])
        raise InputError(f"cannot draw a stratified {split} of {size:,} from {len(indices):,} images in "
                         f"{len(counts)} classes (the smallest has {counts.min():,}): each side of a stratified split, "
                         f"including the images left over, needs images of every class. scikit-learn: {err}") from None


def _take(part: Labelled, indices: np.ndarray) -> Labelled:
    index = torch.from_numpy(indices)
    return Labelled(part.x[index], part.y[index])


def _fit_normalizer(method: str, train_x: torch.Tensor, pixel_range: Optional[tuple[float, float]]) -> Normalizer:
    """Statistics from the training split only, so validation and test stay unseen."""
    channels = train_x.shape[1]
    if method == "standardize":
        std, mean = torch.std_mean(train_x.float(), dim=(0, 2, 3), correction=0)
        return Normalizer(tuple(mean.tolist()), tuple(s if s > 0 else 1.0 for s in std.tolist()))  # flat: no scaling
    low, high = pixel_range or (train_x.min().item(), train_x.max().item())
    return Normalizer((float(low),) * channels, (float(high - low) or 1.0,) * channels)


def warn_if_constant(images: torch.Tensor, description: str) -> None:
    """Constant images carry no pattern for an autoencoder to learn: the classifier would end at chance.
    Allowed (a user may test that), but said."""
    per_image = images.flatten(1).float()
    constant = int((per_image.amax(1) == per_image.amin(1)).sum())
    if constant == len(images):
        warnings.warn(f"every training image of {description} is constant (one value throughout); the "
                      "autoencoders have nothing to learn and the classifier will be at chance.", stacklevel=3)
    elif constant * 2 > len(images):
        warnings.warn(f"{constant:,} of {len(images):,} training images of {description} are constant (one value "
                      "throughout); check the data's pixel values.", stacklevel=3)
