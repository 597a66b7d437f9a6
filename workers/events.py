"""What happens to a member while it trains, as typed events (like Ray Tune's callbacks).

A member's actor sends `Started`, one `EpochEnded` per epoch and `Done`; the driver adds
`Restarted` (its actor died and it resumes on a new one) and `Lost` (restarts used up). Every
event names its member and carries `at`, the wall-clock time (`time.time()`) it happened.
Consumers (the pool, the run's logs and display, the bench, a user's `on_event=` callback) take
them apart with `match`.

The callback protocol (`ensemble.run(..., on_event=f)`): `f(event)` is called on the driver, in
one thread, in the order the driver hears of the events, after the event's files are in the run
directory and its progress.csv and TensorBoard rows are written. Per member: `Started` (again
after every restart, with `resumed_from`), `EpochEnded` for each epoch trained in this attempt,
then `Done`, or `Lost`; `Restarted` between attempts. The events are frozen dataclasses, safe to
keep. `f` should return quickly (the next event waits for it) and not raise: an exception fails
the run. New fields only ever come with defaults, so a callback written today keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Union

from workers.history import EpochRecord
from workers.outcome import Outcome
from workers.stopping import Decision

if TYPE_CHECKING:  # the events stay importable without torch
    from workers.encoding import EncodedEpochs


@dataclass(frozen=True)
class Started:
    name: str
    at: float
    placement: dict  # device, threads, gpu_ids, pid, node_id, directory
    resumed_from: Optional[int] = None  # the saved epoch it continues from; None: from scratch
    skipped_checkpoints: tuple[str, ...] = ()  # corrupt checkpoints passed over on the way


@dataclass(frozen=True)
class EpochEnded:
    name: str
    at: float
    record: EpochRecord
    decision: Decision
    threads: Optional[int] = None  # torch threads the epoch ran with (more once idle actors lend their CPUs)


@dataclass(frozen=True)
class Done:
    name: str
    at: float
    outcome: Outcome


@dataclass(frozen=True)
class Restarted:
    name: str
    at: float
    restarts: int  # restarts used so far, this one included
    cause: str
    log_tail: tuple[str, ...] = ()  # the dead actor's last stderr lines (its warnings and errors)


@dataclass(frozen=True)
class Lost:
    name: str
    at: float
    reason: str
    log_tail: tuple[str, ...] = ()


Event = Union[Started, EpochEnded, Done, Restarted, Lost]


@dataclass(frozen=True)
class Shipment:
    """What an actor sends per event: the event, and the files its node wrote that the driver
    must put into the run directory (empty on the driver's own machine; see `workers.scratch`).
    With `Done`, the finished member's features for the combiner (`workers.encoding`), by epoch."""
    event: Event
    files: dict[str, bytes] = field(default_factory=dict)
    features: EncodedEpochs = field(default_factory=dict)
