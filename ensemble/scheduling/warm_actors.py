"""Member actors kept warm between runs that share one Ray session.

Starting a member actor costs a fresh process that imports PyTorch and warms up, more than
training 2 members for an epoch on digits (the figure: docs/performance.md#figures-behind-design-choices).
When the Ray session outlives a run (the estimator's `shared_session()`, a user's own `ray.init`,
a `--repeats` loop), the actors a run leaves idle are kept here, and the next `MemberPool` with
the same share takes them instead of starting new ones. A run that opened its Ray session itself
(`ensemble run`, started locally or connected to RAY_ADDRESS) ends its actors as before: its
session, or its process, ends with it.

Inside one run the members' idle CPU actors are handed to the baseline, which trains on them: a group
of them on one node holds the baseline's share of CPUs together, so one trains with all their threads
while the others hold their CPUs (`host_group`); the run pays no new process for its baseline. At
the run's end they are kept for the next run as above, or ended.

Kept actors hold their CPUs/GPUs while idle, so they are bounded: at most what the last pool used,
one share at a time (a pool with another share ends them before it asks Ray for its own), and they
exit after `ENSEMBLE_ACTOR_IDLE_S` seconds without a run (30 by default; 0 keeps none), or at once
on `ensemble.release_actors()`. A cache from an earlier Ray session (after `ray.shutdown()` and a new
`ray.init`) is never used: it is keyed by the session and the driver's job.
"""

from __future__ import annotations

import math
import os
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

import ray

from ensemble.scheduling.placement import Share
from workers.errors import InputError

IDLE_VARIABLE = "ENSEMBLE_ACTOR_IDLE_S"
RELEASE_WAIT_S = 5.0  # at most, for released actors to exit and Ray to count their resources free
IDLE_DEFAULT_S = 30.0  # long enough for the gap between fits of a cross-validation, short for a user's other Ray work

# whether the runs in this context keep their idle actors: set by `ray_session`, False outside one
_keeping: ContextVar[bool] = ContextVar("keep_member_actors", default=False)


@dataclass
class Kept:
    """Idle member actors of one share, in one Ray session (`session`: its name and the driver's job),
    with the node each one runs on."""
    session: tuple[str, str]
    share: Share
    actors: list = field(default_factory=list)
    nodes: list = field(default_factory=list)


@dataclass
class Hosts:
    """Kept actors of `share` on one node that together hold a larger share: `trainer` trains with all
    their CPUs' threads, `holders` stay idle so that no one else takes their CPUs meanwhile."""
    share: Share
    trainer: Any
    holders: list
    nodes: list  # the node of the trainer, then of each holder


# --- pure decisions, tested without Ray ---

def keeps_actors(run_opened_ray: bool, idle_for: float) -> bool:
    """A run keeps its idle actors only when its Ray session outlives it: someone opened it before the
    run (when the run started Ray, Ray shuts down with it; when it connected to a cluster, as under
    `ray job submit`, its process ends with it, and the actors with their owner); and not when told to
    keep none."""
    return not run_opened_ray and idle_for > 0


def idle_seconds(value: Optional[str]) -> float:
    """How long kept actors wait for the next run, from the environment variable's `value`."""
    if value is None or not value.strip():
        return IDLE_DEFAULT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds >= 0:
        raise InputError(f"{IDLE_VARIABLE}={value!r} is not a number of seconds >= 0: it says how long member "
                         "actors a run leaves idle are kept warm for the next run in the same Ray session "
                         f"(default {IDLE_DEFAULT_S:g}; 0 keeps none).")
    return seconds


def split_kept(kept: Optional[Kept], session: tuple[str, str], share: Share, wanted: int) -> tuple[list, list]:
    """(the kept actors a pool of `share` wanting `wanted` actors takes, the kept actors to end). Actors
    of an earlier session are neither (their handles mean nothing now); those of another share, or more
    than wanted, are ended, since idle they would hold resources the pool's own actors wait for."""
    if kept is None or kept.session != session:
        return [], []
    if kept.share != share:
        return [], list(kept.actors)
    return list(kept.actors[:wanted]), list(kept.actors[wanted:])


def host_group(kept: Share, nodes: Sequence[str], share: Share) -> Optional[list[int]]:
    """Which kept actors of share `kept` (on `nodes`, one entry each) together host one actor of the larger
    `share`: enough of them on one node to hold its CPUs. None when no group can: GPUs (a GPU share is not
    a sum of fractions on one device), or too few actors on any one node."""
    if kept.gpus or share.gpus or share.cpus <= kept.cpus:
        return None
    needed = math.ceil(share.cpus / kept.cpus - 1e-9)
    for node in dict.fromkeys(nodes):
        on_node = [index for index, where in enumerate(nodes) if where == node]
        if len(on_node) >= needed:
            return on_node[:needed]
    return None


# --- the process-wide cache (one per driver process) ---

_lock = threading.Lock()
_kept: Optional[Kept] = None
_timer: Optional[threading.Timer] = None


def keeping() -> bool:
    """Whether the run in progress keeps the actors it leaves idle."""
    return _keeping.get()


