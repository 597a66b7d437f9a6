"""Run member actors in parallel on Ray and stream their per-epoch events to the driver."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import ray

from ensemble.placement import Share
from workers.actor import MemberActor, MemberSpec
from workers.training import Outcome


@dataclass
class MemberRun:
    """What the driver learnt about one member while it trained."""
    outcome: Outcome
    placement: dict
    started_at: float                                     # seconds since the phase began
    epoch_spans: list[tuple[int, float, float]] = field(default_factory=list)  # (epoch, start, end)


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
                      on_event: Callable[[dict], None]) -> dict[str, MemberRun]:
    """Start one actor per spec (Ray queues those that do not fit yet) and follow their
    generators until every one has finished; events reach `on_event` as they happen."""
    phase_start = time.time()
    actors = [MemberActor.options(num_cpus=share.cpus, num_gpus=share.gpus).remote(share.cpus) for _ in specs]
    streams = {actor.train.remote(spec, data_ref): actor for actor, spec in zip(actors, specs)}
    runs: dict[str, dict] = {spec.name: {"epoch_spans": []} for spec in specs}
    pending = list(streams)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for stream in ready:
                try:
                    event = ray.get(next(stream))
                except StopIteration:
                    ray.kill(streams[stream])  # frees its CPUs/GPUs for a queued member
                    continue
                pending.append(stream)
                _record(runs[event["name"]], event, phase_start)
                on_event(event)
    finally:
        for actor in actors:
            ray.kill(actor)
    return {name: MemberRun(**fields) for name, fields in runs.items()}


def _record(run: dict, event: dict, phase_start: float) -> None:
    at = event["at"] - phase_start
    if event["event"] == "started":
        run["started_at"], run["placement"] = at, event["placement"]
    elif event["event"] == "epoch":
        record = event["record"]
        run["epoch_spans"].append((record.epoch, at - record.seconds, at))
    elif event["event"] == "done":
        run["outcome"] = event["outcome"]
