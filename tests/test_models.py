"""The CAE family and custom autoencoders: shapes, options, the width multiplier of the baseline,
checks of a user's class, and rebuilding a class by its recorded name."""

import pytest
import torch
from torch import nn

from tests.tiny import TinyAE
from workers.errors import InputError
from workers.models import (
    CAEFactory,
    ConvAutoencoder,
    autoencoder_path,
    check_autoencoder,
    import_autoencoder,
    load_matching,
)


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
    with pytest.raises(InputError, match=r"the custom autoencoder NoEncode has no encode"):
        check_autoencoder(NoEncode, sample)


def test_the_built_in_cae_is_named_with_its_settings_when_it_cannot_be_built():
    """Not "the custom autoencoder CAEFactory": the user chose model.* and should see those keys."""
    with pytest.raises(InputError, match=r"^the built-in CAE \(model.channels=\[4, 8, 16, 32\], model.kernel_size=5, "
                                         r"images 1x8x8\) could not be built: .*too small for 4 pooling stages"):
        check_autoencoder(CAEFactory((1, 8, 8), channels=(4, 8, 16, 32)), torch.rand(2, 1, 8, 8))


# --- a run remembers its autoencoder: import paths and weights that must fit ---

def make_tiny():
    """A factory function, as opposed to a class."""
    return TinyAE()


def test_the_recorded_path_names_the_factory_or_the_class_it_builds():
    import functools
    built = TinyAE()
    assert autoencoder_path(TinyAE, built) == "tests.tiny:TinyAE"
    assert autoencoder_path(make_tiny, built) == "tests.test_models:make_tiny"
    assert autoencoder_path(functools.partial(TinyAE), built) == "tests.tiny:TinyAE"  # no name of its own

    class Local(TinyAE):
        pass
    assert autoencoder_path(Local, Local()).endswith(":test_the_recorded_path_names_the_factory_or_the_class_it_builds"
                                                     ".<locals>.Local")


def test_an_importable_class_is_rebuilt_by_name():
    assert import_autoencoder("tests.tiny:TinyAE") is TinyAE
    assert import_autoencoder("workers.models:ConvAutoencoder") is ConvAutoencoder


@pytest.mark.parametrize("path, message", [
    ("__main__:NotDefinedHere", r"__main__:NotDefinedHere cannot be imported here \(AttributeError.*autoencoder="
                                "NotDefinedHere"),
    ("no_such_module_xyz:AE", r"cannot be imported here \(ModuleNotFoundError"),
    ("tests.test_models:test.<locals>.AE", "cannot be imported here"),
    ("tests.test_models:make_tiny", "is a function, not an nn.Module class; only classes are rebuilt by name"),
    ("os:getcwd", "not an nn.Module class"),
])
def test_what_cannot_be_rebuilt_by_name_is_an_input_error_naming_it(path, message):
    with pytest.raises(InputError, match=message):
        import_autoencoder(path, trust_code=True)  # trusted: what importing it gives


def test_a_module_not_imported_yet_is_imported_only_when_trusted():
    with pytest.raises(InputError, match=r"module 'no_such_module_xyz' would run .* --trust-code"):
        import_autoencoder("no_such_module_xyz:AE")


def test_weights_of_another_architecture_name_the_mismatch():
    weights = TinyAE().state_dict()
    assert isinstance(load_matching(TinyAE(), weights, "here"), TinyAE)
    with pytest.raises(InputError, match=r"do not fit ConvAutoencoder \(parameters missing: encoder.0.weight"):
        load_matching(ConvAutoencoder((1, 8, 8)), weights, "member_00/checkpoint_000001")
    wider = {**weights, "enc.1.weight": torch.zeros(13, 64)}
    with pytest.raises(InputError, match=r"of another shape: enc.1.weight \(saved \(13, 64\), model \(12, 64\)\)"):
        load_matching(TinyAE(), wider, "here")
