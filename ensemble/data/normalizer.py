"""The affine pixel scaling a run was trained with, kept so predict() sees the same inputs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch


@dataclass(frozen=True)
class Normalizer:
    """x_normalised = (x - shift) / scale, per channel."""
    shift: tuple[float, ...]
    scale: tuple[float, ...]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        shift, scale = self._tensors
        return ((images.float() - shift) / scale).contiguous()

    @cached_property
    def _tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """shift and scale as 1 x C x 1 x 1 tensors, built once: a served request should not build them."""
        view = (1, -1, 1, 1)
        return (torch.tensor(self.shift, dtype=torch.float32).view(view),
                torch.tensor(self.scale, dtype=torch.float32).view(view))

    def to_json(self) -> dict:
        return {"shift": list(self.shift), "scale": list(self.scale)}

    @classmethod
    def from_json(cls, raw: dict) -> "Normalizer":
        """The scaling as normalization.json (or splits.npz) saved it; a ValueError naming the field when a
        value cannot be one (a scale of 0 or NaN would turn every feature into inf or NaN)."""
        if not isinstance(raw, dict) or not {"shift", "scale"} <= set(raw):
            raise ValueError("it must be a JSON object with 'shift' and 'scale' lists")
        shift, scale = raw["shift"], raw["scale"]
        if not (isinstance(shift, list) and isinstance(scale, list) and len(shift) == len(scale) > 0):
            raise ValueError("'shift' and 'scale' must be lists of one number per channel, of the same length")
        if not all(_finite_number(v) for v in shift):
            raise ValueError(f"'shift' must hold finite numbers; it holds {shift}")
        if not all(_finite_number(v) and v > 0 for v in scale):
            raise ValueError(f"'scale' must hold finite numbers above 0; it holds {scale}")
        return cls(tuple(float(v) for v in shift), tuple(float(v) for v in scale))


def _finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
