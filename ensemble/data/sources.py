"""Where images come from: one loader per `data.name`, and custom data given from Python.

Every loader returns a `Source`: the images in the dataset's own pixel scale (N x C x H x W, for
example uint8 0..255) with labels 0..K-1, the class names and each class's label value.

Layout rule for npz files and custom data: 3-D images are N x H x W (one channel is added);
4-D images are N x C x H x W, except when the last dimension is 1 or 3 and the second is not,
then they are N x H x W x C (numpy's usual image layout) and are transposed.

The default `mnist-5k` digits ship inside the package (`embedded/`, whose README names their source
and licence). Heavy libraries (torchvision, scikit-learn) are imported inside the functions that
need them.
"""

from __future__ import annotations

import functools
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sized

import numpy as np
import torch

from ensemble.config import DataConfig
from ensemble.data.bounds import check_image_size
from workers.errors import InputError, without_unpickling_advice

_GRAYSCALE_MODES = ("1", "L", "LA")  # PIL modes a folder image may have and still count as one channel
UNLABELLED = "unlabelled"  # a folder's sub-folder of images without labels (not a class)
UNLABELLED_NPZ = "x_unlabelled"  # an npz file's array of images without labels


@dataclass(frozen=True)
class Labelled:
    x: torch.Tensor  # N x C x H x W in the dataset's own pixel scale
    y: torch.Tensor  # int64 labels 0..K-1


@dataclass(frozen=True)
class Source:
    pool: Labelled  # training and validation images are drawn from here (and test ones when `test` is None)
    test: Optional[Labelled]  # the official test split, when the dataset has one
    classes: tuple[str, ...]
    pixel_range: Optional[tuple[float, float]]  # known (low, high); None: the training split's min and max
    description: str  # for people, e.g. "mnist-5k (5,000 MNIST digits, embedded)"
    label_values: tuple = ()  # label i as the dataset gives it; empty: 0..K-1
    unlabelled: Optional[Sized] = None  # images without labels (npz x_unlabelled, a folder's unlabelled/), unchecked


def load_source(cfg: DataConfig, dataset=None) -> Source:
    """`cfg.name`'s data, or the custom `dataset` (which replaces data.name/root/download)."""
    data = _LOADERS[cfg.name](cfg) if dataset is None else _custom_dataset(dataset, cfg.max_pixels)
    if len(data.classes) < 2:
        raise InputError(f"{data.description} has {len(data.classes)} class; a classifier needs at least 2.")
    return data


# --- loaders: one per data.name, each returning images in the dataset's own pixel scale ---

def _load_mnist_5k(cfg: DataConfig) -> Source:
    return _mnist_5k()


MNIST_5K = Path(__file__).parent / "embedded" / "mnist_5k.csv.gz"  # one digit a row: 784 pixels, then the label


