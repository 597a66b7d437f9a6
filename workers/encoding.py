"""A finished member encodes its own splits: frozen encoder -> float32 features, on the member's device.

When a member finishes, its actor already holds the model's code, the data and a device, so it
loads the checkpoint its selection rule picks (and epoch 0, the untrained reference) and sends
the features back with its `Done`; the driver only stacks them and fits the combiner. Without
this the driver encoded every member alone after the last one ended, a tail that grows with N.

The arithmetic is `encode`, the one loop `classifier.features` also runs, so features computed
here and on the driver are the same float32 numbers for the same weights on the same device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from workers.checkpoints import load_weights
from workers.history import EpochRecord
from workers.layout import checkpoint_dir
from workers.memory_format import (
    CONTIGUOUS,
    as_layout_of,
    cache_path,
    cached_choice,
    choose_memory_format,
    in_memory_format,
    probe_key,
    probe_memory_formats,
    remember_choice,
)
from workers.models import AutoencoderFactory, load_matching
from workers.settings import AUTO

SplitFeatures = dict[str, np.ndarray]  # split name ("train", "test") -> (rows, width) float32; and OWN_HEAD
OWN_HEAD = "own_head"  # the selected epoch's entry: the member's own head's test predictions, when it fitted one
OwnHead = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (train features, labels, test features)
EncodedEpochs = dict[int, SplitFeatures]  # checkpoint epoch -> its features


@dataclass(frozen=True)
class Selection:
    epoch: Optional[int]  # None: no usable checkpoint (diverged in its first epoch)
    reason: str


def select_epoch(history: Sequence[EpochRecord], fixed_epoch: Optional[int] = None) -> Selection:
    """The checkpoint to freeze: a fixed epoch when asked, else the lowest finite validation loss.
    Here, on the member side, so a finished member's actor picks the same epoch the driver will."""
    finite = [r for r in history if r.finite]
    if fixed_epoch is not None:
        if any(r.epoch == fixed_epoch for r in finite):
            return Selection(fixed_epoch, f"fixed epoch {fixed_epoch}")
        return Selection(None, f"epoch {fixed_epoch} was not trained (or diverged)")
    if not finite:
        return Selection(None, "no finite epoch: diverged in its first epoch")
    best = min(finite, key=lambda r: (r.val_loss, r.epoch))
    return Selection(best.epoch, f"lowest validation loss {best.val_loss:.4g} at epoch {best.epoch}")


@dataclass(frozen=True)
class EncodeRequest:
    """What a member's actor encodes once the member finishes (shipped with its spec)."""
    fixed_epoch: Optional[int] = None  # the eager rule's fixed epoch (eager.rule=fixed), else the best epoch
    reference: bool = True             # also epoch 0, for the combiner on the untrained encoders
    # the member's own head on the selected epoch's features -> its test predictions (members[i].test_accuracy,
    # the diversity figures), fitted here so the driver does not fit N heads after the last member ends
    own_head: Optional[OwnHead] = None


def epochs_to_encode(request: EncodeRequest, history: Sequence[EpochRecord]) -> list[int]:
    """The selected epoch (then epoch 0 when the reference is asked); none when nothing is selected,
    because the driver then excludes the member."""
    selected = select_epoch(history, request.fixed_epoch).epoch
    if selected is None:
        return []
    return [selected] + ([0] if request.reference and selected != 0 else [])


def frozen_autoencoder(factory: AutoencoderFactory, member_dir: str | Path, epoch: int,
                       device: str | torch.device = "cpu", memory_format: str = CONTIGUOUS) -> nn.Module:
    """A frozen (eval, no grad) autoencoder with the weights of one saved epoch, on `device`, its weights
    in `memory_format` (`encode` lays each batch out the same way)."""
    path = checkpoint_dir(member_dir, epoch)
    model = load_matching(factory(), load_weights(path), str(path))
    model = in_memory_format(model.to(device), memory_format)
    return model.eval().requires_grad_(False)


