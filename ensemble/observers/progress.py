"""What a run shows while it trains: output that grows with the work, not with members x events.

- On a terminal (`view="table"`): one table redrawn in place (rich): a row per member in training
  (state, epoch k/max, last train/val loss, the relative gain the eager rule sees, epoch
  seconds, elapsed, ETA); finished and queued members collapse to one line each.
- Anywhere else (`view="lines"`: `ray job logs`, CI, a file): one line per finished epoch with
  the run's elapsed time, and a one-line status every 30 s (queued/running/done/lost, resources
  in use, ETA), so a long epoch is not silence.
- `view="quiet"`: nothing but notices (the dashboard's URL, waiting for nodes, a dead actor's
  last words) until the summary.

`Board` is the state behind every view, updated from the typed events (`workers.events`); the
decisions (`eta_seconds`, `heartbeat_due`, `epoch_line`) are pure functions with their own tests.
The three views (`TableView`, `LineView`, `QuietView`, chosen by `open_display`) come last: each is
an event handler with `notice(text)` for the rare line that must always show, and `close()`.
"""

from __future__ import annotations

import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Optional, Sequence, TextIO, Union

from workers.errors import InputError
from workers.events import Done, EpochEnded, Event, Lost, Restarted, Started
from workers.stopping import relative_improvement

WIDTH = 120  # no line of the non-terminal output is longer
FINISHED = ("done", "diverged", "lost")
VIEWS = ("auto", "table", "lines", "quiet")  # `Watch.view` and `ensemble.run(progress=...)`: the views' names
VIEW_ALIASES = {"live": "table"}  # the name `Watch` once gave the table, still accepted


@dataclass(frozen=True)
class Watch:
    """How a run shows itself (`ensemble run --quiet/--verbose/--dashboard`; `ensemble.run(progress=...)`).

    `ensemble.run(progress="lines")` builds one from the view's name; pass a Watch as `progress=` for
    the rest (Ray's logs, the dashboard, another stream).

    Parameters
    ----------
    view : {"auto", "table", "lines", "quiet"}
        `auto` (the table on a terminal, epoch lines elsewhere), `table`, `lines` or `quiet`. The
        table's old name `live` is accepted and becomes `table`; any other name is an InputError.
    verbose : bool
        Ray's own logs (every actor's output) reach the console.
    dashboard : bool
        Start Ray's dashboard on 127.0.0.1 and print its URL.
    heartbeat_seconds : float
        Seconds between status lines of the `lines` view.
    stream : TextIO or None
        Where the views write; None: `sys.stdout`.

    Examples
    --------
    >>> import io
    >>> import ensemble
    >>> watch = ensemble.Watch(view="lines", stream=io.StringIO())
    >>> watch.view, watch.heartbeat_seconds
    ('lines', 30.0)
    >>> ensemble.Watch(view="live").view   # the table's old name
    'table'
    >>> # ensemble.run(cfg, progress=watch) then writes one line per finished epoch to the stream
    """
    view: str = "auto"               # auto: the table on a terminal, lines elsewhere; or table, lines, quiet
    verbose: bool = False            # Ray's own logs (every actor's output) reach the console
    dashboard: bool = False          # start Ray's dashboard on 127.0.0.1 and print its URL
    heartbeat_seconds: float = 30.0
    stream: Optional[TextIO] = None  # default: sys.stdout

    def __post_init__(self) -> None:
        object.__setattr__(self, "view", view_name(self.view, "Watch.view"))


def view_name(view: str, keyword: str) -> str:
    """A view's name as the views know it: an old alias becomes the name, an unknown one an InputError."""
    view = VIEW_ALIASES.get(view, view)
    if view not in VIEWS:
        raise InputError(f"{keyword}={view!r} is not a view; allowed: {', '.join(map(repr, VIEWS))}.")
    return view


def progress_watch(progress: Union[str, Watch, None], quiet_by_default: bool, watch: Optional[Watch] = None) -> Watch:
    """The Watch for `ensemble.run(progress=...)`: a Watch as given, or a view by its name: auto (the
    table on a terminal, epoch lines in a notebook, a log or a file), table, lines or quiet. None:
    auto, or quiet when the caller gave its own `on_event` (it shows progress itself). `watch` is the
    old keyword for a Watch: it still wins, with a DeprecationWarning at the caller of `run`."""
    if watch is not None:
        warnings.warn("ensemble.run(watch=...) is deprecated: pass the Watch as progress=... instead.",
                      DeprecationWarning, stacklevel=3)
        return watch
    if isinstance(progress, Watch):
        return progress
    if progress is None:
        return Watch(view="quiet" if quiet_by_default else "auto")
    return Watch(view=view_name(progress, "progress"))


def choose_view(view: str, is_terminal: bool, is_jupyter: bool) -> str:
    """The view that draws: `auto` is the table on a terminal and lines elsewhere. A notebook gets
    lines even when the table is asked for: its cell output is not a terminal that can redraw in
    place, and rich's notebook rendering needs ipywidgets, which this package does not require."""
    if view == "table":
        return "lines" if is_jupyter else "table"
    if view == "auto":
        return "table" if is_terminal and not is_jupyter else "lines"
    return view


