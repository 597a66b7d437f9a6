"""Which training images a member sees: bagging draws its own sample per member."""

from __future__ import annotations

import torch


def bootstrap_indices(n: int, seed: int) -> torch.Tensor:
    """n indices into range(n) drawn uniformly with replacement (bagging), reproducible from `seed`.

    A member trains on `train_x[bootstrap_indices(len(train_x), its_seed)]`: about 63% of the
    images, some of them repeated, so members see different data. Not stratified: the
    autoencoders never see labels.
    """
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, n, (n,), generator=generator)