def _device_and_dtype(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where the module computes: its first parameter's device and dtype (CPU float32 if it has none)."""
    parameter = next(module.parameters(), None)
    if parameter is None:
        return torch.device("cpu"), torch.float32
    return parameter.device, parameter.dtype


def encode(encoder: nn.Module, images: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    """`encoder.encode` over non-empty `images` in eval mode without autograd: an (N, d) float32 array,
    each row the flattened encoding, filled batch by batch (memory bounded by one batch on the
    device). The module's training flag is restored afterwards."""
    device, dtype = _device_and_dtype(encoder)
    layout = as_layout_of(encoder)  # each batch laid out as the weights are
    was_training = encoder.training
    # dropout off, batch norm on its running statistics; an encoder already wholly in eval mode (a frozen
    # one) is left alone: eval() and train() walk every submodule, a served request's largest cost for five
    switch = any(module.training for module in encoder.modules())
    if switch:
        encoder.eval()
    try:
        with torch.no_grad():
            features: np.ndarray | None = None
            for start in range(0, len(images), batch_size):
                batch = layout(images[start:start + batch_size].to(device=device, dtype=dtype))
                # nn.Module types its attributes as Tensor | Module; encode is the autoencoder's method
                encoded = encoder.encode(batch).reshape(len(batch), -1)  # type: ignore[operator]
                if features is None:
                    features = np.empty((len(images), encoded.shape[1]), dtype=np.float32)
                features[start:start + len(batch)] = encoded.to(device="cpu", dtype=torch.float32).numpy()
    finally:
        if switch:
            encoder.train(was_training)
    assert features is not None, "encode() takes non-empty images"  # narrows the type; callers skip empty splits
    return features


def encode_checkpoints(factory: AutoencoderFactory, member_dir: str | Path, epochs: Sequence[int],
                       splits: Mapping[str, torch.Tensor], device: str | torch.device = "cpu",
                       memory_format: str = CONTIGUOUS) -> EncodedEpochs:
    """Each saved epoch's features for every non-empty split; an epoch whose checkpoint is missing is
    left out (the driver then encodes it itself, or names the missing checkpoint)."""
    encoded: EncodedEpochs = {}
    for epoch in epochs:
        if not checkpoint_dir(member_dir, epoch).is_dir():
            continue
        model = frozen_autoencoder(factory, member_dir, epoch, device, memory_format)
        encoded[epoch] = {name: encode(model, images) for name, images in splits.items() if len(images)}
    return encoded


def fastest_encoding_format(encoders: Sequence[nn.Module], batch: torch.Tensor, requested: str = AUTO) -> str:
    """The memory format frozen `encoders` answer fastest in here (`ensemble serve`): `requested` when it
    names one, else the probe of `workers.memory_format` with encoding passes over `batch` instead of
    training steps, on copies of the encoders; remembered per machine as the training probe's choices are."""
    if requested != AUTO:
        return requested
    parameter = next(nn.ModuleList(encoders).parameters(), None)
    device = str(parameter.device) if parameter is not None else "cpu"
    names = ",".join(type(encoder).__qualname__ for encoder in encoders)
    width = sum(p.numel() for encoder in encoders for p in encoder.parameters())
    key = probe_key(f"encode {names} ({width} parameters)", batch.shape, device, torch.get_num_threads())
    chosen = cached_choice(cache_path(), key)
    if chosen is None:
        chosen = choose_memory_format(probe_memory_formats(nn.ModuleList(encoders), batch.to(device), _encode_step))
        remember_choice(cache_path(), key, chosen)
    return chosen


def _encode_step(encoders: nn.Module, batch: torch.Tensor) -> None:
    """One encoding pass of each encoder in the ModuleList `encoders` (typed as the probe's step takes it)."""
    with torch.no_grad():  # float(): waits for the device; nn.Module types encode loosely
        float(sum(encoder.encode(batch).sum() for encoder in encoders.children()))  # type: ignore[operator]


def with_own_head(encoded: EncodedEpochs, request: EncodeRequest, history: Sequence[EpochRecord],
                  labels: Optional[np.ndarray]) -> EncodedEpochs:
    """`encoded` with the selected epoch's own-head predictions (`OWN_HEAD`) added, when the request
    names a head, the labels came and the selected epoch's train and test features are there."""
    selected = select_epoch(history, request.fixed_epoch).epoch
    features = {} if selected is None else encoded.get(selected, {})
    if selected is None or request.own_head is None or labels is None or not {"train", "test"} <= features.keys():
        return encoded
    return {**encoded, selected: {**features, OWN_HEAD: request.own_head(features["train"], labels, features["test"])}}
