"""Run member actors in parallel on Ray and stream their per-epoch events to the driver."""

from __future__ import annotations

import os
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence

import ray

from ensemble.placement import Share
from ensemble.recovery import should_restart
from workers.actor import MemberActor, MemberSpec
from workers.scratch import handoff, machine, receive
from workers.training import Outcome


@dataclass
class MemberRun:
    """What the driver learnt about one member while it trained."""
    outcome: Optional[Outcome] = None                     # None: lost (its actor died too often)
    placement: dict = field(default_factory=dict)
    epoch_spans: list[tuple[int, float, float]] = field(default_factory=list)  # (epoch, start, end)
    restarts: int = 0
    lost_reason: Optional[str] = None


@contextmanager
def ray_session(num_cpus: int | None = None) -> Iterator[bool]:
    """Connect to RAY_ADDRESS (or an already initialised Ray), else start a local instance;
    shut down only what we started. Yields whether we started it."""
    if ray.is_initialized():
        yield False
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False)
        yield False
        return
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        yield True
    finally:
        ray.shutdown()


def alive_node_resources() -> list[dict]:
    return [node["Resources"] for node in ray.nodes() if node.get("Alive")]


def train_in_parallel(specs: Sequence[MemberSpec], share: Share, data_ref: ray.ObjectRef,
                      on_event: Callable[[dict], None], max_restarts: int = 0) -> dict[str, MemberRun]:
    """Train every spec on a pool of warm actors and follow their generators until all have
    finished; events reach `on_event` as they happen.

    One actor is requested per member, so Ray (and an autoscaler) sees the whole demand, but
    members form a queue: each actor that is up and warmed takes the next member, and the
    next again when that one finishes, so a queued member does not pay for a new process and a
    cold PyTorch. Actors still waiting for resources when the queue runs dry are cancelled.

    A member whose actor dies (killed, node lost) goes back to the front of the queue, with a
    new actor requested in place of the dead one, and resumes from its newest valid checkpoint,
    until `max_restarts` is used up; then it is marked lost.

    An actor on the driver's machine trains in the run directory itself. One elsewhere never
    writes there: it trains on its node's own disk, seeded from the run directory when it starts,
    and sends each epoch's files back in its events (see `workers.scratch`); they are written
    here before the event is reported."""
    phase_start = time.time()
    runs = {spec.name: MemberRun() for spec in specs}
    queue = deque(specs)
    warming: dict = {}   # warm-up ref -> actor
    streams: dict = {}   # stream -> (spec, actor)
    replacements_left = len(specs)  # for actors that die before taking a member
    driver = machine(ray.get_runtime_context().get_node_id())  # Ray:

    def request_actor():
        actor = MemberActor.options(num_cpus=share.cpus, num_gpus=share.gpus).remote(share.cpus)  # Ray:
        warming[actor.warm_up.remote(specs[0], data_ref)] = actor

    def next_member(actor):
        """Give `actor` the next queued member, or release it; once the queue is empty, cancel
        the actors still waiting for resources."""
        if not queue:
            ray.kill(actor)  # frees its CPUs/GPUs
            return
        spec = queue.popleft()
        streams[actor.train.remote(spec, data_ref, handoff(spec.directory, driver))] = (spec, actor)
        if not queue:
            for waiting in warming.values():
                ray.kill(waiting)
            warming.clear()

    for _ in specs:
        request_actor()
    try:
        while streams or warming:
            [ready], _ = ray.wait([*warming, *streams], num_returns=1)
            if ready in warming:
                actor = warming.pop(ready)
                try:
                    ray.get(ready)
                except ray.exceptions.RayActorError:  # Ray: died while starting; no member was on it
                    ray.kill(actor)
                    if queue and replacements_left > 0:
                        replacements_left -= 1
                        request_actor()
                    continue
                next_member(actor)
                continue
            spec, actor = streams.pop(ready)
            try:
                event = ray.get(next(ready))
            except StopIteration:
                next_member(actor)
                continue
            # Ray: the actor died, or its node died holding an event not read yet
            except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as err:
                ray.kill(actor)
                event = _after_death(runs[spec.name], spec, err, max_restarts)
                if event["event"] == "restarted":
                    queue.appendleft(spec)
                    request_actor()
                on_event(event)
                continue
            streams[ready] = (spec, actor)
            receive(spec.directory, event.pop("files", {}))
            _record(runs[spec.name], event, phase_start)
            on_event(event)
        if queue:
            raise RuntimeError(f"no actor could start for {', '.join(s.name for s in queue)}: every actor "
                               "requested for them died while starting; see the Ray logs of the failed workers.")
    finally:
        for actor in [*warming.values(), *(actor for _, actor in streams.values())]:
            ray.kill(actor)
    return runs


def _after_death(run: MemberRun, spec: MemberSpec, err: Exception, max_restarts: int) -> dict:
    cause = str(err).strip().splitlines()[0][:200]
    if should_restart(run.restarts, max_restarts):
        run.restarts += 1
        return {"event": "restarted", "name": spec.name, "restarts": run.restarts, "cause": cause}
    run.lost_reason = f"actor died {run.restarts + 1} time(s), restarts used up ({cause})"
    return {"event": "lost", "name": spec.name, "reason": run.lost_reason}


def _record(run: MemberRun, event: dict, phase_start: float) -> None:
    at = event["at"] - phase_start
    if event["event"] == "started":
        run.placement = event["placement"]
    elif event["event"] == "epoch":
        record = event["record"]
        run.epoch_spans.append((record.epoch, at - record.seconds, at))
    elif event["event"] == "done":
        run.outcome = event["outcome"]
