"""The memory format members train and encode in: PyTorch's default (contiguous, NCHW) or channels_last.

Which is faster depends on the machine, the model and the batch: on a 2-core AVX2 CPU the default
LeNet CAE trained in 0.65x the time in channels_last (oneDNN's convolutions want it), while small
or unusual models may not gain. `train.memory_format: auto` therefore measures: a short probe at
actor start trains a throw-away copy of the real model on a real batch a few steps each way,
interleaved, and `choose_memory_format` (a pure function) picks the faster one. Both formats
compute the same arithmetic up to the order of float additions (losses agree to about 1e-6).
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

CONTIGUOUS, CHANNELS_LAST = "contiguous", "channels_last"
FORMATS = (CONTIGUOUS, CHANNELS_LAST)
AUTO = "auto"
# channels_last is chosen only when it is clearly faster: on a tie the default format stays, so a run
# whose probe cannot tell them apart keeps PyTorch's own arithmetic
MIN_GAIN = 0.05


def choose_memory_format(seconds: Mapping[str, Sequence[float]], min_gain: float = MIN_GAIN) -> str:
    """The format to train in from the probe's step times (format -> seconds per step): channels_last
    when its median step is at least `min_gain` faster than the default's, else contiguous. A format
    with no times (it failed, or was not probed) is never chosen."""
    default = list(seconds.get(CONTIGUOUS, ()))
    other = list(seconds.get(CHANNELS_LAST, ()))
    if not other:
        return CONTIGUOUS
    if not default:
        return CHANNELS_LAST
    return CHANNELS_LAST if statistics.median(other) < (1 - min_gain) * statistics.median(default) else CONTIGUOUS


def applies(images: torch.Tensor) -> bool:
    """channels_last is a layout of 4-D (N, C, H, W) tensors; other shapes keep the default."""
    return images.dim() == 4


def in_memory_format(model: nn.Module, memory_format: str) -> nn.Module:
    """The model with its weights laid out in `memory_format` (in place, as `Module.to` does;
    contiguous: unchanged)."""
    return model.to(memory_format=torch.channels_last) if memory_format == CHANNELS_LAST else model


def as_layout_of(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function laying a batch out as `module`'s weights are (a no-op for the default layout, and for
    batches that are not 4-D): batches are converted as they are drawn, never the whole dataset."""
    if module_memory_format(module) != CHANNELS_LAST:
        return lambda batch: batch
    return lambda batch: batch.contiguous(memory_format=torch.channels_last) if applies(batch) else batch


def module_memory_format(module: nn.Module) -> str:
    """channels_last when any 4-D weight of the module is laid out that way and not also plainly
    contiguous (a weight with one input channel, or 1x1 kernels, is both), else contiguous."""
    for parameter in module.parameters():
        if parameter.dim() == 4 and not parameter.is_contiguous() \
                and parameter.is_contiguous(memory_format=torch.channels_last):
            return CHANNELS_LAST
    return CONTIGUOUS


def probe_memory_formats(model: nn.Module, batch: torch.Tensor, step: Callable[[nn.Module, torch.Tensor], None],
                         rounds: int = 3) -> dict[str, list[float]]:
    """Seconds per training step in each format, on copies of `model` (left untouched) and `batch`:
    one untimed step each (kernel choice, lazy allocation), then `rounds` timed steps each, the
    formats alternating so a busy machine slows both alike. `step(model, batch)` trains one step and
    must wait for the device (a `.item()` does). A format whose step raises is left out."""
    if not applies(batch):
        return {CONTIGUOUS: []}
    copies = {}
    for memory_format in FORMATS:
        try:
            probe_model = in_memory_format(copy.deepcopy(model), memory_format)
            probe_batch = as_layout_of(probe_model)(batch)
            step(probe_model, probe_batch)
            copies[memory_format] = (probe_model, probe_batch)
        except Exception:  # noqa: BLE001 (a model that cannot run in a format is simply not run in it)
            continue
    seconds: dict[str, list[float]] = {memory_format: [] for memory_format in copies}
    for _ in range(rounds):
        for memory_format, (probe_model, probe_batch) in copies.items():
            started = time.perf_counter()
            step(probe_model, probe_batch)
            seconds[memory_format].append(time.perf_counter() - started)
    return seconds
