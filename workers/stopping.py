"""Stop rules: after every epoch a member asks its rule "stop now?"; pure functions of the loss
history, tested without Ray.

The driver builds a rule from the config (`ensemble.builders`) and ships it to the member's actor
with the member, so the rules' types live here, on the member side. `EagerStop` is the
ensemble's eager rule (stop well before the validation loss bottoms out); `EarlyStopping` is
the baseline's conventional rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Optional, Sequence

from workers.history import EpochRecord


@dataclass(frozen=True)
class Decision:
    stop: bool
    reason: str
    diverged: bool = False


CONTINUE = Decision(False, "running")
StopRule = Callable[[Sequence[EpochRecord]], Decision]


def relative_improvement(previous: float, current: float) -> float:
    return (previous - current) / abs(previous) if previous else 0.0


def plateau_reason(gain: float, threshold: float, epoch: int) -> str:
    """Why the plateau rule stopped, in words that read right either way: a small gain, or a loss that got worse."""
    if gain < 0:
        return f"plateau: validation loss got worse by {-gain:.1%} at epoch {epoch}"
    return f"plateau: validation loss improved {gain:.1%} (< {threshold:.0%}) at epoch {epoch}"


def common_stops(history: Sequence[EpochRecord], max_epochs: int) -> Optional[Decision]:
    """What stops any member: a non-finite loss, or the epoch limit."""
    last = history[-1]
    if not last.finite:
        return Decision(True, f"diverged: loss became non-finite at epoch {last.epoch}", diverged=True)
    if last.epoch >= max_epochs:
        return Decision(True, f"max epochs: reached the limit of {max_epochs} epochs")
    return None


class _Rule:
    """What every rule does first: continue on an empty history, stop on a non-finite loss or the
    epoch limit; otherwise the rule's own `_decide`."""
    max_epochs: int

    def __call__(self, history: Sequence[EpochRecord]) -> Decision:
        if not history:
            return CONTINUE
        return common_stops(history, self.max_epochs) or self._decide(history)

    def _decide(self, history: Sequence[EpochRecord]) -> Decision:
        raise NotImplementedError


@dataclass(frozen=True)
class EagerStop(_Rule):
    """The eager rule: `plateau` (relative validation gain below `threshold`), `fixed` (after
    `epoch` epochs), `budget` (before the next epoch would pass `budget_seconds`) or `none`."""
    rule: Literal["plateau", "fixed", "budget", "none"] = "plateau"
    max_epochs: int = 20
    threshold: float = 0.2
    min_epochs: int = 1
    epoch: int = 3
    budget_seconds: float = 30.0

    def _decide(self, history: Sequence[EpochRecord]) -> Decision:
        epochs = len(history)
        if self.rule == "plateau" and epochs >= max(2, self.min_epochs):
            gain = relative_improvement(history[-2].val_loss, history[-1].val_loss)
            if gain < self.threshold:
                return Decision(True, plateau_reason(gain, self.threshold, history[-1].epoch))
        if self.rule == "fixed" and epochs >= self.epoch:
            return Decision(True, f"fixed: trained the set {self.epoch} epoch{'s' if self.epoch != 1 else ''}")
        if self.rule == "budget":
            spent = sum(r.seconds for r in history)
            if spent + spent / epochs > self.budget_seconds:
                return Decision(True, f"budget: {spent:.1f} s spent, another epoch would pass "
                                      f"{self.budget_seconds:g} s")
        return CONTINUE


@dataclass(frozen=True)
class EarlyStopping(_Rule):
    """Conventional early stopping: `patience` epochs without a relative gain above `min_delta`."""
    patience: int = 3
    min_delta: float = 0.01
    max_epochs: int = 20

    def _decide(self, history: Sequence[EpochRecord]) -> Decision:
        best = history[0]
        for record in history[1:]:
            if relative_improvement(best.val_loss, record.val_loss) > self.min_delta:
                best = record
        waited = history[-1].epoch - best.epoch
        if waited >= self.patience:
            return Decision(True, f"early stopping: no improvement for {waited} epochs after epoch {best.epoch}")
        return CONTINUE
