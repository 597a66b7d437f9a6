"""Run member actors in parallel on Ray and stream their per-epoch events to the driver."""

from __future__ import annotations

import os
import time
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
    started_at: float = 0.0                               # seconds since the phase began
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
    """Start one actor per spec (Ray queues those that do not fit yet) and follow their
    generators until every one has finished; events reach `on_event` as they happen.

    A member whose actor dies (killed, node lost) gets a new actor, which resumes from its
    newest valid checkpoint, until `max_restarts` is used up; then it is marked lost.

    An actor on the driver's machine trains in the run directory itself. One elsewhere never
    writes there: it trains on its node's own disk, seeded from the run directory when it starts,
    and sends each epoch's files back in its events (see `workers.scratch`); they are written
    here before the event is reported."""
    phase_start = time.time()
    runs = {spec.name: MemberRun() for spec in specs}
    streams: dict = {}  # stream -> (spec, actor)
    driver = machine(ray.get_runtime_context().get_node_id())  # Ray:

    def launch(spec: MemberSpec):
        actor = MemberActor.options(num_cpus=share.cpus, num_gpus=share.gpus).remote(share.cpus)  # Ray:
        stream = actor.train.remote(spec, data_ref, handoff(spec.directory, driver))
        streams[stream] = (spec, actor)
        return stream

    pending = [launch(spec) for spec in specs]
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for stream in ready:
                spec, actor = streams.pop(stream)
                try:
                    event = ray.get(next(stream))
                except StopIteration:
                    ray.kill(actor)  # finished: free its CPUs/GPUs for a queued member
                    continue
                # Ray: the actor died, or its node died holding an event not read yet
                except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as err:
                    ray.kill(actor)
                    event = _after_death(runs[spec.name], spec, err, max_restarts)
                    if event["event"] == "restarted":
                        pending.append(launch(spec))
                    on_event(event)
                    continue
                streams[stream] = (spec, actor)
                pending.append(stream)
                receive(spec.directory, event.pop("files", {}))
                _record(runs[spec.name], event, phase_start)
                on_event(event)
    finally:
        for _, actor in streams.values():
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
        run.started_at, run.placement = at, event["placement"]
    elif event["event"] == "epoch":
        record = event["record"]
        run.epoch_spans.append((record.epoch, at - record.seconds, at))
    elif event["event"] == "done":
        run.outcome = event["outcome"]
