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

from ensemble.config import EagerConfig, EnsembleConfig
from ensemble.data import load_splits
from ensemble.eager import member_fixed_epoch, member_should_stop, select_epoch
from ensemble.evaluation import fit_and_score, load_autoencoder
from ensemble.report import RunReport
from workers.history import EpochRecord
from workers.models import CAEFactory

SETTINGS = [EagerConfig(rule="plateau", threshold=t) for t in (0.2, 0.1, 0.05, 0.02)] + \
           [EagerConfig(rule="fixed", epoch=k) for k in (1, 3)] + [EagerConfig(rule="none")]


def replay(cfg: EagerConfig, history: list[EpochRecord]) -> list[EpochRecord]:
    """The prefix of `history` a member would have trained under `cfg`."""
    for n in range(1, len(history) + 1):
        if member_should_stop(cfg, len(history), history[:n]).stop:
            return history[:n]
    return history


def main(run_dir: Path) -> None:
    report = RunReport.read(run_dir)
    config = EnsembleConfig.model_validate(report.config)
    splits = load_splits(config.data, config.seed)
    factory = CAEFactory(splits.image_shape, config.model.channels, config.model.kernel_size,
                         config.model.activation, config.model.pooling)
    print(f"| rule | mean stop epoch | member-seconds | test accuracy ({config.combiner.kind}) |")
    print("|---|---|---|---|")
    for cfg in SETTINGS:
        chosen, seconds = [], 0.0
        for member in report.members:
            history = [EpochRecord.from_json(h.model_dump()) for h in member.history]
            trained = replay(cfg, history)
            seconds += sum(r.seconds for r in trained)
            chosen.append((member.name, select_epoch(trained, member_fixed_epoch(cfg)).epoch, len(trained)))
        encoders = [load_autoencoder(factory, run_dir / name, epoch) for name, epoch, _ in chosen]
        score = fit_and_score(encoders, splits.train_x, splits.train_y, splits.test_x, splits.test_y,
                              config.combiner.kind, config.combiner.head, config.seed)
        label = cfg.rule + (f" {cfg.threshold:g}" if cfg.rule == "plateau" else f" {cfg.epoch}" if cfg.rule == "fixed" else "")
        mean_stop = sum(n for _, _, n in chosen) / len(chosen)
        print(f"| {label} | {mean_stop:.1f} | {seconds:.0f} | {score.test_accuracy:.4f} |", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