@dataclass
class Entry:
    """One member (or the baseline) as the console follows it."""
    name: str
    phase: str                       # "members" or "baseline"
    max_epochs: int
    cpus: float = 1.0
    gpus: float = 0.0
    state: str = "queued"            # queued, running, restarting, done, diverged, lost
    epoch: int = 0
    train_loss: Optional[float] = None
    val_loss: Optional[float] = None
    gain: Optional[float] = None     # relative validation improvement over the epoch before
    seconds: list[float] = field(default_factory=list)
    started_at: Optional[float] = None
    note: str = ""                   # why it stopped, or was lost

    @property
    def pace(self) -> Optional[float]:
        return sum(self.seconds) / len(self.seconds) if self.seconds else None


class Board:
    """Every member's state, from the events; what the views draw."""

    def __init__(self, entries: Sequence[Entry], started: Optional[float] = None):
        self.entries = {e.name: e for e in entries}
        self.started = time.time() if started is None else started

    def apply(self, event: Event) -> None:
        entry = self.entries.get(event.name)
        if entry is None:  # a name the roster did not list: follow it anyway
            entry = self.entries[event.name] = Entry(event.name, "members", 0)
        match event:
            case Started(resumed_from=resumed_from):
                entry.state, entry.started_at, entry.epoch = "running", event.at, resumed_from or 0
            case EpochEnded(record=record, decision=decision):
                previous = entry.val_loss if entry.epoch == record.epoch - 1 else None
                entry.gain = relative_improvement(previous, record.val_loss) if previous is not None else None
                entry.epoch, entry.train_loss, entry.val_loss = record.epoch, record.train_loss, record.val_loss
                entry.seconds.append(record.seconds)
                entry.note = decision.reason if decision.stop else ""
            case Restarted():
                entry.state = "restarting"
            case Lost(reason=reason):
                entry.state, entry.note = "lost", reason
            case Done(outcome=outcome):
                entry.state, entry.epoch = outcome.status, outcome.epochs_trained
                entry.note = outcome.stop_reason

    def counts(self) -> dict[str, int]:
        found = {"queued": 0, "running": 0, "done": 0, "lost": 0}
        for entry in self.entries.values():
            key = {"restarting": "running", "diverged": "done"}.get(entry.state, entry.state)
            found[key] = found.get(key, 0) + 1
        return found

    def phase(self) -> str:
        """The phase in training now: the first with a member not finished."""
        for entry in self.entries.values():
            if entry.state not in FINISHED:
                return entry.phase
        return "baseline" if "baseline" in self.entries else "members"

    def in_use(self) -> tuple[float, float]:
        running = [e for e in self.entries.values() if e.state in ("running", "restarting")]
        return sum(e.cpus for e in running), sum(e.gpus for e in running)


# --- pure decisions and formats ---

def expected_epochs(entry: Entry, peers: Sequence[Entry]) -> tuple[float, bool]:
    """How many epochs `entry` will train in all: the mean of its finished peers (the eager rule
    stops most members alike), else its epoch limit, an upper bound. Returns (epochs, is_bound)."""
    finished = [p.epoch for p in peers if p.state in ("done", "diverged") and p.epoch]
    if finished:
        return max(sum(finished) / len(finished), entry.epoch + 1.0), False
    return float(entry.max_epochs), True


def eta_seconds(entries: Sequence[Entry]) -> tuple[Optional[float], bool]:
    """Seconds until the phase of `entries` ends at the pace seen so far, and whether it is an upper
    bound: the remaining member-epochs times their pace, over the members training at once.
    None before any epoch has a time."""
    paces = [e.pace for e in entries if e.pace is not None]
    if not paces or all(e.state in FINISHED for e in entries):
        return None, True
    fallback = sum(paces) / len(paces)
    work, bound = 0.0, False
    for entry in entries:
        if entry.state in FINISHED:
            continue
        epochs, is_bound = expected_epochs(entry, entries)
        work += max(epochs - entry.epoch, 0.0) * (entry.pace or fallback)
        bound = bound or is_bound
    running = sum(1 for e in entries if e.state in ("running", "restarting"))
    return work / max(running, 1), bound


def heartbeat_due(now: float, last: float, interval: float) -> bool:
    """A status line is due once `interval` seconds have passed since the last one."""
    return now - last >= interval


def duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def eta_text(seconds: Optional[float], bound: bool) -> str:
    return "-" if seconds is None else ("<=" if bound else "~") + duration(seconds)


