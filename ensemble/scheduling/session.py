"""The Ray session a run works in, and what the cluster offers. With `pool.py` and
`workers/actor.py`, the only code that calls Ray."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from typing import Iterator

import ray

from ensemble.data import Splits
from ensemble.scheduling.signals import stop_on_sigterm


def connect(num_cpus: int | None = None) -> bool:
    """Connect to RAY_ADDRESS (or an already initialised Ray), else start a local instance with
    `num_cpus` (all local CPUs by default). Returns whether this call started it."""
    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False)
        return False
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False)
    return True


@contextmanager
def ray_session(num_cpus: int | None = None) -> Iterator[bool]:
    """Ray for the length of a `with`: connected or started by `connect`, and shut down afterwards only
    if this started it. Yields whether it did."""
    started = connect(num_cpus)
    try:
        with stop_on_sigterm():
            yield started
    finally:
        if started:
            ray.shutdown()


def alive_node_resources() -> list[dict]:
    """Each live node's resources (CPU, GPU, memory, ...), as Ray reports them."""
    return [node["Resources"] for node in ray.nodes() if node.get("Alive")]


def share_data(splits: Splits) -> ray.ObjectRef:
    """The training and validation images, put into the object store once; every member actor
    reads them zero-copy."""
    key = uuid.uuid4().hex  # lets an actor keep one device copy for every member it trains on this data
    return ray.put({"key": key, "train_x": splits.train_x.numpy(), "val_x": splits.val_x.numpy()})


def driver_node_id() -> str:
    return ray.get_runtime_context().get_node_id()
