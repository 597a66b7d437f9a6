"""Frozen encoders -> flat float32 feature matrices, one per member, and their stacking.

Memory stays bounded by one batch on the encoder's device: the output array is allocated
once, after the first batch reveals the feature width, and filled batch by batch.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from classifier import CombinerInputError


def _device_and_dtype(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where the module computes: its first parameter's device and dtype (CPU float32 if it has none)."""
    parameter = next(module.parameters(), None)
    if parameter is None:
        return torch.device("cpu"), torch.float32
    return parameter.device, parameter.dtype


def encoder_features(encoder: nn.Module, images: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    """`encoder.encode` over `images` (N x ...) in eval mode without autograd: an (N, d) float32 array,
    each row the flattened encoding. The module's training flag is restored afterwards."""
    images = torch.as_tensor(images)
    if batch_size < 1:
        raise CombinerInputError(f"batch_size must be at least 1; got {batch_size}.")
    if images.ndim == 0 or len(images) == 0:
        raise CombinerInputError(f"no images to encode (got shape {tuple(images.shape)}).")
    device, dtype = _device_and_dtype(encoder)
    was_training = encoder.training
    encoder.eval()  # dropout off, batch norm on its running statistics
    try:
        with torch.no_grad():
            features: np.ndarray | None = None
            for start in range(0, len(images), batch_size):
                batch = images[start:start + batch_size].to(device=device, dtype=dtype)
                encoded = encoder.encode(batch).reshape(len(batch), -1)
                if features is None:
                    features = np.empty((len(images), encoded.shape[1]), dtype=np.float32)
                features[start:start + len(batch)] = encoded.to(device="cpu", dtype=torch.float32).numpy()
    finally:
        encoder.train(was_training)
    return features


def member_features(autoencoders: Sequence[nn.Module], images, batch_size: int = 500) -> list[np.ndarray]:
    """One (N, d_i) float32 feature array per autoencoder, in the order given."""
    if len(autoencoders) == 0:
        raise CombinerInputError("no autoencoders to extract features from (zero members).")
    images = torch.as_tensor(images)
    return [encoder_features(autoencoder, images, batch_size) for autoencoder in autoencoders]


def stack_features(per_member: Sequence[np.ndarray]) -> tuple[np.ndarray, tuple[int, ...]]:
    """Side by side: the (N, sum d_i) matrix a combiner fits on, and each member's width d_i."""
    if len(per_member) == 0:
        raise CombinerInputError("no member features to stack (zero members).")
    shapes = [np.shape(features) for features in per_member]
    if any(len(shape) != 2 for shape in shapes):
        raise CombinerInputError(f"each member's features must be a 2-D (rows, features) array; got shapes {shapes}.")
    rows = {shape[0] for shape in shapes}
    if len(rows) > 1:
        raise CombinerInputError(f"members' feature row counts differ: {[shape[0] for shape in shapes]}; "
                                 "every member must encode the same images.")
    return np.hstack(per_member), tuple(shape[1] for shape in shapes)
