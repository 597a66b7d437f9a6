"""A finished run read back for analysis: report, config, data splits, checkpoint scoring.

`ensemble select`, `ensemble curves` and benchmarks/eager_sweep.py work from here and never
train: everything comes from the run directory and the data its saved config names (the same
seeded splits as the run). Bad input is an InputError raised before anything is written.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from ensemble.builders import Autoencoders, baseline_factory, cae_factory, member_factories
from ensemble.config import CombinerConfig, EnsembleConfig
from ensemble.data import Splits, load_splits
from ensemble.report import MemberReport, RunReport
from ensemble.report.entries import CombinerScore
from ensemble.runs.evaluation import Chosen, recorded_layouts, score_checkpoints
from ensemble.runs.identity import check_chosen
from ensemble.runs.rundir import read_finished_run
from workers.errors import InputError
from workers.layout import MANIFEST, checkpoint_dir
from workers.models import AutoencoderFactory


@dataclass
class SavedRun:
    run_dir: Path
    report: RunReport
    config: EnsembleConfig
    member_factories: list[AutoencoderFactory]  # one per member, each its own architecture
    baseline_autoencoder: Optional[AutoencoderFactory] = None  # the baseline's own model, when passed
    dataset: object = None  # the custom dataset a Python-API run was given, if any
    trust_code: bool = False  # import a baseline.autoencoder the run recorded (see workers.models.trusts)
    _splits: Optional[Splits] = field(default=None, repr=False)

    def baseline_factory(self) -> AutoencoderFactory:
        """The baseline's model as the run built it: widened to the width the report recorded."""
        base, shape = self.report.baseline, self.report.dataset.image_shape
        if base is not None and base.architecture is None:  # a report from when the baseline was always the CAE
            return dataclasses.replace(cae_factory(self.config, shape), width=base.width)
        config = self.config.model_copy(update={"baseline": self.config.baseline.model_copy(
            update={"width": base.width if base is not None else None})})
        return baseline_factory(config, shape, self.member_factories, self.baseline_autoencoder, self.trust_code)

    def splits(self) -> Splits:
        """The run's splits, loaded once (seconds for mnist-5k) and checked against the report."""
        if self._splits is None:
            splits = load_splits(self.config.data, self.config.seed, self.dataset, run_dir=self.run_dir)
            saved = self.report.dataset
            found = (len(splits.train_y), len(splits.val_y), len(splits.test_y), splits.num_classes)
            if found != (saved.train, saved.val, saved.test, saved.num_classes):
                raise InputError(f"the data no longer matches run {self.report.name!r}: it had train/val/test/classes "
                                 f"{(saved.train, saved.val, saved.test, saved.num_classes)}, the data now gives "
                                 f"{found}. Restore the run's data (data.root) to analyse it.")
            self._splits = splits
        return self._splits

    def require_checkpoints(self, chosen: Chosen) -> None:
        missing = [f"{name} epoch {epoch}" for name, epoch in chosen
                   if not (checkpoint_dir(self.run_dir / name, epoch) / MANIFEST).is_file()]
        if missing:
            raise InputError(f"run {str(self.run_dir)!r} lacks the checkpoint(s) for {', '.join(missing)}; "
                             "choose epochs the run saved (see its report.md).")
        check_chosen(self.run_dir, chosen, self.report.run_id)

    def factories(self, chosen: Chosen) -> dict[str, AutoencoderFactory]:
        """What builds each chosen checkpoint: the baseline's factory for the baseline, each member's own
        (members may differ)."""
        base, index = self.report.baseline, {m.name: m.index for m in self.report.members}
        return {name: self.baseline_factory() if base is not None and name == base.name
                else self.member_factories[index[name]] for name, _ in chosen}

    def score(self, chosen: Chosen, combiner: CombinerConfig) -> CombinerScore:
        """Freeze the chosen checkpoints (members' or the baseline's) and fit `combiner` on them."""
        check_chosen(self.run_dir, chosen, self.report.run_id)
        return score_checkpoints(self.factories(chosen), self.run_dir, chosen, self.splits(), combiner,
                                 self.config.seed, layouts=self.layouts())

    def layouts(self) -> dict[str, str]:
        """The memory format each member's and the baseline's checkpoints were trained and encoded in."""
        return recorded_layouts([*self.report.members, *([self.report.baseline] if self.report.baseline else [])])


def open_run(run_dir: str | Path, autoencoder: Autoencoders = None, dataset=None, trust_code: bool = False,
             baseline_autoencoder: Optional[AutoencoderFactory] = None) -> SavedRun:
    """A finished run directory, validated; pass the `autoencoder` and `dataset` a custom run used
    when they cannot be rebuilt here (a run on arrays keeps its splits unless data.save_splits=false),
    or `trust_code=True` to import the classes the run recorded (see `workers.models.trusts`)."""
    run_dir = Path(run_dir)
    report, config = read_finished_run(run_dir)
    if report.dataset.test == 0:
        raise InputError(f"run {report.name!r} held out no test split (data.test_size=0), so there is no test "
                         "accuracy to compare checkpoints by.")
    if report.dataset.source.startswith("custom dataset") and dataset is None and report.dataset.name is None:
        raise InputError(f"run {report.name!r} was trained on a custom dataset, which the run directory does not "
                         "hold; analyse it from Python and pass the same dataset (and autoencoder).")
    factories = member_factories(config, report.dataset.image_shape, autoencoder, trust_code)
    return SavedRun(run_dir, report, config, factories, baseline_autoencoder, dataset, trust_code)


def last_finite_epoch(member: MemberReport) -> int:
    """The newest epoch whose losses were finite (0: none, only the untrained checkpoint)."""
    return max((h.epoch for h in member.history if h.train_loss is not None and h.val_loss is not None), default=0)


def used_members(report: RunReport) -> list[MemberReport]:
    return [m for m in report.members if m.index in report.ensemble.members_used]


def selected_checkpoints(members: Sequence[MemberReport]) -> list[tuple[str, int]]:
    """(member name, selected epoch) of members an ensemble uses: each of them has a selected checkpoint."""
    chosen = [(m.name, m.selected_epoch) for m in members if m.selected_epoch is not None]
    assert len(chosen) == len(members), "a member in use without a selected checkpoint"
    return chosen


def config_json(config: EnsembleConfig) -> dict:
    return json.loads(config.model_dump_json())
