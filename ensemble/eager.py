"""Stopping and selection rules: pure functions of a loss history, tested without Ray.

A member asks `member_should_stop` after every epoch; the driver later asks
`select_epoch` which saved checkpoint to freeze. The baseline uses conventional early
stopping (`baseline_should_stop`) and the same selection of the best epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from ensemble.config import BaselineConfig, EagerConfig
from workers.history import EpochRecord


@dataclass(frozen=True)
class Decision:
    stop: bool
    reason: str
    diverged: bool = False


CONTINUE = Decision(False, "running")


def _common_stops(history: Sequence[EpochRecord], max_epochs: int) -> Optional[Decision]:
    last = history[-1]
    if not last.finite:
        return Decision(True, f"diverged: loss became non-finite at epoch {last.epoch}", diverged=True)
    if last.epoch >= max_epochs:
        return Decision(True, f"max epochs: reached the limit of {max_epochs} epochs")
    return None


def relative_improvement(previous: float, current: float) -> float:
    return (previous - current) / abs(previous) if previous else 0.0


def member_should_stop(cfg: EagerConfig, max_epochs: int, history: Sequence[EpochRecord]) -> Decision:
    """The eager rule: stop well before the validation loss bottoms out."""
    if not history:
        return CONTINUE
    common = _common_stops(history, max_epochs)
    if common:
        return common
    epochs = len(history)
    if cfg.rule == "plateau" and epochs >= max(2, cfg.min_epochs):
        gain = relative_improvement(history[-2].val_loss, history[-1].val_loss)
        if gain < cfg.threshold:
            return Decision(True, f"plateau: validation loss improved {gain:.1%} (< {cfg.threshold:.0%}) "
                                  f"at epoch {history[-1].epoch}")
    if cfg.rule == "fixed" and epochs >= cfg.epoch:
        return Decision(True, f"fixed: trained the set {cfg.epoch} epochs")
    if cfg.rule == "budget":
        spent = sum(r.seconds for r in history)
        if spent + spent / epochs > cfg.budget_seconds:
            return Decision(True, f"budget: {spent:.1f} s spent, another epoch would pass "
                                  f"{cfg.budget_seconds:g} s")
    return CONTINUE


def baseline_should_stop(cfg: BaselineConfig, history: Sequence[EpochRecord]) -> Decision:
    """Conventional early stopping: `patience` epochs without a `min_delta` relative gain."""
    if not history:
        return CONTINUE
    common = _common_stops(history, cfg.max_epochs)
    if common:
        return common
    best = history[0]
    for record in history[1:]:
        if relative_improvement(best.val_loss, record.val_loss) > cfg.min_delta:
            best = record
    waited = history[-1].epoch - best.epoch
    if waited >= cfg.patience:
        return Decision(True, f"early stopping: no improvement for {waited} epochs after epoch {best.epoch}")
    return CONTINUE


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
