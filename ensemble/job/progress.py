"""Live progress: one line per member event, readable in a terminal and in `ray job logs`."""

from __future__ import annotations

import sys
from typing import TextIO

from workers.events import Done, EpochEnded, Event, Lost, Restarted, Started


class ProgressPrinter:
    """Prints each epoch as it finishes and a one-line board of every member's state."""

    def __init__(self, names: list[str], stream: TextIO = sys.stdout):
        self.stream = stream
        self.state = {name: "queued" for name in names}

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def __call__(self, event: Event) -> None:
        name = event.name
        match event:
            case Started(placement=placement, resumed_from=resumed_from, skipped_checkpoints=skipped):
                self.state[name] = "epoch 0"
                resumed = f", resuming after epoch {resumed_from}" if resumed_from else ""
                self._print(f"[{name}] started on {placement['device']} with {placement['threads']} thread(s)"
                            + resumed)
                for problem in skipped:
                    self._print(f"[{name}] skipped a corrupt checkpoint: {problem}")
            case EpochEnded(record=record, decision=decision):
                self.state[name] = f"epoch {record.epoch}"
                status = "running" if not decision.stop else ("DIVERGED" if decision.diverged else "stopped")
                self._print(f"[{name}] epoch {record.epoch:>3}  train {record.train_loss:9.4f}  "
                            f"val {record.val_loss:9.4f}  {record.seconds:6.2f}s  {status}"
                            + (f" ({decision.reason})" if decision.stop else ""))
            case Restarted(restarts=restarts, cause=cause):
                self.state[name] = f"restart {restarts}"
                self._print(f"[{name}] actor died ({cause}); restarting from its newest checkpoint")
            case Lost(reason=reason):
                self.state[name] = "lost"
                self._print(f"[{name}] LOST: {reason}")
            case Done(outcome=outcome):
                self.state[name] = f"{outcome.status}@{outcome.epochs_trained}"
        self._print("  board: " + "  ".join(f"{n}={s}" for n, s in self.state.items()))
