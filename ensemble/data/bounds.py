"""Bounds checked before any work: an image's size (`data.max_pixels`) and the dataset's float32
copy against this machine's free memory: data too large for either is an input error naming it,
before a conversion that would exhaust the driver's memory (what it cost: docs/performance.md).
"""

from __future__ import annotations

import math
import os
from typing import Optional, Sequence

from workers.errors import InputError

FLOAT32_BYTES = 4
GiB = 1 << 30


def image_layout(shape: Sequence[int]) -> Optional[tuple[int, int, int]]:
    """(C, H, W) of one image of an array of `shape` by the layout rule of `ensemble.data.sources`
    (N x H x W, N x C x H x W, or N x H x W x C when the last dimension is 1 or 3 and the second is
    not); None for any other number of dimensions."""
    if len(shape) == 3:
        return 1, shape[1], shape[2]
    if len(shape) == 4 and shape[-1] in (1, 3) and shape[1] not in (1, 3):
        return shape[3], shape[1], shape[2]
    return (shape[1], shape[2], shape[3]) if len(shape) == 4 else None


def check_image_size(shape: Sequence[int], max_pixels: int, what: str) -> None:
    """Refuse images over `max_pixels` (height x width) before anything is converted to float."""
    layout = image_layout(shape)
    if layout is not None and layout[1] * layout[2] > max_pixels:
        _, height, width = layout
        raise InputError(f"{what}: its images are {height} x {width} = {height * width:,} pixels each, more than "
                         f"data.max_pixels={max_pixels:,}. Resize them (this ensemble trains small CAEs, made for "
                         "28x28 to 256x256 images), or raise data.max_pixels if the machine has the memory.")


def available_memory() -> Optional[int]:
    """Bytes of memory free for new allocations: /proc/meminfo's MemAvailable (Linux), else the free
    physical pages; None where neither is known."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def float32_bytes(images: int, image_shape: Sequence[int]) -> int:
    return images * math.prod(image_shape) * FLOAT32_BYTES


def check_fits_in_memory(images: int, image_shape: Sequence[int], what: str,
                         available: Optional[int] = None) -> None:
    """Refuse a dataset whose float32 copy (what training holds) is larger than the free memory."""
    needed = float32_bytes(images, image_shape)
    available = available_memory() if available is None else available
    if available is not None and needed > available:
        raise InputError(f"{what}: {images:,} images of {' x '.join(map(str, image_shape))} need "
                         f"{needed / GiB:.1f} GiB as float32, more than the {available / GiB:.1f} GiB of memory free "
                         "on this machine. Use fewer or smaller images (data.train_size, data.val_size, "
                         "data.test_size), or a machine with more memory.")