def mnist_5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The embedded digits as numpy arrays: images (5,000 x 784 uint8, 0..255) and labels (int64 0..9).

    Examples
    --------
    >>> images, labels = mnist_5k_arrays()
    >>> images.shape, images.dtype.name, labels[:5].tolist()
    ((5000, 784), 'uint8', [0, 0, 0, 0, 0])
    """
    rows = np.loadtxt(MNIST_5K, delimiter=",", dtype=np.uint8)
    return np.ascontiguousarray(rows[:, :-1]), rows[:, -1].astype(np.int64)


@functools.lru_cache(maxsize=1)  # later runs in one process reuse the parsed file
def _mnist_5k() -> Source:
    images, labels = mnist_5k_arrays()
    return Source(Labelled(torch.from_numpy(images).view(-1, 1, 28, 28), torch.from_numpy(labels)), None,
                  _digit_names(), (0.0, 255.0), f"mnist-5k ({len(labels):,} MNIST digits, embedded)")


def _load_digits(cfg: DataConfig) -> Source:
    from sklearn.datasets import load_digits
    digits = load_digits()
    images = torch.from_numpy(digits.data.astype(np.uint8)).view(-1, 1, 8, 8)
    return Source(Labelled(images, torch.from_numpy(digits.target).long()), None, _digit_names(), (0.0, 16.0),
                    f"digits ({len(digits.target):,} 8x8 digits from scikit-learn)")


def _load_mnist(cfg: DataConfig) -> Source:
    from torchvision.datasets import MNIST
    root = _root(cfg)
    raw_folder = root / "MNIST" / "raw"
    expected = [Path(url).stem for url, _ in MNIST.resources]  # the unpacked IDX files, without ".gz"
    _require_files(cfg, "MNIST", raw_folder, expected)
    problems = [problem for name in expected if (raw_folder / name).is_file()
                for problem in [idx_problem(raw_folder / name)] if problem]
    try:
        if problems:  # torchvision's parser would say no more than an empty AssertionError
            raise ValueError("; ".join(problems))
        train = MNIST(str(root), train=True, download=cfg.download)
        test = MNIST(str(root), train=False, download=cfg.download)
    except (AssertionError, TypeError, ValueError) as err:  # the IDX parser's complaints about a bad file
        raise InputError(f"the MNIST files in {str(raw_folder)!r} are not valid IDX files: {err or 'unreadable'}. "
                         "Replace them with the official ones, or delete them and set data.download=true.") from None
    pool = Labelled(train.data.unsqueeze(1), train.targets)
    official_test = Labelled(test.data.unsqueeze(1), test.targets)
    return Source(pool, official_test, _digit_names(), (0.0, 255.0),
                    f"mnist (torchvision MNIST in {str(root)!r}: {len(pool.y):,} train + {len(official_test.y):,} "
                    "test images)")


def _load_cifar10(cfg: DataConfig) -> Source:
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

    def channels_first(split) -> Labelled:  # torchvision keeps CIFAR as N x H x W x C uint8
        return Labelled(torch.from_numpy(split.data).permute(0, 3, 1, 2), torch.tensor(split.targets))

    pool, official_test = channels_first(train), channels_first(test)
    return Source(pool, official_test, tuple(train.classes), (0.0, 255.0),
                    f"cifar10 (torchvision CIFAR-10 in {str(root)!r}: {len(pool.y):,} train + "
                    f"{len(official_test.y):,} test images)")


def _load_folder(cfg: DataConfig) -> Source:
    """ImageFolder layout: root/<class>/<image>, 8-bit pixels (0..255); root/unlabelled/ (not a class)
    holds images without labels, for the autoencoders only.

    One channel when every image is grayscale; otherwise all are converted to RGB (alpha dropped),
    so the result does not depend on which image comes first.
    """
    from torchvision.transforms.functional import pil_to_tensor
    root = _root(cfg, must_exist=True)
    if not root.is_dir():
        raise InputError(f"data.root={str(root)!r} must be a directory with one sub-folder of images per class.")
    try:
        folder = _class_folders(root)
    except FileNotFoundError as err:  # no class folders, or a class folder without images
        raise InputError(f"data.root={str(root)!r} must hold one sub-folder of images per class: {err}") from None
    images = [folder[i][0] for i in range(len(folder))]
    extra_paths = _unlabelled_paths(root)
    extra = [_read_image(path) for path in extra_paths]
    _require_one_size(images + extra, [path for path, _ in folder.samples] + extra_paths, root)
    width, height = images[0].size
    check_image_size((len(images), height, width), cfg.max_pixels, f"data.root={str(root)!r}")
    mode = "L" if all(image.mode in _GRAYSCALE_MODES for image in images + extra) else "RGB"
    x = torch.stack([pil_to_tensor(image.convert(mode)) for image in images])
    unlabelled = torch.stack([pil_to_tensor(image.convert(mode)) for image in extra]) if extra else None
    return Source(Labelled(x, torch.tensor(folder.targets)), None, tuple(folder.classes), (0.0, 255.0),
                  f"folder ({len(x):,} images in {len(folder.classes)} classes under {str(root)!r})",
                  label_values=tuple(folder.classes), unlabelled=unlabelled)


def _class_folders(root: Path):
    """torchvision's ImageFolder over every sub-folder but `unlabelled/`, which names no class."""
    from torchvision.datasets import ImageFolder

    class ClassFolders(ImageFolder):
        def find_classes(self, directory):
            classes = [name for name in super().find_classes(directory)[0] if name != UNLABELLED]
            if not classes:
                raise FileNotFoundError(f"Couldn't find any class folder in {directory}.")
            return classes, {name: i for i, name in enumerate(classes)}

    return ClassFolders(str(root), loader=_read_image)


def _unlabelled_paths(root: Path) -> list[str]:
    """The image files under root/unlabelled/ (any depth), sorted so the order is the same each time."""
    from torchvision.datasets.folder import IMG_EXTENSIONS
    folder = root / UNLABELLED
    if not folder.is_dir():
        return []
    return sorted(str(path) for path in folder.rglob("*") if path.is_file() and path.suffix.lower() in IMG_EXTENSIONS)


