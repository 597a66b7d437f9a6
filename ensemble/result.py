"""RunResult: a finished run's report plus what predict() needs; load() rebuilds it from disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from classifier.combiner import EnsembleCombiner
from classifier.features import member_features
from classifier.persistence import load_combiner
from ensemble.builders import member_factory
from ensemble.config import EnsembleConfig
from ensemble.data import Normalizer
from ensemble.job.evaluation import load_autoencoder
from ensemble.report import RunReport
from ensemble.report.tables import accuracy
from workers.errors import InputError
from workers.layout import COMBINER, NORMALIZATION, REPORT_JSON, write_atomic
from workers.models import AutoencoderFactory


def save_normalizer(run_dir: Path, normalizer: Normalizer) -> None:
    write_atomic(Path(run_dir) / NORMALIZATION, json.dumps(normalizer.to_json()))


class RunResult:
    def __init__(self, report: RunReport, run_dir: Path, autoencoders: Sequence[nn.Module],
                 combiner: EnsembleCombiner, normalizer: Normalizer, stored_at: Optional[str] = None):
        self.report = report
        self.run_dir = Path(run_dir)
        self.stored_at = stored_at  # the output URI the run directory was mirrored to, if any
        self.autoencoders = list(autoencoders)
        self.combiner = combiner
        self.normalizer = normalizer

    @property
    def classes(self) -> np.ndarray:
        """Each class's label as the dataset gives it (class i first): what `predict` returns."""
        d = self.report.dataset
        return np.asarray(d.labels if d.labels else range(d.num_classes))

    def transform(self, images) -> np.ndarray:
        """The frozen encoders' features side by side (N x sum of the members' widths), float32, for
        images in the dataset's own pixel scale: N x C x H x W, or N x H x W for one channel."""
        return np.hstack(self._member_features(images))

    def predict_proba(self, images) -> np.ndarray:
        """N x K class probabilities, columns in the order of `classes`."""
        combiner = self.combiner
        probabilities = combiner.predict_proba(np.hstack(self._member_features(images)))
        full = np.zeros((len(probabilities), len(self.classes)), dtype=probabilities.dtype)
        full[:, combiner.classes_.astype(int)] = probabilities  # a class the head never saw keeps 0
        return full

    def predict(self, images) -> np.ndarray:
        """Labels (as the dataset gives them) for images in the dataset's own pixel scale (for example
        0..255 for MNIST): the run's normalisation is applied here."""
        indices = self.combiner.predict_members(self._member_features(images))
        return self.classes[indices.astype(int)]

    def score(self, images, labels) -> float:
        """Accuracy of `predict(images)` against `labels` (label values as the dataset gives them)."""
        labels = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
        predicted = self.predict(images)
        if labels.shape != predicted.shape:
            raise InputError(f"score() takes one label per image: {len(predicted)} images, labels of shape "
                             f"{labels.shape}.")
        return float(np.mean(predicted == labels))

    def _member_features(self, images) -> list[np.ndarray]:
        images = torch.as_tensor(np.asarray(images) if isinstance(images, (list, tuple)) else images)
        expected = tuple(self.report.dataset.image_shape)
        if images.ndim == 3 and expected[0] == 1:
            images = images.unsqueeze(1)  # N x H x W: one channel, as datasets accept it
        if images.ndim != 4 or tuple(images.shape[1:]) != expected or len(images) == 0:
            raise InputError(f"images must be N x {' x '.join(map(str, expected))}"
                             + (f" (or N x {expected[1]} x {expected[2]})" if expected[0] == 1 else "")
                             + f" with N >= 1; got shape {tuple(images.shape)}.")
        return member_features(self.autoencoders, self.normalizer(images))

    def __repr__(self) -> str:
        e = self.report.ensemble
        return (f"RunResult({str(self.run_dir)!r}, ensemble accuracy {accuracy(e.test_accuracy)}, "
                f"speedup {self.report.speedup})")


def load(run_dir: str | Path, autoencoder: Optional[AutoencoderFactory] = None) -> RunResult:
    """Rebuild a finished run from its directory; pass the same `autoencoder` factory a custom run used."""
    run_dir = Path(run_dir)
    if not (run_dir / REPORT_JSON).is_file():
        raise InputError(f"{str(run_dir)!r} is not a finished run directory (no {REPORT_JSON}).")
    report = RunReport.read(run_dir)
    config = EnsembleConfig.model_validate(report.config)
    factory = autoencoder or member_factory(config, report.dataset.image_shape)
    members = {m.index: m for m in report.members}
    autoencoders = [load_autoencoder(factory, run_dir / members[i].name, members[i].selected_epoch)
                    for i in report.ensemble.members_used]
    normalizer = Normalizer.from_json(json.loads((run_dir / NORMALIZATION).read_text()))
    return RunResult(report, run_dir, autoencoders, load_combiner(run_dir / COMBINER), normalizer)
