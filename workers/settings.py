"""How a member trains, as the worker side takes it: `TrainSettings`. Torch-free, so the driver's
config reads these defaults (`ensemble.config.sections`) without importing PyTorch: a setting both
sides hold has its default here, once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, Optional

AUTO: Final = "auto"  # a memory format measured at actor start (`workers.memory_format.resolve_memory_format`)


@dataclass(frozen=True)
class TrainSettings:
    batch_size: int = 100
    lr: float = 1e-3
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = 0.9
    grad_clip: Optional[float] = None
    seed: int = 0
    precision: Literal["fp32", "bf16"] = "fp32"  # "bf16": autocast forward passes to bfloat16
    memory_format: str = AUTO      # "contiguous", "channels_last", or "auto": `resolve_memory_format` probes
    compile: bool = False
    run_id: Optional[str] = None   # the run the member trains for: every checkpoint records it
