"""The CAE family (LeNet-like convolutional autoencoders) and the custom-autoencoder protocol.

Protocol: a zero-argument callable returns an `nn.Module` whose `forward(x)` is the
reconstruction (same shape as `x`) and whose `encode(x)` is the feature map.
"""

from __future__ import annotations

import inspect
import math
import sys
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from workers.errors import InputError
from workers.imports import resolve_here
from workers.pooling import MaxPool2d

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU, "leaky_relu": nn.LeakyReLU,
}
# max: nn.MaxPool2d with a faster forward for inference on a CPU (the same values and state dict)
POOLING: dict[str, type[nn.Module]] = {"max": MaxPool2d, "avg": nn.AvgPool2d}

AutoencoderFactory = Callable[[], nn.Module]


class ConvAutoencoder(nn.Module):
    """Encoder: (conv, activation, 2x2 pool) per stage. Decoder: the mirror image, with
    upsampling to the exact size each stage saw, so odd sizes (28 -> 14 -> 7) come back."""

    def __init__(self, image_shape: Sequence[int], channels: Sequence[int] = (6, 16), kernel_size: int = 5,
                 activation: str = "relu", pooling: str = "max", width: float = 1.0):
        super().__init__()
        in_channels, height, width_px = image_shape
        hidden = [max(1, round(c * width)) for c in channels]
        sizes = [(height, width_px)]
        for _ in hidden:
            h, w = sizes[-1]
            if h < 2 or w < 2:
                raise InputError(f"images of {height}x{width_px} are too small for {len(hidden)} pooling stages "
                                 f"(model.channels={list(channels)}); use fewer channel stages.")
            sizes.append((h // 2, w // 2))
        pad = kernel_size // 2
        act = ACTIVATIONS[activation]

        encoder: list[nn.Module] = []
        for c_in, c_out in zip([in_channels, *hidden[:-1]], hidden, strict=True):
            encoder += [nn.Conv2d(c_in, c_out, kernel_size, padding=pad), act(), POOLING[pooling](2)]
        self.encoder = nn.Sequential(*encoder)

        decoder: list[nn.Module] = []
        outs = [in_channels, *hidden[:-1]]
        for stage in reversed(range(len(hidden))):
            decoder += [nn.Upsample(size=sizes[stage]), nn.Conv2d(hidden[stage], outs[stage], kernel_size, padding=pad)]
            if stage > 0:  # linear output: works for min-max and standardised pixels alike
                decoder.append(act())
        self.decoder = nn.Sequential(*decoder)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


@dataclass(frozen=True)
class CAEFactory:
    """A picklable zero-argument factory, so Ray can ship it to member actors."""
    image_shape: tuple[int, int, int]
    channels: tuple[int, ...] = (6, 16)
    kernel_size: int = 5
    activation: str = "relu"
    pooling: str = "max"
    width: float = 1.0

    def __call__(self) -> ConvAutoencoder:
        return ConvAutoencoder(self.image_shape, self.channels, self.kernel_size, self.activation, self.pooling,
                               self.width)


def baseline_width(members: int, width: float | None) -> float:
    """sqrt(N) channels gives about N times the parameters: the ensemble's total."""
    return width if width is not None else math.sqrt(members)


@dataclass(frozen=True)
class Widened:
    """A custom autoencoder class made wider: `factory(width=width)`, picklable for Ray."""
    factory: Callable[..., nn.Module]  # a class that takes `width` (accepts_width said so)
    width: float

    def __call__(self) -> nn.Module:
        return self.factory(width=self.width)


def accepts_width(factory: AutoencoderFactory) -> bool:
    """Whether the factory takes a `width` keyword (or **keywords), as the built-in CAE does."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # some builtins and C callables have no signature
        return False
    return any(p.name == "width" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) or p.kind == p.VAR_KEYWORD
               for p in parameters)


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def matched_width(parameters: Callable[[float], int], target: int, low: float = 0.05, high: float = 64.0,
                  steps: int = 40) -> float:
    """The width whose parameter count comes closest to `target`, by bisection: parameters grow with
    width (about quadratically for convolutions), in steps where channel counts round."""
    if parameters(high) <= target:
        return high
    for _ in range(steps):
        middle = (low + high) / 2
        low, high = (middle, high) if parameters(middle) < target else (low, middle)
    return min((low, high), key=lambda width: abs(parameters(width) - target))


def architecture(factory: AutoencoderFactory, built: nn.Module) -> dict:
    """What a member or the baseline is, for the report: `module:QualName`, its width, its trainable
    parameters, and the built-in CAE's settings."""
    inner = factory.factory if isinstance(factory, Widened) else factory
    record = {"class": autoencoder_path(inner, built), "width": float(getattr(factory, "width", 1.0)),
              "parameters": trainable_parameters(built)}
    if isinstance(factory, CAEFactory):
        record["settings"] = {"channels": list(factory.channels), "kernel_size": factory.kernel_size,
                              "activation": factory.activation, "pooling": factory.pooling}
    return record


def builtin_description(factory: AutoencoderFactory) -> Optional[str]:
    """How an error names the built-in CAE (its settings, which the user chose in model.*), or None for
    a custom autoencoder."""
    inner = factory.factory if isinstance(factory, Widened) else factory
    if not isinstance(inner, CAEFactory):
        return None
    return (f"the built-in CAE (model.channels={list(inner.channels)}, model.kernel_size={inner.kernel_size}, "
            f"images {'x'.join(map(str, inner.image_shape))})")


def check_autoencoder(factory: AutoencoderFactory, sample: torch.Tensor) -> nn.Module:
    """Build one module and run one batch through it, so a wrong shape fails before any training."""
    builtin = builtin_description(factory)
    name = getattr(factory, "__name__", type(factory).__name__)
    try:
        module = factory()
    except Exception as err:  # user code: report what it raised
        raise InputError(f"{builtin or f'the custom autoencoder {name}'} could not be built: {err!r}.") from None
    if not isinstance(module, nn.Module):
        raise InputError(f"the custom autoencoder factory {name} returned {type(module).__name__}, "
                         "not a torch nn.Module.")
    who = builtin or f"the custom autoencoder {type(module).__name__}"
    if not callable(getattr(module, "encode", None)):
        raise InputError(f"{who} has no encode(x) method; it must return the features the combiner uses.")
    with torch.no_grad():
        try:
            reconstruction = module(sample)
            # nn.Module types its attributes as Tensor | Module; encode was checked callable above
            features = module.encode(sample)  # type: ignore[operator]
        except Exception as err:
            raise InputError(f"{who} failed on a batch of shape {tuple(sample.shape)}: {err!r}.") from None
    if not isinstance(reconstruction, torch.Tensor) or reconstruction.shape != sample.shape:
        got = tuple(reconstruction.shape) if isinstance(reconstruction, torch.Tensor) else type(reconstruction).__name__
        raise InputError(f"{who} returned a reconstruction of shape {got} for input {tuple(sample.shape)}; "
                         "forward(x) must return the input's shape.")
    if not isinstance(features, torch.Tensor) or features.shape[0] != sample.shape[0]:
        raise InputError(f"{who}.encode(x) must return a tensor with one row per image ({sample.shape[0]}).")
    return module


def autoencoder_path(factory: AutoencoderFactory, built: nn.Module) -> str:
    """Where the members' autoencoder comes from, as `module:QualName`: the factory itself when it is
    a class or a function, else (a partial, a callable instance) the class of the module it built."""
    named = factory if inspect.isclass(factory) or inspect.isfunction(factory) else type(built)
    return f"{named.__module__}:{named.__qualname__}"


def trusts(path: str, trust_code: bool) -> bool:
    """Whether the module of `module:QualName` may be imported for a run read back: the caller said so
    (`trust_code`), or its own process imported that module already (so no new code runs)."""
    return trust_code or path.partition(":")[0] in sys.modules


def untrusted(path: str) -> InputError:
    module = path.partition(":")[0]
    return InputError(
        f"the run names its autoencoder {path}, and importing the module {module!r} would run that module's code; "
        "a run directory may come from elsewhere, so it is not imported unless you trust it. Pass the class "
        f"itself (autoencoder=...), import {module} in your own process first, or trust the run's code: "
        "trust_code=True in Python, --trust-code on the command line.")


def import_autoencoder(path: str, trust_code: bool = False) -> type[nn.Module]:
    """The nn.Module class at `module:QualName`, imported only when `trusts` allows. Only classes are
    rebuilt by name: a run directory may come from elsewhere, and calling whatever a file names is not safe."""
    if not trusts(path, trust_code):
        raise untrusted(path)
    name = path.rpartition(":")[2]
    found = resolve_here(path)
    if not (inspect.isclass(found) and issubclass(found, nn.Module)):
        raise InputError(f"the run's autoencoder {path} is a {type(found).__name__}, not an nn.Module class; only "
                         f"classes are rebuilt by name. Pass the factory itself: autoencoder={name}.")
    return found


def weight_differences(own: dict[str, tuple], saved: dict[str, tuple]) -> list[str]:
    """How saved weights' names and shapes differ from a model's (both as name -> shape), one phrase
    per kind naming the first keys; empty when they fit."""
    differences = {
        "missing": [key for key in own if key not in saved],
        "unexpected": [key for key in saved if key not in own],
        "of another shape": [f"{key} (saved {saved[key]}, model {own[key]})"
                             for key in own if key in saved and saved[key] != own[key]]}
    return [f"{what}: {', '.join(keys[:3])}{f' and {len(keys) - 3} more' if len(keys) > 3 else ''}"
            for what, keys in differences.items() if keys]


def shapes_of(weights: dict[str, torch.Tensor]) -> dict[str, tuple]:
    return {key: tuple(value.shape) for key, value in weights.items()}


def load_matching(model: nn.Module, weights: dict[str, torch.Tensor], source: str) -> nn.Module:
    """`model.load_state_dict(weights)`, or an InputError naming the keys and shapes that differ
    (instead of PyTorch's RuntimeError), for weights saved by another architecture."""
    found = weight_differences(shapes_of(model.state_dict()), shapes_of(weights))
    if found:
        raise InputError(f"the weights in {source} do not fit {type(model).__name__} (parameters {'; '.join(found)}). "
                         "Load the run with the autoencoder it was trained with (autoencoder=...).")
    model.load_state_dict(weights)
    return model
