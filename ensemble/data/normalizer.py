"""The affine pixel scaling a run was trained with, kept so predict() sees the same inputs."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Normalizer:
    """x_normalised = (x - shift) / scale, per channel."""
    shift: tuple[float, ...]
    scale: tuple[float, ...]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        view = (1, -1, 1, 1)
        shift = torch.tensor(self.shift, dtype=torch.float32).view(view)
        scale = torch.tensor(self.scale, dtype=torch.float32).view(view)
        return ((images.float() - shift) / scale).contiguous()

    def to_json(self) -> dict:
        return {"shift": list(self.shift), "scale": list(self.scale)}

    @classmethod
    def from_json(cls, raw: dict) -> "Normalizer":
        return cls(tuple(raw["shift"]), tuple(raw["scale"]))