def _load_npz(cfg: DataConfig) -> Source:
    path = _root(cfg, must_exist=True)
    x, y, unlabelled = _read_npz(path, cfg.max_pixels)
    pool, values = _from_arrays(x, y, f"npz file {str(path)!r}")
    return Source(pool, None, _names(values), None, f"npz ({len(pool.y):,} images from {str(path)!r})",
                  label_values=values, unlabelled=unlabelled)


_LOADERS: dict[str, Callable[[DataConfig], Source]] = {
    "mnist-5k": _load_mnist_5k,
    "digits": _load_digits,
    "mnist": _load_mnist,
    "cifar10": _load_cifar10,
    "folder": _load_folder,
    "npz": _load_npz,
}


def _custom_dataset(dataset, max_pixels: int) -> Source:
    # a pair's first element is the whole image array (an array, a tensor or nested lists); a Dataset's first
    # element is one (image, label) sample
    if _is_images_and_labels(dataset):
        x, y = dataset
    elif hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        x, y = _stack_samples(dataset)
    else:
        raise InputError(f"dataset must be a torch Dataset of (image, label) pairs or an (images, labels) pair of "
                         f"tensors or arrays, not {type(dataset).__name__}.")
    if hasattr(x, "shape"):  # before any conversion: nested lists are small enough to convert first
        check_image_size(tuple(x.shape), max_pixels, "the custom dataset")
    pool, values = _from_arrays(x, y, "the custom dataset")
    return Source(pool, None, _names(values), None,
                    f"custom dataset ({len(pool.y):,} images of {' x '.join(map(str, pool.x.shape[1:]))}, "
                    f"{len(values)} classes)", label_values=values)


# --- helpers of the loaders ---

def _is_images_and_labels(dataset) -> bool:
    if not (isinstance(dataset, (tuple, list)) and len(dataset) == 2):
        return False
    images, labels = dataset
    if hasattr(images, "shape"):
        return True
    return isinstance(images, (list, tuple)) and hasattr(labels, "__len__") and len(images) == len(labels) > 2


_IDX_MAGIC = {"images": 0x803, "labels": 0x801}  # unsigned bytes with 3 dims, and with 1


def idx_problem(path: Path) -> Optional[str]:
    """What is wrong with an uncompressed MNIST IDX file, or None: its magic number and its size
    against the dimensions its header declares."""
    data = path.read_bytes()
    expected = _IDX_MAGIC["images" if "images" in path.name else "labels"]
    ndim = expected & 0xFF
    if len(data) < 4 + 4 * ndim:
        return f"{path.name} holds {len(data)} bytes, fewer than an IDX header"
    magic = int.from_bytes(data[:4], "big")
    if magic != expected:
        return f"{path.name} starts with 0x{magic:08x}, not the IDX magic number 0x{expected:08x}"
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    declared = int(np.prod(dims)) + 4 + 4 * ndim
    if len(data) != declared:
        shape = " x ".join(map(str, dims))
        return f"{path.name} holds {len(data):,} bytes but its header declares {shape} values ({declared:,} bytes)"
    return None


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
        examples: dict[tuple[int, int], str] = {}
        for image, path in zip(images, paths, strict=True):
            examples.setdefault(image.size, path)
        found = ", ".join(f"{w}x{h} ({count} images, e.g. {examples[(w, h)]!r})" for (w, h), count in sizes.items())
        raise InputError(f"the images under data.root={str(root)!r} differ in size (width x height): {found}. "
                         "Resize them to one size first.")


def _read_npz(path: Path, max_pixels: int) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Images 'x', labels 'y' and, when present, images without labels 'x_unlabelled'; images over
    `max_pixels` are refused from the arrays' headers, before they are read."""
    try:
        archive = np.load(path, allow_pickle=False)  # no pickle: loading data must not run code
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # garbage bytes, a truncated archive
        raise InputError(f"data.root={str(path)!r} is not a readable .npz file (a zip archive of .npy arrays): "
                         f"{without_unpickling_advice(err)} It is not loaded as a pickle, which would run code; "
                         "save the data with numpy.savez(path, x=images, y=labels).") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise InputError(f"data.root={str(path)!r} holds a single array; save an .npz with arrays 'x' and 'y' "
                         "(numpy.savez(path, x=images, y=labels)).")
    with archive:
        missing = [key for key in ("x", "y") if key not in archive.files]
        if missing:
            raise InputError(f"npz file {str(path)!r} lacks array {' and '.join(map(repr, missing))} (it holds "
                             f"{', '.join(map(repr, archive.files)) or 'nothing'}); save images as 'x', labels as 'y'.")
        for key in ("x", UNLABELLED_NPZ):
            if key in archive.files:
                check_image_size(_npz_shape(archive, key, path), max_pixels, f"npz file {str(path)!r}, array {key!r}")
        try:
            return archive["x"], archive["y"], archive[UNLABELLED_NPZ] if UNLABELLED_NPZ in archive.files else None
        except ValueError as err:  # object arrays need pickle, which stays off
            raise InputError(f"npz file {str(path)!r}: {without_unpickling_advice(err)} Object arrays are not "
                             "loaded (unpickling runs code); save numeric arrays.") from None
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:  # a damaged member of the archive
            raise InputError(f"npz file {str(path)!r} is damaged ({type(err).__name__}: {err}).") from None


