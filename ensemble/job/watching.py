"""Where a run's events go while it trains: the steps publish each typed event (`workers.events`)
to one handler, which hands it to the observers (`ensemble.observers`: logs, metrics, the user's
callback, the progress view) and then to the output URI's mirror. `roster` is who the view
follows; `announce` the lines a user must see before training starts."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

from ensemble.job.prepare import Plan
from ensemble.observers.logs import RunLogs, event_files
from ensemble.observers.metrics import RunMetrics
from ensemble.observers.progress import Entry, Watch, open_display
from ensemble.scheduling.placement import baseline_share
from ensemble.scheduling.session import Session
from ensemble.storage import Mirror
from workers.events import Event
from workers.layout import BASELINE, member_name

Handlers = tuple[Callable[[Event], None], Callable[[str], None]]  # the event handler, notice


@contextmanager
def watching(name: str, run_dir: Path, entries: list[Entry], mirror: Optional[Mirror],
             on_event: Optional[Callable[[Event], None]], watch: Watch) -> Iterator[Handlers]:
    """Where events go (`name`: the run's): the run directory's logs (progress.csv, TensorBoard), Ray's metrics
    (per-member gauges), the user's callback and the display following `entries` (`roster`), then the
    output URI's mirror, which uploads the files this event produced, so each epoch's checkpoint is on
    the store as soon as the driver hears of it. Yields the event handler and `notice` (a line every
    view shows). Takes no plan, whose first images must be free to go (`run_dir.writing`)."""
    started = time.time()
    logs, metrics = RunLogs(run_dir, started), RunMetrics(name)
    display = open_display(watch, entries, started)

    def handle(event: Event) -> None:
        written = logs(event)
        metrics(event)
        if on_event is not None:
            on_event(event)
        display(event)
        if mirror is not None:
            mirror.push(event_files(event) + written)
    try:
        yield handle, display.notice
    finally:
        logs.close()
        display.close()


def roster(plan: Plan, nodes: list[dict]) -> list[Entry]:
    """Who the display follows: each member, then the baseline, with their epoch limits and shares."""
    config, share = plan.config, plan.member_share
    entries = [Entry(member_name(i), "members", config.train.epochs, share.cpus, share.gpus)
               for i in range(config.members)]
    if config.baseline.enabled:
        base = baseline_share(config.members, share, nodes)
        entries.append(Entry(BASELINE, "baseline", config.baseline.max_epochs, base.cpus, base.gpus))
    return entries


def announce(session: Session, watch: Watch, waiting: str, notice: Callable[[str], None]) -> None:
    """The lines a user must see before training starts: the dashboard's address, and why the
    run waits for the autoscaler when it does."""
    if watch.dashboard:
        token = " (token authentication: `ray get-auth-token` prints the token it asks for)" \
            if os.environ.get("RAY_AUTH_MODE") == "token" else ""
        notice(f"Ray dashboard: {session.dashboard_url}{token}" if session.dashboard_url
               else "Ray dashboard: not running (it needs ray[default]; see the Ray logs)")
    if waiting:
        notice(f"Waiting: {waiting}")
