"""Live progress: one line per member event, readable in a terminal and in `ray job logs`."""

from __future__ import annotations

import sys
from typing import TextIO


class ProgressPrinter:
    """Prints each epoch as it finishes and a one-line board of every member's state."""

    def __init__(self, names: list[str], stream: TextIO = sys.stdout):
        self.stream = stream
        self.state = {name: "queued" for name in names}

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def __call__(self, event: dict) -> None:
        name = event["name"]
        if event["event"] == "started":
            self.state[name] = "epoch 0"
            self._print(f"[{name}] started on {event['placement']['device']} "
                        f"with {event['placement']['threads']} thread(s)")
        elif event["event"] == "epoch":
            record, decision = event["record"], event["decision"]
            self.state[name] = f"epoch {record.epoch}"
            status = "running" if not decision.stop else ("DIVERGED" if decision.diverged else "stopped")
            self._print(f"[{name}] epoch {record.epoch:>3}  train {record.train_loss:9.4f}  "
                        f"val {record.val_loss:9.4f}  {record.seconds:6.2f}s  {status}"
                        + (f" ({decision.reason})" if decision.stop else ""))
        elif event["event"] == "restarted":
            self.state[name] = f"restart {event['restarts']}"
            self._print(f"[{name}] actor died ({event['cause']}); restarting from its newest checkpoint")
        elif event["event"] == "lost":
            self.state[name] = "lost"
            self._print(f"[{name}] LOST: {event['reason']}")
        elif event["event"] == "done":
            outcome = event["outcome"]
            self.state[name] = ("diverged" if outcome.diverged else "done") + f"@{outcome.epochs_trained}"
        self._print("  board: " + "  ".join(f"{n}={s}" for n, s in self.state.items()))
