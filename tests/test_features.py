"""Frozen encoders' features: shape, dtype and values, independent of the batch size, computed in eval
mode without gradients (the training flag restored), stacked per member, bad input named."""

import numpy as np
import pytest
import torch
from torch import nn

from classifier import CombinerInputError
from classifier.features import encoder_features, member_features, stack_features


class TinyAutoencoder(nn.Module):
    """Conv + dropout encoder that records the mode and autograd state it was called in."""

    def __init__(self, channels: int = 2):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), nn.Dropout(0.5), nn.MaxPool2d(2))
        self.calls: list[tuple[bool, bool]] = []

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((self.training, torch.is_grad_enabled()))
        return self.encoder(x)


class Flatten(nn.Module):
    """An encoder without parameters: features come out on the CPU."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(7, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def make_encoder(seed: int, channels: int = 2) -> TinyAutoencoder:
    torch.manual_seed(seed)
    return TinyAutoencoder(channels)


def test_shape_dtype_and_values(images):
    encoder = make_encoder(0).eval()
    features = encoder_features(encoder, images)
    assert features.shape == (7, 2 * 4 * 4) and features.dtype == np.float32
    with torch.no_grad():
        expected = encoder.encode(images).flatten(1).numpy()
    np.testing.assert_array_equal(features, expected)


def test_batch_size_does_not_change_features(images):
    encoder = make_encoder(0)
    np.testing.assert_allclose(encoder_features(encoder, images, batch_size=3),
                               encoder_features(encoder, images, batch_size=1000), rtol=1e-6, atol=1e-7)
    assert len(encoder.calls) == 3 + 1  # 7 images in batches of 3, then one batch


@pytest.mark.parametrize("training", [True, False])
def test_runs_in_eval_without_grad_and_restores_the_flag(images, training):
    encoder = make_encoder(0).train(training)
    encoder_features(encoder, images, batch_size=4)
    assert encoder.calls == [(False, False), (False, False)]
    assert encoder.training is training
    assert all(parameter.grad is None for parameter in encoder.parameters())


class Failing(TinyAutoencoder):
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


def test_flag_restored_when_encode_fails(images):
    encoder = Failing().train()
    with pytest.raises(RuntimeError, match="boom"):
        encoder_features(encoder, images)
    assert encoder.training


def test_parameterless_encoder_and_float64_numpy_input(images):
    features = encoder_features(Flatten(), images.double().numpy())
    assert features.dtype == np.float32
    np.testing.assert_array_equal(features, images.flatten(1).numpy())


def test_member_features_and_stacking(images):
    members = [make_encoder(0, channels=2), make_encoder(1, channels=3)]
    per_member = member_features(members, images, batch_size=2)
    assert [f.shape for f in per_member] == [(7, 32), (7, 48)]
    assert not np.array_equal(per_member[0], member_features([make_encoder(2, 2)], images)[0])  # seeds matter
    stacked, widths = stack_features(per_member)
    assert widths == (32, 48) and stacked.shape == (7, 80) and stacked.dtype == np.float32
    np.testing.assert_array_equal(stacked[:, 32:], per_member[1])


def test_bad_inputs_are_named(images):
    with pytest.raises(CombinerInputError, match="zero members"):
        member_features([], images)
    with pytest.raises(CombinerInputError, match="zero members"):
        stack_features([])
    with pytest.raises(CombinerInputError, match=r"row counts differ: \[7, 5\]"):
        stack_features([np.zeros((7, 2)), np.zeros((5, 2))])
    with pytest.raises(CombinerInputError, match="2-D"):
        stack_features([np.zeros(7)])
    with pytest.raises(CombinerInputError, match="batch_size must be at least 1"):
        encoder_features(Flatten(), images, batch_size=0)
    with pytest.raises(CombinerInputError, match="no images"):
        encoder_features(Flatten(), images[:0])
