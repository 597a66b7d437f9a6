"""Resource decisions as pure functions of what the cluster's nodes offer (tested without Ray)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class Share:
    cpus: float
    gpus: float

    def describe(self) -> str:
        gpus = f", {self.gpus:g} GPU" if self.gpus else ""
        return f"{self.cpus:g} CPU{gpus}"


def infeasible_reason(nodes: Sequence[dict], share: Share, who: str) -> Optional[str]:
    """Why no single node can ever host `share`, or None when one can (Ray would wait forever)."""
    if not nodes:
        return "the Ray cluster has no alive nodes"
    if any(n.get("CPU", 0) >= share.cpus and n.get("GPU", 0) >= share.gpus for n in nodes):
        return None
    largest_cpu = max(n.get("CPU", 0) for n in nodes)
    largest_gpu = max(n.get("GPU", 0) for n in nodes)
    return (f"{who} asks for {share.describe()}, but the largest node of the Ray cluster offers "
            f"{largest_cpu:g} CPU and {largest_gpu:g} GPU; lower resources.cpus_per_member / "
            f"resources.gpus_per_member or add a larger node.")


def baseline_share(members: int, member: Share, nodes: Sequence[dict]) -> Share:
    """The baseline gets the ensemble's total, capped at what one node has: a single model
    cannot span nodes, and one model uses at most one GPU."""
    largest_cpu = max(n.get("CPU", 0) for n in nodes)
    cpus = min(members * member.cpus, largest_cpu)
    gpus = min(members * member.gpus, 1.0) if member.gpus else 0.0
    return Share(max(cpus, member.cpus), gpus)


def lent_threads(member: Share, running: int, idle: int) -> int:
    """Torch threads for each of `running` CPU members when the pool holds `idle` actors with nothing
    left to train: their CPUs are shared out among the members still training (work-conserving; the
    last members of a phase would otherwise leave cores idle), never below the member's own share."""
    own = max(1, int(member.cpus))
    if member.gpus or running == 0:
        return own
    return max(own, int(member.cpus + idle * member.cpus / running))


def parallel_slots(nodes: Sequence[dict], member: Share) -> int:
    """How many members the cluster runs at once; the rest queue."""
    def fits(node: dict) -> int:
        by_cpu = int(node.get("CPU", 0) // member.cpus)
        by_gpu = int(node.get("GPU", 0) // member.gpus) if member.gpus else by_cpu
        return min(by_cpu, by_gpu)
    return sum(fits(n) for n in nodes)


HEADS_IN_ACTORS_FROM = 4  # members per parallel slot from which members' own heads are fitted in their actors


def heads_in_actors(members: int, slots: int) -> bool:
    """Whether each member's actor fits the member's own head (the diversity figures) when it finishes,
    or the driver fits them all after the last one. In an actor it costs importing scikit-learn once,
    worth it when an actor trains several members (the driver's heads would be the run's tail). With
    few members per slot the driver fits the heads beside the ensemble's own head in about the time
    that takes, and the actors' import would only slow the members (the figures for 40 and for 5
    members on 2 slots: docs/performance.md#figures-behind-design-choices)."""
    return members >= HEADS_IN_ACTORS_FROM * max(1, slots)
