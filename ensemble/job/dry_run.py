"""`ensemble run --dry-run`: the resolved config and what the run would do, without starting Ray.

The plan is a pure function of the config and the nodes it would run on (tested without Ray):
how many members train at once and how many queue, each one's resources, the baseline's share,
and the phases in order. The nodes are this machine's CPUs and GPUs; on a cluster (`--address`
or RAY_ADDRESS) they are only known once connected, which a dry run does not do, so it says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import yaml

from ensemble.config import EnsembleConfig, recorded_config
from ensemble.scheduling.placement import Share, baseline_share, infeasible_reason, parallel_slots
from workers.errors import InputError


def local_nodes() -> list[dict]:
    """This machine as Ray would see it: its CPUs, and its GPUs when torch sees CUDA (without
    initialising CUDA when no driver is installed)."""
    gpus = 0
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset") not in ("", "-1"):
        import torch
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [{"CPU": float(os.cpu_count() or 1), "GPU": float(gpus)}]


def check_without_ray(config: EnsembleConfig, nodes: Sequence[dict], address: Optional[str]) -> None:
    """What a dry run checks, each an InputError as the run itself would give: the data loads (its
    files exist and parse, its images fit data.max_pixels and memory, the split sizes fit it), and,
    on this machine (no --address), at least one member can be placed."""
    from ensemble.data.splits import load_splits  # imports torch: only for the dry run itself
    run_dir = Path(config.output) / config.name if config.name else None
    load_splits(config.data, config.seed, run_dir=run_dir)
    problem = None if address else infeasible_reason(nodes, Share(config.resources.cpus_per_member,
                                                                  config.resources.gpus_per_member), "each member")
    if problem:
        raise InputError(f"the run could never start: {problem.replace('the Ray cluster', 'this machine')}")


def rule_text(config: EnsembleConfig) -> str:
    """The eager rule in a few words, with its own parameters only."""
    eager = config.eager
    return {"plateau": f"plateau (gain < {eager.threshold:g}, after {eager.min_epochs} epoch(s) at least)",
            "fixed": f"fixed (epoch {eager.epoch})", "budget": f"budget ({eager.budget_seconds:g} s a member)",
            "none": "none (every epoch)"}[eager.rule]


def plan_lines(config: EnsembleConfig, nodes: Sequence[dict], address: Optional[str]) -> list[str]:
    """What `ensemble run` would do with `config` on `nodes`, one line each."""
    share = Share(config.resources.cpus_per_member, config.resources.gpus_per_member)
    slots = min(config.members, parallel_slots(nodes, share))
    where = (f"the Ray cluster at {address} (its nodes are known once connected; shown for this machine: "
             if address else "a local Ray instance (")
    node = nodes[0] if nodes else {}
    lines = [f"Would run on {where}{node.get('CPU', 0):g} CPU, {node.get('GPU', 0):g} GPU).",
             f"Run directory: {config.output.rstrip('/')}/{config.name or '<time stamp>'}",
             f"Members: {config.members}, {share.describe()} each, {config.resources.members_per_actor} per actor; "
             f"{slots} train at once" + (f", {config.members - slots} queue" if slots < config.members else "") + "."]
    problem = infeasible_reason(nodes, share, "each member")
    if problem:
        lines.append(f"Note: {problem}")
    lines.append("Phases:")
    lines.append(f"  1. members: up to {config.train.epochs} epochs each, eager rule {rule_text(config)}; "
                 f"data {config.data.name}, train {config.data.train_size}, validation {config.data.val_size}")
    if config.baseline.enabled:
        base = baseline_share(config.members, share, nodes) if nodes else share
        width = config.baseline.width if config.baseline.width is not None else config.members ** 0.5
        wide = (f"its own model {config.baseline.autoencoder}" if config.baseline.autoencoder else
                "one model as wide as the members' total parameters" if config.baseline.width is None and
                (config.model.overrides or isinstance(config.model.autoencoder, list)) else
                f"one model {width:.3g}x as wide")
        lines.append(f"  2. baseline: {wide}, {base.describe()}, up to "
                     f"{config.baseline.max_epochs} epochs (patience {config.baseline.patience})")
    else:
        lines.append("  2. baseline: skipped (baseline.enabled=false)")
    lines.append(f"  3. combiner: {config.combiner.kind} with a {config.combiner.head} head on the frozen encoders")
    lines.append("  4. report: report.json, report.md and plots in the run directory")
    return lines


def dry_run_text(config: EnsembleConfig, nodes: Sequence[dict], address: Optional[str]) -> str:
    """The resolved config (YAML, as `--config` takes it back) and the plan."""
    resolved = yaml.safe_dump(recorded_config(config), sort_keys=False).rstrip()  # the keys that would run
    return ("# Resolved config\n" + resolved + "\n\n# Plan (dry run: Ray was not started)\n"
            + "\n".join(plan_lines(config, nodes, address)))
