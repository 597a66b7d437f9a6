"""The config's stop rules, and the choice of the checkpoint to freeze: pure functions, tested
without Ray.

A member's actor asks its rule (`workers.stopping`) after every epoch; the driver builds that
rule here from the config, and later asks `select_epoch` which saved checkpoint to freeze. The
baseline uses conventional early stopping and the same selection of the best epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from ensemble.config import BaselineConfig, EagerConfig
from workers.history import EpochRecord
from workers.stopping import EagerStop, EarlyStopping


def member_rule(cfg: EagerConfig, max_epochs: int) -> EagerStop:
    return EagerStop(max_epochs=max_epochs, **cfg.model_dump())


def baseline_rule(cfg: BaselineConfig) -> EarlyStopping:
    return EarlyStopping(patience=cfg.patience, min_delta=cfg.min_delta, max_epochs=cfg.max_epochs)


@dataclass(frozen=True)
class Selection:
    epoch: Optional[int]  # None: no usable checkpoint (diverged in its first epoch)
    reason: str


def select_epoch(history: Sequence[EpochRecord], fixed_epoch: Optional[int] = None) -> Selection:
    """The checkpoint to freeze: a fixed epoch when asked, else the lowest finite validation loss."""
    finite = [r for r in history if r.finite]
    if fixed_epoch is not None:
        if any(r.epoch == fixed_epoch for r in finite):
            return Selection(fixed_epoch, f"fixed epoch {fixed_epoch}")
        return Selection(None, f"epoch {fixed_epoch} was not trained (or diverged)")
    if not finite:
        return Selection(None, "no finite epoch: diverged in its first epoch")
    best = min(finite, key=lambda r: (r.val_loss, r.epoch))
    return Selection(best.epoch, f"lowest validation loss {best.val_loss:.4g} at epoch {best.epoch}")


def member_fixed_epoch(cfg: EagerConfig) -> Optional[int]:
    return cfg.epoch if cfg.rule == "fixed" else None
