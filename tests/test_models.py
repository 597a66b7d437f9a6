import pytest
import torch
from torch import nn

from workers.errors import InputError
from workers.models import CAEFactory, ConvAutoencoder, check_autoencoder


@pytest.mark.parametrize("channels_in", [1, 3])
@pytest.mark.parametrize("size", [8, 28, 32])
def test_reconstruction_has_input_shape(channels_in, size):
    model = ConvAutoencoder((channels_in, size, size))
    x = torch.rand(4, channels_in, size, size)
    assert model(x).shape == x.shape
    assert model.encode(x).shape == (4, 16, size // 4, size // 4)


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_options_build_and_run(activation, pooling):
    model = ConvAutoencoder((1, 28, 28), channels=(4, 8, 8), kernel_size=3, activation=activation, pooling=pooling)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 1, 28, 28)


def test_width_multiplier_scales_channels_and_parameters():
    small, wide = CAEFactory((1, 28, 28))(), CAEFactory((1, 28, 28), width=2.0)()
    assert wide.encode(torch.rand(1, 1, 28, 28)).shape[1] == 32
    assert sum(p.numel() for p in wide.parameters()) > 3 * sum(p.numel() for p in small.parameters())


def test_too_many_stages_for_small_images_is_an_input_error():
    with pytest.raises(InputError, match="too small"):
        ConvAutoencoder((1, 8, 8), channels=(4, 4, 4, 4))


class NoEncode(nn.Module):
    def forward(self, x):
        return x


class WrongShape(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3)

    def forward(self, x):
        return self.conv(x)

    def encode(self, x):
        return self.conv(x)


def test_custom_autoencoder_checks():
    sample = torch.rand(3, 1, 8, 8)
    assert isinstance(check_autoencoder(CAEFactory((1, 8, 8)), sample), ConvAutoencoder)
    with pytest.raises(InputError, match="no encode"):
        check_autoencoder(NoEncode, sample)
    with pytest.raises(InputError, match=r"reconstruction of shape \(3, 1, 6, 6\)"):
        check_autoencoder(WrongShape, sample)
    with pytest.raises(InputError, match="not a torch nn.Module"):
        check_autoencoder(lambda: 42, sample)
