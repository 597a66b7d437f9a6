"""Start now, wait for the autoscaler, or give up: a pure function of the cluster's state.

A cluster whose GPU workers scale from zero has no live node that can hold a GPU member when a
job starts; Ray queues the member's actor and the autoscaler adds a node for it. So a run only
exits at once (code 2) when neither a live node nor a node type the autoscaler can add is able
to hold a member; with a suitable node type it waits, and says so. The Ray queries that fill
`Autoscaler` live in `session.py`; everything here is tested on recorded cluster states.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional, Sequence

from ensemble.scheduling.placement import Share, infeasible_reason


@dataclass(frozen=True)
class NodeType:
    """A node type the autoscaler may launch (a cluster.yaml `available_node_types` entry, a
    KubeRay worker group)."""
    name: str
    resources: dict                  # CPU, GPU, ... of one node of this type
    max_workers: int = -1            # -1: no limit of its own


@dataclass(frozen=True)
class Autoscaler:
    """What the cluster's autoscaler says about itself."""
    node_types: Optional[tuple[NodeType, ...]] = None   # None: it does not publish them
    pending_launches: dict = field(default_factory=dict)  # node type -> nodes being launched now


@dataclass(frozen=True)
class Capacity:
    action: str                      # "go", "wait" (for the autoscaler) or "fail" (exit 2)
    message: str = ""


def holds(resources: dict, share: Share) -> bool:
    return resources.get("CPU", 0) >= share.cpus and resources.get("GPU", 0) >= share.gpus


def resource_text(resources: dict) -> str:
    gpus = f", {resources['GPU']:g} GPU" if resources.get("GPU") else ""
    return f"{resources.get('CPU', 0):g} CPU{gpus}"


def capacity(nodes: Sequence[dict], autoscaler: Optional[Autoscaler], share: Share, who: str) -> Capacity:
    """Whether `who` (each asking for `share`) can run on this cluster: now (a live node holds
    it), after the autoscaler adds a node (a node type of its holds it; or it does not publish
    its node types, so only asking it can tell), or never (no autoscaler, or none of its node
    types holds it: the run exits 2 at once instead of waiting forever)."""
    problem = infeasible_reason(nodes, share, who)
    if problem is None:
        return Capacity("go")
    if autoscaler is None:
        return Capacity("fail", f"{problem} The cluster has no autoscaler that could add one.")
    if autoscaler.node_types is None:
        return Capacity("wait", f"no live node can hold {who} ({share.describe()}) yet; waiting for the cluster's "
                                f"autoscaler to add one{launching(autoscaler)} (it does not say which node types it "
                                "has: if none fits, stop the run and lower the resources).")
    suitable = [t for t in autoscaler.node_types if t.max_workers != 0 and holds(t.resources, share)]
    if not suitable:
        types = ", ".join(f"{t.name} ({resource_text(t.resources)})" for t in autoscaler.node_types) or "none"
        return Capacity("fail", f"{problem} The autoscaler cannot add one either: its node types are {types}.")
    best = suitable[0]
    return Capacity("wait", f"no live node can hold {who} ({share.describe()}) yet; waiting for the autoscaler to "
                            f"add a '{best.name}' node ({resource_text(best.resources)}){launching(autoscaler)}.")


def launching(autoscaler: Autoscaler) -> str:
    pending = ", ".join(f"{count} x {name}" for name, count in sorted(autoscaler.pending_launches.items()) if count)
    return f" (launching now: {pending})" if pending else ""


READONLY_TYPE = re.compile(r"^node_[0-9a-f]{56}$")  # the names Ray's read-only provider gives live nodes


def can_launch(report: dict) -> bool:
    """Whether an autoscaler's status report (`ray status`'s source) comes from one that can add
    nodes. Every Ray cluster runs a monitor; without an autoscaling config (a local `ray.init`, a
    plain `ray start --head`) it reports through a read-only provider whose only node types are
    the live nodes themselves, named `node_<node id>`: that one can launch nothing."""
    names = set(report.get("active_nodes") or {}) | set(report.get("idle_nodes") or {})
    names |= set(report.get("pending_launches") or {}) | set((report.get("node_type_mapping") or {}).values())
    return bool(names) and not all(READONLY_TYPE.match(name) for name in names)
