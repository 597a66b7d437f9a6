"""Step 3, train the baseline: the monolithic autoencoder alone, after the members, with the
ensemble's total resources (one node's at most), under conventional early stopping."""

from __future__ import annotations

import time
from pathlib import Path

import ray

from ensemble.builders import baseline_rule, member_seed, train_settings
from ensemble.job.prepare import Plan
from ensemble.job.train_members import Phases
from ensemble.scheduling.pool import MemberPool
from workers.actor import MemberSpec
from workers.encoding import EncodeRequest
from workers.layout import BASELINE, member_directory


def run(plan: Plan, run_dir: Path, data_ref: ray.ObjectRef, show, phases: Phases) -> None:
    """The monolithic baseline alone, with the ensemble's total resources (one node's at most)."""
    config = plan.config
    if not config.baseline.enabled:
        return
    assert plan.baseline_factory is not None  # built whenever the baseline is enabled
    spec = MemberSpec(BASELINE, member_directory(run_dir, BASELINE), plan.baseline_factory,
                      train_settings(config, member_seed(config.seed, -1), plan.run_id), baseline_rule(config.baseline),
                      encoding=EncodeRequest(reference=False))
    started = time.perf_counter()
    pool = MemberPool(phases.baseline_share, data_ref, show, config.resources.max_restarts)
    phases.baseline = pool.train([spec])[BASELINE]
    phases.baseline_wall = time.perf_counter() - started
