"""Tiny datasets written in the real on-disk formats, so the loaders are tested without downloads.

Every pixel encodes where it came from: value = 20 * label + 5 * channel + mark, with mark 1 in
training files and 2 in test files. Tests decode it to check that images kept their labels,
their channel order, and their split of origin.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image
from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import calculate_md5

TRAIN_MARK, TEST_MARK = 1, 2


def coded_images(labels: list[int], channels: int, size: tuple[int, int], mark: int) -> np.ndarray:
    """N x C x H x W uint8 images whose every pixel is 20 * label + 5 * channel + mark."""
    values = 20 * np.asarray(labels)[:, None] + 5 * np.arange(channels)[None, :] + mark
    return np.broadcast_to(values[:, :, None, None], (len(labels), channels, *size)).astype(np.uint8)


def balanced_labels(per_class: int, classes: int = 10) -> list[int]:
    return [label for _ in range(per_class) for label in range(classes)]


def write_mnist(root: Path, train_per_class: int = 6, test_per_class: int = 3) -> Path:
    """The four uncompressed IDX files torchvision's MNIST reads from root/MNIST/raw/."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, per_class, mark in (("train", train_per_class, TRAIN_MARK), ("t10k", test_per_class, TEST_MARK)):
        labels = balanced_labels(per_class)
        images = coded_images(labels, 1, (28, 28), mark)[:, 0]
        # IDX: big-endian magic (0x0803 = unsigned bytes, 3 dims; 0x0801 = 1 dim), the dims, then the bytes
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, len(labels), 28, 28)
                                                          + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, len(labels))
                                                          + bytes(labels))
    return raw


def write_cifar10(root: Path, per_class_per_batch: int = 1, test_per_class: int = 2) -> Path:
    """The python-version batches torchvision's CIFAR10 reads from root/cifar-10-batches-py/."""
    folder = root / CIFAR10.base_folder
    folder.mkdir(parents=True)
    batches = [(name, per_class_per_batch, TRAIN_MARK) for name, _ in CIFAR10.train_list]
    batches += [(name, test_per_class, TEST_MARK) for name, _ in CIFAR10.test_list]
    for name, per_class, mark in batches:
        labels = balanced_labels(per_class)
        rows = coded_images(labels, 3, (32, 32), mark).reshape(len(labels), -1)  # CIFAR rows: R plane, G, B
        _pickle(folder / name, {"batch_label": name, "labels": labels, "data": rows,
                                "filenames": [f"{name}_{i}.png" for i in range(len(labels))]})
    _pickle(folder / CIFAR10.meta["filename"], {CIFAR10.meta["key"]: [f"class-{k}" for k in range(10)],
                                                "num_cases_per_batch": 10 * per_class_per_batch, "num_vis": 3072})
    return folder


def cifar10_checking_these_files(root: Path) -> type[CIFAR10]:
    """CIFAR10 with the md5 sums of the files write_cifar10 wrote in place of the official ones.

    torchvision checks every batch against the official checksums, which tiny files cannot
    match; this subclass keeps the check (a changed byte still fails) and changes only the
    expected sums.
    """
    folder = root / CIFAR10.base_folder

    def sums(entries: list[list[str]]) -> list[list[str]]:
        return [[name, calculate_md5(folder / name)] for name, _ in entries]

    class TinyCIFAR10(CIFAR10):
        train_list = sums(CIFAR10.train_list)
        test_list = sums(CIFAR10.test_list)
        meta = {**CIFAR10.meta, "md5": calculate_md5(folder / CIFAR10.meta["filename"])}

    return TinyCIFAR10


def write_image_folder(root: Path, modes: dict[str, str], per_class: int = 6,
                       size: tuple[int, int] = (6, 5)) -> Path:
    """root/<class>/<i>.png with one PIL mode per class; size is (width, height)."""
    for label, (name, mode) in enumerate(sorted(modes.items())):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            channels = 1 if mode == "L" else 3
            pixels = coded_images([label], channels, (size[1], size[0]), TRAIN_MARK)[0]
            Image.fromarray(pixels[0] if mode == "L" else pixels.transpose(1, 2, 0)).save(root / name / f"{i}.png")
    return root


def _pickle(path: Path, content: dict) -> None:
    with open(path, "wb") as file:
        pickle.dump(content, file)
