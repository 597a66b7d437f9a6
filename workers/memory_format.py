"""The memory format members train and encode in: PyTorch's default (contiguous, NCHW) or channels_last.

Which is faster depends on the machine, the model and the batch: on a CPU, oneDNN's convolutions
want channels_last and the default LeNet CAE trains faster in it (docs/performance.md, 2026-12-06),
while small or unusual models may not gain. `train.memory_format: auto` therefore measures: a short probe at
actor start trains a throw-away copy of the real model on a real batch a few steps each way,
interleaved, and `choose_memory_format` (a pure function) picks the faster one. Both formats
compute the same arithmetic up to the order of float additions (losses agree to about 1e-6).
"""

from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import torch
from torch import nn

from workers.layout import write_atomic

CONTIGUOUS, CHANNELS_LAST = "contiguous", "channels_last"
FORMATS = (CONTIGUOUS, CHANNELS_LAST)
# channels_last is chosen only when it is clearly faster: on a tie the default format stays, so a run
# whose probe cannot tell them apart keeps PyTorch's own arithmetic
MIN_GAIN = 0.05


def recorded_memory_format(placement: Mapping[str, object]) -> str:
    """The format a member's actor trained and encoded in, as its placement in report.json names it; a run
    from before the key, or a value no version wrote, is the default format."""
    recorded = placement.get("memory_format")
    return recorded if isinstance(recorded, str) and recorded in FORMATS else CONTIGUOUS


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
    """The model with its weights laid out in `memory_format`, in place, as `Module.to` does (either way:
    a loaded run's encoders come in the layout they trained in, and a replica may choose the other)."""
    return model.to(memory_format=torch.channels_last if memory_format == CHANNELS_LAST else torch.contiguous_format)


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
    must wait for the device (a `.item()` does). A format whose step raises, at any step, is left out;
    with none left the default stands, and the member's own epochs meet (and report) what raised."""
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
        for memory_format, (probe_model, probe_batch) in list(copies.items()):
            started = time.perf_counter()
            try:
                step(probe_model, probe_batch)
            except Exception:  # noqa: BLE001 (user code may fail only on a later call: not the probe's to report)
                del copies[memory_format], seconds[memory_format]
                continue
            seconds[memory_format].append(time.perf_counter() - started)
    return seconds or {CONTIGUOUS: []}


# --- a per-machine memory of the probe's choices, so later actors and runs on this machine skip it ---

CACHE_ENV = "ENSEMBLE_MEMORY_FORMATS"  # the cache file; default: memory-formats.json in the system temp dir
CACHE_DISABLED = "off"                 # ENSEMBLE_MEMORY_FORMATS=off: probe in every actor, remember nothing
# Raised when our own code changes what a layout costs, so that choices remembered before are measured
# again: 2 since the CAE's max pooling takes `workers.pooling`'s path in inference (2026-12-07)
PROBE_GENERATION = 2


def cache_path() -> Optional[Path]:
    """Where this machine's choices are kept (None when the cache is turned off)."""
    given = os.environ.get(CACHE_ENV)
    if given == CACHE_DISABLED:
        return None
    return Path(given) if given else Path(tempfile.gettempdir()) / "eager-ensembles" / "memory-formats.json"


def probe_key(model_name: str, batch_shape: Sequence[int], device: str, threads: int, extra: str = "") -> str:
    """What a choice depends on: torch's version, the processor or GPU, the thread count, the model and
    the batch's shape (and `extra`: the optimizer and precision), and `PROBE_GENERATION`."""
    if device.startswith("cuda"):
        processor = torch.cuda.get_device_name(torch.device(device))
    else:
        processor = f"{platform.machine()} {_cpu_model()} x{os.cpu_count()}"
    return (f"torch {torch.__version__}|{processor}|threads {threads}|{model_name}|batch {tuple(batch_shape)}|{extra}"
            f"|generation {PROBE_GENERATION}")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def cached_choice(path: Optional[Path], key: str) -> Optional[str]:
    """The format remembered for `key`, or None (no cache, no entry, or a file that is not ours)."""
    choice = _known(path).get(key) if path is not None else None
    return choice if choice in FORMATS else None


def _known(path: Path) -> dict:
    """The cache's entries; {} for a missing, unreadable or damaged file."""
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def remember_choice(path: Optional[Path], key: str, choice: str) -> None:
    """Add `key`'s choice to the cache, atomically (actors starting side by side may race: the last
    writer wins, and every writer wrote a measured choice). Best effort: a read-only disk only costs
    the next actor its probe."""
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps({**_known(path), key: choice}, indent=1, sort_keys=True))
    except OSError:
        pass