def _npz_shape(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> tuple[int, ...]:
    """The shape an .npz member's header declares, read without reading its data."""
    assert archive.zip is not None, "the archive is open: the caller reads it inside its with block"
    try:
        with archive.zip.open(f"{key}.npy") as member:
            version = np.lib.format.read_magic(member)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            return read_header(member)[0]
    except (KeyError, OSError, EOFError, ValueError, SyntaxError, zipfile.BadZipFile, zlib.error) as err:
        raise InputError(f"npz file {str(path)!r}: array {key!r} is not a readable .npy array "
                         f"({type(err).__name__}: {err}).") from None


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


def _from_arrays(x, y, what: str) -> tuple[Labelled, tuple]:
    """Images in the layout rule of the module docstring, labels remapped to 0..K-1 in sorted order;
    also the label values themselves (plain Python scalars), label i first."""
    x = as_images(x, what)
    y = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y)
    if y.ndim != 1 or len(y) != len(x):
        raise InputError(f"{what}: labels must be one value per image; got {len(x)} images and labels of shape "
                         f"{y.shape}.")
    if len(x) == 0:
        raise InputError(f"{what} holds no images.")
    missing = labels_missing(y)
    if missing:  # NaN would become a class of its own, which predict() returned as None
        raise InputError(f"{what}: {missing} of {len(y):,} labels are missing (NaN or None); every image needs "
                         "a label (drop the unlabelled ones, or pass them as unlabelled=).")
    classes, labels = np.unique(y, return_inverse=True)
    pool = Labelled(x, torch.from_numpy(labels.reshape(-1)).long())
    return pool, tuple(c.item() if isinstance(c, np.generic) else c for c in classes)


def labels_missing(y: np.ndarray) -> int:
    """How many labels are NaN or None (a float or object label array may hold them)."""
    if y.dtype.kind == "f" or y.dtype.kind == "c":
        return int(np.isnan(y).sum())
    if y.dtype == object:
        return sum(1 for value in y if value is None or (isinstance(value, float) and value != value))
    return 0


def as_images(x, what: str) -> torch.Tensor:
    """An image array or tensor as N x C x H x W by the layout rule of the module docstring, with
    real, finite pixels (uint8 kept, other integers as float32)."""
    try:
        if not isinstance(x, torch.Tensor):
            x = np.asarray(x)
            x = torch.as_tensor(x.astype(np.float64) if x.dtype == object else x)  # Python numbers in an object array
        x = x.detach().cpu()
    except (TypeError, ValueError) as err:  # strings, ragged lists, objects that are not numbers
        if "inhomogeneous" in str(err):
            raise InputError(f"{what}: the images given as nested lists differ in shape; give one array (N x H x W, "
                             "N x C x H x W or N x H x W x C) or a list of equally shaped images.") from None
        raise InputError(f"{what}: images must be a numeric array or tensor ({err}).") from None
    if x.ndim == 3:
        x = x.unsqueeze(1)
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.permute(0, 3, 1, 2)
    elif x.ndim != 4:
        raise InputError(f"{what}: images must be N x H x W, N x C x H x W or N x H x W x C; got shape "
                         f"{tuple(x.shape)}.")
    if x.is_complex():
        raise InputError(f"{what}: Complex data not supported; images must hold real pixel values, not {x.dtype}.")
    if not (x.dtype == torch.uint8 or x.is_floating_point()):
        x = x.float()  # torch lacks min/max for some integer types (uint16); float32 holds 16-bit pixels exactly
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise InputError(f"{what}: images contain NaN or infinite values.")
    return x
