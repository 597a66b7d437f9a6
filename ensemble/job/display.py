"""The three views of a training run (see `console` for the state and the formats they share):
a live rich table on a terminal, epoch lines and a heartbeat elsewhere, or quiet. Each is an
event handler with `notice(text)` for the rare line that must always show, and `close()`."""

from __future__ import annotations

import sys
import threading
import time
from typing import Optional, Sequence, TextIO

from ensemble.job.console import (
    FINISHED,
    Board,
    Entry,
    Watch,
    duration,
    epoch_line,
    eta_seconds,
    eta_text,
    expected_epochs,
    failure_lines,
    gain_text,
    heartbeat_due,
    loss,
    roster_line,
    started_lines,
    status_line,
)
from workers.events import EpochEnded, Event, Started


class QuietView:
    """No progress: only notices and failures (a dead actor's last words are never hidden)."""

    def __init__(self, board: Board, stream: TextIO):
        self.board, self.stream = board, stream
        self.lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.board.apply(event)
            self._print(self.lines(event))

    def lines(self, event: Event) -> list[str]:
        return failure_lines(event)

    def notice(self, text: str) -> None:
        with self.lock:
            self._print([text])

    def _print(self, lines: Sequence[str]) -> None:
        for line in lines:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        pass


class LineView(QuietView):
    """For logs: one line per finished epoch, and a status line every `heartbeat_seconds`."""

    def __init__(self, board: Board, stream: TextIO, heartbeat_seconds: float = 30.0):
        super().__init__(board, stream)
        self.interval, self.last_beat = heartbeat_seconds, board.started
        self.stopping = threading.Event()
        self._print([roster_line(list(board.entries.values()))])
        self.beats = threading.Thread(target=self._beat, name="ensemble-heartbeat", daemon=True)
        self.beats.start()

    def lines(self, event: Event) -> list[str]:
        match event:
            case Started():
                return started_lines(event)
            case EpochEnded(decision=decision):
                return [epoch_line(self.board.entries[event.name], event.at - self.board.started, decision.stop)]
        return failure_lines(event)

    def _beat(self) -> None:
        while not self.stopping.wait(min(1.0, self.interval)):
            with self.lock:
                now = time.time()
                if heartbeat_due(now, self.last_beat, self.interval):
                    self._print([status_line(self.board, now)])
                    self.last_beat = now

    def close(self) -> None:
        self.stopping.set()
        self.beats.join()


class LiveView(QuietView):
    """For a person at a terminal: one table, redrawn in place twice a second."""

    def __init__(self, board: Board, stream: TextIO):
        from rich.console import Console
        from rich.live import Live
        super().__init__(board, stream)
        self.console = Console(file=stream)
        self.live = Live(get_renderable=self.render, console=self.console, refresh_per_second=2)
        self.live.start()

    def __call__(self, event: Event) -> None:
        with self.lock:  # not held while printing: the live display's refresh takes it to render
            self.board.apply(event)
            lines = self.lines(event) + (started_lines(event) if isinstance(event, Started) else [])
        for line in lines:
            self.console.print(line, highlight=False, markup=False)

    def notice(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)

    def render(self, now: Optional[float] = None):
        with self.lock:
            return live_table(self.board, time.time() if now is None else now)

    def close(self) -> None:
        self.live.stop()


def live_table(board: Board, now: float):
    """The live view's content: a header, a row per member in training, one line for the finished
    members and one for the queued ones (so the table stays as tall as the members training)."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text
    phase, counts = board.phase(), board.counts()
    entries = list(board.entries.values())
    peers = [e for e in entries if e.phase == phase]
    eta, bound = eta_seconds(peers)
    header = Text(f"{phase}: {counts['running']} running, {counts['queued']} queued, {counts['done']} done, "
                  f"{counts['lost']} lost; elapsed {duration(now - board.started)}; ETA {eta_text(eta, bound)}")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("member", "state", "epoch", "train loss", "val loss", "gain", "epoch s", "elapsed", "ETA"):
        table.add_column(column, justify="left" if column in ("member", "state") else "right")
    for e in entries:
        if e.state in ("running", "restarting"):
            epochs, is_bound = expected_epochs(e, peers)
            left = (epochs - e.epoch) * e.pace if e.pace is not None else None
            table.add_row(e.name, e.state, f"{e.epoch}/{e.max_epochs}", loss(e.train_loss), loss(e.val_loss),
                          gain_text(e.gain), f"{e.seconds[-1]:.2f}" if e.seconds else "-",
                          duration(now - e.started_at) if e.started_at else "-", eta_text(left, is_bound))
    finished = [f"{e.name} {e.state}@{e.epoch}" for e in entries if e.state in FINISHED]
    queued = [e.name for e in entries if e.state == "queued"]
    lines = [Text(f"finished ({len(finished)}): " + ", ".join(finished))] if finished else []
    lines += [Text(f"queued ({len(queued)}): " + ", ".join(queued))] if queued else []
    return Group(header, *([table] if table.row_count else []), *lines)


def open_display(watch: Watch, entries: Sequence[Entry], started: Optional[float] = None):
    """The view `watch` asks for; `auto` is the live table on a terminal and lines elsewhere."""
    from rich.console import Console
    stream = watch.stream or sys.stdout
    board = Board(entries, started)
    view = watch.view
    if view == "auto":
        view = "live" if Console(file=stream).is_terminal else "lines"
    if view == "live":
        return LiveView(board, stream)
    if view == "lines":
        return LineView(board, stream, watch.heartbeat_seconds)
    return QuietView(board, stream)
