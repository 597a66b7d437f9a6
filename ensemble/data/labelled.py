"""Few labels: which training images the combiner may see labelled, and images that have no label.

The method is for data with few labels: the autoencoders learn from images alone, so only the
combiner needs labels. `labelled_subset` picks `data.labels_per_class` training images of every
class (seeded, so a run and `ensemble select`/`ensemble labels` on it pick the same ones), and
`unlabelled_images` checks images without labels against the labelled ones before Ray starts.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union, overload

import numpy as np
import torch

from ensemble.data.sources import as_images
from workers.errors import InputError

Seed = Union[int, Sequence[int]]  # numpy's SeedSequence entropy: one int, or several (run seed, draw, ...)


@overload
def labelled_subset(labels, per_class: int, seed: Seed, classes: Sequence[str] = (),
                    key: str = ...) -> np.ndarray: ...
@overload
def labelled_subset(labels, per_class: Optional[int], seed: Seed, classes: Sequence[str] = (),
                    key: str = ...) -> Optional[np.ndarray]: ...
def labelled_subset(labels, per_class: Optional[int], seed: Seed, classes: Sequence[str] = (),
                    key: str = "data.labels_per_class") -> Optional[np.ndarray]:
    """Sorted indices of `per_class` images of every class in `labels` (0..K-1), drawn without
    replacement with `seed`; None when `per_class` is None (every image is labelled).

    An InputError names the class that has too few images, or the bad count (as `key` gave it).
    """
    if per_class is None:
        return None
    if isinstance(per_class, bool) or int(per_class) != per_class or per_class < 1:
        raise InputError(f"{key} must be a whole number of at least 1 (or null for every label); got {per_class!r}.")
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=len(classes))
    smallest = int(np.argmin(counts))
    if counts[smallest] < per_class:
        name = classes[smallest] if smallest < len(classes) else str(smallest)
        raise InputError(f"{key}={per_class:,} but class {name!r} has only {counts[smallest]:,} images in the "
                         f"training split; lower {key} to at most {counts[smallest]:,}, or raise data.train_size.")
    rng = np.random.default_rng([int(part) % 2**32 for part in np.atleast_1d(seed)])  # SeedSequence wants >= 0
    drawn = [rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False) for c in range(len(counts))]
    return np.sort(np.concatenate(drawn))


def unlabelled_images(images, like: torch.Tensor, what: str = "the unlabelled images") -> Optional[torch.Tensor]:
    """`images` as N x C x H x W by the data's layout rule, checked against the labelled images `like`
    (same C x H x W, finite pixels); None when there are none."""
    x = as_images(images, what)
    if len(x) == 0:
        return None
    if tuple(x.shape[1:]) != tuple(like.shape[1:]):
        raise InputError(f"{what} are {_shape(x)} (channels x height x width) but the labelled images are "
                         f"{_shape(like)}; give unlabelled images of the labelled images' size and channel count.")
    return x


def join_unlabelled(*parts: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Several sources of unlabelled images as one tensor (float32 when their pixel types differ)."""
    present = [part for part in parts if part is not None]
    if not present:
        return None
    if len({part.dtype for part in present}) > 1:
        present = [part.float() for part in present]
    return torch.cat(present) if len(present) > 1 else present[0]


def _shape(x: torch.Tensor) -> str:
    return " x ".join(map(str, x.shape[1:]))
