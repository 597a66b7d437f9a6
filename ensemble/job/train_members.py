"""Step 2, train the members: every member in parallel on one `MemberPool`; Ray queues what does
not fit. What the training phases leave (each member's record, wall-clocks, the baseline's share
and the slots the members had) is a `Phases`, which step 3 completes with the baseline."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import ray

from ensemble.builders import member_encoding, member_rule, member_seed, train_settings
from ensemble.job.prepare import Plan
from ensemble.scheduling.placement import Share, baseline_share, heads_in_actors, parallel_slots
from ensemble.scheduling.pool import MemberPool
from ensemble.scheduling.records import MemberRecord
from ensemble.scheduling.session import alive_node_resources
from workers.actor import MemberSpec
from workers.layout import member_directory, member_name


@dataclass
class Phases:
    """What the training phases left: each member's run and the baseline's, with wall-clocks."""
    members: dict[str, MemberRecord]
    members_wall: float
    baseline: Optional[MemberRecord]
    baseline_wall: float
    baseline_share: Share
    slots: int



def hands_over(baseline: bool, member: Share) -> bool:
    """Whether the members' idle actors stay for the baseline, which trains on a group of them
    (`warm_actors.take_hosts`): on CPUs only (idle GPU actors end at once, freeing their memory)."""
    return baseline and member.gpus == 0


def run(plan: Plan, run_dir: Path, data_ref: ray.ObjectRef, show, nodes: list[dict]) -> Phases:
    """Every member in parallel; Ray queues what does not fit."""
    config = plan.config
    own_heads = heads_in_actors(config.members, parallel_slots(nodes, plan.member_share))
    encoding = member_encoding(config.eager, len(plan.splits.test_y) > 0, config.combiner if own_heads else None,
                               config.seed)
    specs = [MemberSpec(member_name(i), member_directory(run_dir, member_name(i)), plan.member_factories[i],
                        train_settings(config, member_seed(config.seed, i), plan.run_id),
                        member_rule(config.eager, config.train.epochs),
                        member_seed(config.seed, i) if config.data.bootstrap else None, encoding)
             for i in range(config.members)]
    started = time.perf_counter()
    runs = MemberPool(plan.member_share, data_ref, show, config.resources.max_restarts,
                      config.resources.lend_idle_cpus, plan.members_per_actor,
                      hand_over=hands_over(config.baseline.enabled, plan.member_share)).train(specs)
    wall = time.perf_counter() - started
    # the nodes now: an autoscaler may have added some while the members waited (scale from zero)
    now = alive_node_resources() or nodes
    slots = max(parallel_slots(nodes, plan.member_share), parallel_slots(now, plan.member_share))
    return Phases(runs, wall, None, 0.0, baseline_share(config.members, plan.member_share, now),
                  min(config.members, slots))
