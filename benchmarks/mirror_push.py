"""What mirroring a run to an output URI costs per member event, against the number of events.

A run whose `output` is a URI pushes after every member event. The push used to walk the whole
staging tree (a stat of every file written so far) to find what changed, so each push grew with
the run and a run's total grew with (members x epochs) squared; now a push uploads the files the
event produced (`ensemble.observers.logs.event_files`, plus progress.csv and the TensorBoard file) and
only the final push walks. This replays a run's writes (per member epoch: a checkpoint of the
default member's size, 75 KB, history.jsonl and progress.csv; epoch-major, as members train in
parallel) into a staging directory mirrored through pyarrow to a local directory (a file://
URI: the bookkeeping is measured, not a network, and both sides upload the same bytes), and
times both pushes side by side in one run, on the same files.

Measured on a 2-core Intel Xeon (KVM), no GPU, Python 3.11, pyarrow 26, with other jobs loading
the cores (load average 3-5); medians of 5 repeats, both pushes back to back in each:

| members | events | files | walk s | changed s | ratio | walk ms/event: first, last tenth | changed ms/event |
|---|---|---|---|---|---|---|---|
| 5 | 110 | 330 | 0.60 | 0.23 | 2.6x | 1.3 / 5.3 | 1.0 / 1.2 |
| 20 | 440 | 1,320 | 4.96 | 0.78 | 6.4x | 2.7 / 20.1 | 0.6 / 0.9 |

The walk's cost per event grows with the files on disk (7x from the first to the last tenth of
the 20-member run) and its total faster than the events (4 times the events: 8 times the
seconds); the push of the changed files stays flat per event (about 1 ms), so its total grows
with the events (4 times the events: 3.4 times the seconds). Both upload the same bytes.
Reproduce: python benchmarks/mirror_push.py (about a minute).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from ensemble.observers.logs import event_files
from ensemble.storage import Mirror
from workers.events import Done, EpochEnded, Event, Started
from workers.history import EpochRecord
from workers.layout import HISTORY, MANIFEST, OUTCOME, PROGRESS_CSV, STATE, WEIGHTS, checkpoint_dir, member_name
from workers.outcome import Outcome
from workers.stopping import CONTINUE, Decision

EPOCHS = 20
CHECKPOINT = {WEIGHTS: 70_000, STATE: 5_000, MANIFEST: 400}  # bytes: the default member CAE's checkpoint


def run_events(members: int, epochs: int = EPOCHS) -> list[Event]:
    """A run's member events, epoch-major: every member starts, trains `epochs` epochs, finishes."""
    names = [member_name(i) for i in range(members)]
    events: list[Event] = [Started(name, 0.0, {}) for name in names]
    for epoch in range(1, epochs + 1):
        stop = Decision(True, "max epochs") if epoch == epochs else CONTINUE
        events += [EpochEnded(name, float(epoch), EpochRecord(epoch, 1.0, 1.0, 1.0), stop) for name in names]
    return events + [Done(name, float(epochs), Outcome([], "max epochs", False, 1.0)) for name in names]


def write_event(root: Path, event: Event) -> list[str]:
    """Write the files `event` produces into the staging run directory, as the actors and the
    driver would; returns the driver's own files (progress.csv), as RunLogs does."""
    member = root / event.name
    member.mkdir(parents=True, exist_ok=True)
    if isinstance(event, (Started, EpochEnded)):
        epoch = event.record.epoch if isinstance(event, EpochEnded) else 0
        if isinstance(event, Started) or event.record.finite:
            directory = checkpoint_dir(member, epoch)
            directory.mkdir()
            for name, size in CHECKPOINT.items():
                (directory / name).write_bytes(os.urandom(size))
    if isinstance(event, EpochEnded):
        for name in (HISTORY, PROGRESS_CSV):
            with open(member / name, "a") as handle:
                handle.write(f"{event.record.epoch},1.0,1.0,1.0\n")
        return [f"{event.name}/{PROGRESS_CSV}"]
    if isinstance(event, Done):
        (member / OUTCOME).write_text("{}")
    return []


def replay(members: int, walk: bool, scratch: Path) -> dict:
    """Push after every event of a `members`-member run; seconds spent in pushes, per event."""
    staging, store = scratch / "staging" / "run", scratch / "store" / "run"
    staging.mkdir(parents=True)
    mirror = Mirror(store.as_uri(), staging)
    per_event = []
    for event in run_events(members):
        written = write_event(staging, event)
        started = time.perf_counter()
        mirror.push() if walk else mirror.push(event_files(event) + written)
        per_event.append(time.perf_counter() - started)
    mirror.push(final=True)
    files = sum(len(names) for _, _, names in os.walk(staging))
    shutil.rmtree(scratch)
    tenth = max(len(per_event) // 10, 1)
    return {"events": len(per_event), "files": files, "total": sum(per_event),
            "first": statistics.mean(per_event[:tenth]) * 1e3, "last": statistics.mean(per_event[-tenth:]) * 1e3}


def side_by_side(members: int, repeats: int) -> tuple[dict, dict]:
    """Both pushes back to back in every repeat (so other load hits both alike); medians per figure."""
    runs: dict[bool, list[dict]] = {True: [], False: []}
    for _ in range(repeats):
        for walk in (True, False):
            with tempfile.TemporaryDirectory(prefix="mirror-bench-") as scratch:
                runs[walk].append(replay(members, walk, Path(scratch) / "run"))
    return tuple({key: statistics.median(run[key] for run in runs[walk]) for key in runs[walk][0]}
                 for walk in (True, False))


def main(repeats: int = 5) -> None:
    with tempfile.TemporaryDirectory(prefix="mirror-bench-") as scratch:
        replay(2, walk=False, scratch=Path(scratch) / "warm-up")  # pyarrow's first filesystem calls
    print(f"Medians of {repeats} repeats, both pushes back to back in each.")
    print("| members | events | files | walk s | changed s | ratio | walk ms/event: first, last tenth | "
          "changed ms/event |")
    print("|---|---|---|---|---|---|---|---|")
    for members in (5, 20):
        old, new = side_by_side(members, repeats)
        print(f"| {members} | {new['events']:.0f} | {new['files']:,.0f} | {old['total']:.2f} | {new['total']:.2f} | "
              f"{old['total'] / new['total']:.1f}x | {old['first']:.1f} / {old['last']:.1f} | "
              f"{new['first']:.1f} / {new['last']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