def loss(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:#.4g}"


def gain_text(gain: Optional[float]) -> str:
    return "-" if gain is None else f"{gain:.1%}"


def clip(line: str, width: int = WIDTH) -> str:
    return line if len(line) <= width else line[:width - 3] + "..."


def stop_label(reason: str) -> str:
    """The rule that stopped a member ("plateau", "max epochs", "diverged", ...): the line's own
    columns show the numbers, and the summary gives the whole reason."""
    return reason.split(":", 1)[0]


def epoch_line(entry: Entry, elapsed: float, stopped: bool) -> str:
    """One finished epoch, at most WIDTH characters."""
    line = (f"{duration(elapsed):>7} {entry.name:<9} epoch {entry.epoch:>3}/{entry.max_epochs:<3} "
            f"train {loss(entry.train_loss):>9} val {loss(entry.val_loss):>9} gain {gain_text(entry.gain):>6} "
            f"{entry.seconds[-1]:6.2f}s")
    if stopped:
        line += f"  stopped: {stop_label(entry.note)}"
    return clip(line)


def status_line(board: Board, now: float) -> str:
    """The heartbeat: counts, resources in use, the phase's ETA."""
    counts = board.counts()
    cpus, gpus = board.in_use()
    phase = board.phase()
    eta, bound = eta_seconds([e for e in board.entries.values() if e.phase == phase])
    now_in_phase = [e.state for e in board.entries.values() if e.phase == phase]
    waiting = waiting_text(phase, {"queued": now_in_phase.count("queued"),
                                   "running": len(now_in_phase) - now_in_phase.count("queued")
                                   - sum(state in FINISHED for state in now_in_phase)}, gpus > 0)
    return clip(f"{duration(now - board.started):>7} status: {counts['running']} running, {counts['queued']} queued, "
                f"{counts['done']} done, {counts['lost']} lost; in use {cpus:g} CPU"
                + (f", {gpus:g} GPU" if gpus else "") + f"; {phase} ETA {eta_text(eta, bound)}{waiting}")


def waiting_text(phase: str, counts: dict[str, int], gpus: bool) -> str:
    """Why the phase's queued work (`counts`: its queued and running) is not running yet: with nothing
    running, its actors are starting (the baseline's
    actor after the members, or the first members'); with some running, the rest wait for their slots,
    which only a running member's freed CPUs (or GPUs) give."""
    if not counts["queued"]:
        return ""
    if not counts["running"]:
        return "; starting the baseline" if phase == "baseline" else "; starting the member actors"
    return f"; {counts['queued']} waiting for free {'GPUs' if gpus else 'CPUs'}"


def failure_lines(event: Event) -> list[str]:
    """What a restart or a loss prints: the cause and the actor's last log lines."""
    match event:
        case Restarted(restarts=restarts, cause=cause):
            head = f"{event.name}: actor died ({cause}); restart {restarts} from its newest checkpoint"
        case Lost(reason=reason):
            head = f"{event.name}: LOST: {reason}"
        case _:
            return []
    tail = [f"  | {line}" for line in getattr(event, "log_tail", ())]
    return [clip(head)] + ([f"  last lines of {event.name}'s actor log:"] + [clip(t) for t in tail] if tail else [])


def started_lines(event: Started) -> list[str]:
    lines = [f"{event.name}: resumes after epoch {event.resumed_from}"] if event.resumed_from else []
    return lines + [clip(f"{event.name}: skipped a corrupt checkpoint: {p}") for p in event.skipped_checkpoints]


def roster_line(entries: Sequence[Entry]) -> str:
    """What the run will train, said once before the first epoch line."""
    parts = []
    for phase in ("members", "baseline"):
        group = [e for e in entries if e.phase == phase]
        if group:
            first = group[0]
            gpus = f", {first.gpus:g} GPU" if first.gpus else ""
            what = f"{len(group)} members" if phase == "members" else "the baseline"
            parts.append(f"{what} ({first.cpus:g} CPU{gpus}{' each' if len(group) > 1 else ''}, "
                         f"at most {first.max_epochs} epochs)")
    return clip("training " + " then ".join(parts))


# The views: what each kind of output shows of the board.

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


class TableView(QuietView):
    """For a person at a terminal: one table, redrawn in place twice a second."""

    def __init__(self, board: Board, stream: TextIO):
        from rich.console import Console
        from rich.live import Live
        super().__init__(board, stream)
        self.console = Console(file=stream)
        self.redrawn = Live(get_renderable=self.render, console=self.console, refresh_per_second=2)
        self.redrawn.start()

    def __call__(self, event: Event) -> None:
        with self.lock:  # not held while printing: rich's refresh thread takes it to render
            self.board.apply(event)
            lines = self.lines(event) + (started_lines(event) if isinstance(event, Started) else [])
        for line in lines:
            self.console.print(line, highlight=False, markup=False)

    def notice(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)

    def render(self, now: Optional[float] = None):
        with self.lock:
            return progress_table(self.board, time.time() if now is None else now)

    def close(self) -> None:
        self.redrawn.stop()


def progress_table(board: Board, now: float):
    """The table view's content: a header, a row per member in training, one line for the finished
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
    """The view `watch` asks for; `auto` is the table on a terminal and lines elsewhere."""
    from rich.console import Console
    stream = watch.stream or sys.stdout
    board = Board(entries, started)
    console = Console(file=stream)
    view = choose_view(watch.view, console.is_terminal, console.is_jupyter)
    if view == "table":
        return TableView(board, stream)
    if view == "lines":
        return LineView(board, stream, watch.heartbeat_seconds)
    return QuietView(board, stream)
