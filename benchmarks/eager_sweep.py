"""Replay eager rules over a run trained with `eager.rule=none`, to choose the defaults.

Usage:
    ensemble run --name sweep --set eager.rule=none --set train.epochs=15 --set baseline.enabled=false
    python benchmarks/eager_sweep.py runs/sweep

For each rule setting it replays the stop decision on every member's saved history (the
rules are pure functions, so no retraining), then fits the run's combiner on the encoders
each setting would have frozen and prints test accuracy against the member-seconds spent.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ensemble.analysis.select import replay_member, rule_label
from ensemble.config import EagerConfig
from ensemble.runs.saved_run import open_run

SETTINGS = [EagerConfig(rule="plateau", threshold=t) for t in (0.2, 0.1, 0.05, 0.02)] + \
           [EagerConfig(rule="fixed", epoch=k) for k in (1, 3)] + [EagerConfig(rule="none")]


def main(run_dir: Path) -> None:
    saved = open_run(run_dir)
    config = saved.config
    print(f"| rule | mean stop epoch | member-seconds | test accuracy ({config.combiner.kind}) |")
    print("|---|---|---|---|")
    for cfg in SETTINGS:
        members = [replay_member(m, cfg, config.train.epochs) for m in saved.report.members]
        used = [m for m in members if m.selected_epoch is not None]
        score = saved.score([(m.name, m.selected_epoch) for m in used], config.combiner)
        seconds = sum(m.train_seconds for m in members)
        mean_stop = sum(m.epochs_trained for m in members) / len(members)
        print(f"| {rule_label(cfg)} | {mean_stop:.1f} | {seconds:.0f} | {score.test_accuracy:.4f} |", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