@contextmanager
def run_scope(run_opened_ray: bool) -> Iterator[None]:
    """Around a run's Ray session. At its end the actors its pools left idle are kept for the next run
    when the session outlives it, else ended (a session it opened also ends the kept actors of the runs
    inside it, as in a --repeats loop)."""
    keep = keeps_actors(run_opened_ray, idle_seconds(os.environ.get(IDLE_VARIABLE)))
    token = _keeping.set(keep)
    try:
        yield
    finally:
        _keeping.reset(token)
        if keep:
            _wait_for_next_run()
        else:
            _release(until_free=False)


def take(share: Share, wanted: int) -> list:
    """Up to `wanted` kept actors of `share` for a starting pool; every other kept actor ends."""
    global _kept
    session = _session()
    with _lock:
        taken, ended = split_kept(_kept, session, share, wanted)
        _kept = None
        _cancel_timer()
    _end(ended)
    return taken


def take_hosts(share: Share) -> Optional[Hosts]:
    """For a pool training one actor of `share` (the baseline): kept actors of a smaller share that host
    it together (`host_group`); the other kept actors end. None, leaving the cache as it is, when the
    kept actors have `share` itself (`take` gives them); None, ending them, when no group can host it."""
    global _kept
    session = _session()
    with _lock:
        kept = _kept
        if kept is None or kept.session != session or kept.share == share:
            return None
        _kept = None
        _cancel_timer()
    group = host_group(kept.share, kept.nodes, share)
    chosen = group or []
    _end([actor for index, actor in enumerate(kept.actors) if index not in chosen])
    if not chosen:
        return None
    actors = [kept.actors[index] for index in chosen]
    return Hosts(kept.share, actors[0], actors[1:], [kept.nodes[index] for index in chosen])


def park(share: Share, actors: Sequence, nodes: Sequence[str]) -> None:
    """A pool's idle actors (on `nodes`, one entry each) at its end, for the run's next phase; the run's
    end keeps them for the next run or ends them (`run_scope`). Kept actors from before end."""
    global _kept
    if not actors:
        return
    with _lock:
        previous, _kept = _kept, Kept(_session(), share, list(actors), list(nodes))
        _cancel_timer()
    if previous is not None and previous.session == _kept.session:
        _end(previous.actors)


def _wait_for_next_run() -> None:
    """At the end of a run that keeps its actors: they rest (their data freed, threads back to their
    share) and wait `ENSEMBLE_ACTOR_IDLE_S` seconds for the next run."""
    global _kept, _timer
    with _lock:
        kept = _kept
        if kept is None:
            return
        _cancel_timer()
        if not _in_this_session(kept):  # kept in a Ray session that has ended since: nothing to call
            _kept = None
            return
        _timer = threading.Timer(idle_seconds(os.environ.get(IDLE_VARIABLE)), _expire, args=(kept,))
        _timer.daemon = True
        _timer.start()
    for actor in kept.actors:
        actor.rest.remote()  # before a next run's call: Ray runs one caller's calls to an actor in order


def release_actors() -> int:
    """End the member actors kept warm for the next run now, freeing their CPUs/GPUs for other Ray
    work; returns how many ended, once Ray counts their resources as free (a few seconds at most). The
    next run starts new ones. (They also end by themselves after `ENSEMBLE_ACTOR_IDLE_S` seconds
    without a run, and with the Ray session.)

    Returns
    -------
    int
        How many actors ended: 0 when none were kept, or Ray is not running.

    Examples
    --------
    >>> import ensemble
    >>> ended = ensemble.release_actors()  # what earlier runs in this process kept, if any
    >>> ensemble.release_actors()  # nothing is kept any more
    0
    """
    return _release(until_free=True)


def _release(until_free: bool) -> int:
    """End the kept actors; `until_free`: wait until Ray counts their CPUs free (for other work in this
    session; not at the end of a run whose session, or process, ends anyway)."""
    global _kept
    with _lock:
        kept, _kept = _kept, None
        _cancel_timer()
    if kept is None or not _in_this_session(kept):
        return 0
    if not until_free:
        _end(kept.actors)
        return len(kept.actors)
    free_before = ray.available_resources().get("CPU", 0.0)
    ray.wait(_end(kept.actors), num_returns=len(kept.actors), timeout=RELEASE_WAIT_S)  # each ends as it exits
    freed = free_before + kept.share.cpus * len(kept.actors)
    deadline = time.monotonic() + RELEASE_WAIT_S
    while ray.available_resources().get("CPU", 0.0) < freed - 1e-6 and time.monotonic() < deadline:
        time.sleep(0.05)  # Ray's accounting follows the exits within about 0.1 s
    return len(kept.actors)


def _expire(kept: Kept) -> None:
    global _kept
    with _lock:
        if _kept is not kept:  # taken by a run, or replaced, since the timer started
            return
        _kept = None
    if _in_this_session(kept):
        _end(kept.actors)


def _cancel_timer() -> None:
    global _timer
    if _timer is not None:
        _timer.cancel()
        _timer = None


def _end(actors: Sequence) -> list:
    """End `actors` gracefully (their task events still reach the timeline); the calls' references
    resolve as each exits."""
    return [actor.__ray_terminate__.remote() for actor in actors]


def _in_this_session(kept: Kept) -> bool:
    """Whether the kept actors belong to the Ray session this process is connected to now."""
    return ray.is_initialized() and kept.session == _session()


def _session() -> tuple[str, str]:
    context = ray.get_runtime_context()
    return context.get_session_name(), context.get_job_id()
