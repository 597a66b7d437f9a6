"""Frozen encoders -> flat float32 feature matrices, one per member, and their stacking.

Memory stays bounded by one batch on the encoder's device: the output array is allocated
once, after the first batch reveals the feature width, and filled batch by batch
(`workers.encoding.encode`, shared with the members' actors).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from classifier import CombinerInputError
from workers.encoding import encode


def encoder_features(encoder: nn.Module, images: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    """`encoder.encode` over `images` (N x ...) in eval mode without autograd: an (N, d) float32 array,
    each row the flattened encoding. The module's training flag is restored afterwards. The loop is
    `workers.encoding.encode`, which a finished member's actor runs on its own device."""
    images = torch.as_tensor(images)
    if batch_size < 1:
        raise CombinerInputError(f"batch_size must be at least 1; got {batch_size}.")
    if images.ndim == 0 or len(images) == 0:
        raise CombinerInputError(f"no images to encode (got shape {tuple(images.shape)}).")
    return encode(encoder, images, batch_size)


def member_features(autoencoders: Sequence[nn.Module], images, batch_size: int = 500) -> list[np.ndarray]:
    """One (N, d_i) float32 feature array per autoencoder, in the order given."""
    if len(autoencoders) == 0:
        raise CombinerInputError("no autoencoders to extract features from (zero members).")
    images = torch.as_tensor(images)
    return [encoder_features(autoencoder, images, batch_size) for autoencoder in autoencoders]


def stack_features(per_member: Sequence[np.ndarray]) -> tuple[np.ndarray, tuple[int, ...]]:
    """Side by side: the (N, sum d_i) matrix a combiner fits on, and each member's width d_i."""
    widths = member_widths(per_member)
    return np.hstack(per_member), widths


def member_widths(per_member: Sequence[np.ndarray]) -> tuple[int, ...]:
    """Each member's width d_i, once the arrays are checked to be 2-D blocks of the same rows."""
    if len(per_member) == 0:
        raise CombinerInputError("no member features to stack (zero members).")
    shapes = [np.shape(features) for features in per_member]
    if any(len(shape) != 2 for shape in shapes):
        raise CombinerInputError(f"each member's features must be a 2-D (rows, features) array; got shapes {shapes}.")
    rows = {shape[0] for shape in shapes}
    if len(rows) > 1:
        raise CombinerInputError(f"members' feature row counts differ: {[shape[0] for shape in shapes]}; "
                                 "every member must encode the same images.")
    return tuple(shape[1] for shape in shapes)
