"""RunResult: a finished run's report plus what predict() needs; load() rebuilds it from disk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from classifier.combiner import EnsembleCombiner
from classifier.features import member_features
from classifier.persistence import load_combiner
from ensemble.builders import Autoencoders, member_factories
from ensemble.data import Normalizer
from ensemble.data.sources import as_images
from ensemble.report import RunReport
from ensemble.report.tables import accuracy
from ensemble.runs.evaluation import frozen_member
from ensemble.runs.identity import check_chosen
from ensemble.runs.rundir import read_finished_run
from ensemble.runs.saved_run import selected_checkpoints
from ensemble.storage import download, is_uri
from workers.errors import InputError
from workers.layout import COMBINER, NORMALIZATION, write_atomic
from workers.models import AutoencoderFactory, check_autoencoder


def save_normalizer(run_dir: Path, normalizer: Normalizer) -> None:
    write_atomic(Path(run_dir) / NORMALIZATION, json.dumps(normalizer.to_json()))


class RunResult:
    """A finished run: its report, and the frozen encoders, combiner and pixel scaling that predict
    with it. `ensemble.run` returns one, `ensemble.load` rebuilds one from a run directory.

    Images are taken in the dataset's own pixel scale and layout (N x C x H x W, N x H x W for one
    channel, or N x H x W x C), as arrays or tensors; labels are the dataset's own values.

    Parameters
    ----------
    report : RunReport
        The model behind report.json.
    run_dir : path-like
        The (local) run directory.
    autoencoders : sequence of nn.Module
        The frozen encoders the combiner was fitted on, in `report.ensemble.members_used` order.
    combiner : EnsembleCombiner
        The fitted combiner.
    normalizer : Normalizer
        The pixel scaling fitted on the run's training images.
    stored_at : str, default=None
        The output URI the run directory is mirrored to, if any.

    Attributes
    ----------
    classes : ndarray of shape (n_classes,)
        Each class's label as the dataset gives it: what `predict` returns.

    See Also
    --------
    ensemble.load : rebuild a RunResult from a run directory.

    Examples
    --------
    >>> import ensemble
    >>> result = ensemble.run(ensemble.EnsembleConfig(members=3))           # doctest: +SKIP
    >>> result.report.ensemble.test_accuracy, result.report.speedup         # doctest: +SKIP
    (0.95..., 1.4...)
    >>> result.predict(images)                                               # doctest: +SKIP
    array([7, 2, 1, ...])
    """

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
        """The frozen encoders' features side by side (N x sum of the members' widths), float32: what
        the combiner sees, before its own scaling."""
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
        """Images in any layout `dataset=` accepts (N x H x W, N x C x H x W, N x H x W x C; arrays,
        tensors or nested lists), checked against the run's image shape, then encoded."""
        expected = tuple(self.report.dataset.image_shape)
        given = tuple(images.shape) if hasattr(images, "shape") else np.shape(images)
        images = as_images(images, "predict()")
        if tuple(images.shape[1:]) != expected or len(images) == 0:
            raise InputError(f"predict(): images must be N x {' x '.join(map(str, expected))} (channels first or "
                             f"last; N x H x W for one channel) with N >= 1; got shape {given}.")
        return member_features(self.autoencoders, self.normalizer(images))

    def __repr__(self) -> str:
        e = self.report.ensemble
        return (f"RunResult({str(self.run_dir)!r}, ensemble accuracy {accuracy(e.test_accuracy)}, "
                f"speedup {self.report.speedup})")


def load(run_dir: str | Path, autoencoder: Autoencoders = None, trust_code: bool = False) -> RunResult:
    """Rebuild a finished run from its directory, as `predict` needs it.

    Parameters
    ----------
    run_dir : str or path-like
        A run directory, or a URI as `--resume` takes it (s3://, gs://; downloaded into a local copy
        first).
    autoencoder : callable or list of callables, default=None
        The members' autoencoder factory, or one per member for members that differ. None: the
        class(es) the run recorded (`model.autoencoder`), or the built-in CAE of each member's
        `model.*`; pass it when a class cannot be imported here (one defined in a notebook or in a
        script run as a program) or to override it. Each member is rebuilt with its own architecture.
    trust_code : bool, default=False
        Import the module of the class the run recorded even if this process has not imported it yet.
        A run directory may come from elsewhere, and importing a module runs its code; without this,
        such a run is an InputError naming the module.

    Returns
    -------
    RunResult
        The run's report, frozen encoders, combiner and pixel scaling.

    Raises
    ------
    InputError
        The directory is missing, unfinished, a selection, or damaged; or the class cannot be built.

    Examples
    --------
    >>> import ensemble
    >>> again = ensemble.load("runs/run-20260101-120000")                 # doctest: +SKIP
    >>> again.score(images, labels)                                        # doctest: +SKIP
    0.95...
    """
    if not is_uri(run_dir):
        return _load(Path(run_dir), autoencoder, trust_code)
    local = download(str(run_dir))
    try:
        return _load(local, autoencoder, trust_code, stored_at=str(run_dir))
    except BaseException:
        shutil.rmtree(local.parent, ignore_errors=True)  # a failed load leaves nothing behind
        raise


def checked_factories(config, shape, autoencoder, trust_code: bool = False) -> list[AutoencoderFactory]:
    """Each member's factory (its own architecture when members differ), each built once on a blank
    batch: a class that cannot be built fails here, by name."""
    factories = member_factories(config, shape, autoencoder, trust_code)
    for factory in {id(f): f for f in factories}.values():
        try:
            check_autoencoder(factory, torch.zeros(2, *shape))
        except InputError as err:
            if autoencoder is not None or config.model.autoencoder is None:
                raise
            raise InputError(f"{err} The run was trained with model.autoencoder={config.model.autoencoder}; pass "
                             "the factory it was trained with: ensemble.load(run_dir, autoencoder=...).") from None
    return factories


def _load(run_dir: Path, autoencoder: Autoencoders, trust_code: bool, stored_at: Optional[str] = None) -> RunResult:
    report, config = read_finished_run(run_dir)
    factories = checked_factories(config, report.dataset.image_shape, autoencoder, trust_code)
    members = {m.index: m for m in report.members}  # names and members_used checked by read_finished_run
    chosen = selected_checkpoints([members[i] for i in report.ensemble.members_used])
    check_chosen(run_dir, chosen, report.run_id)  # each is the checkpoint of its place, of this run
    autoencoders = [frozen_member(factories[i], run_dir, members[i]) for i in report.ensemble.members_used]
    try:
        text = (run_dir / NORMALIZATION).read_text()
    except OSError as err:
        raise InputError(f"{str(run_dir / NORMALIZATION)!r} is missing or unreadable ({type(err).__name__}: {err}); "
                         "the run directory is incomplete.") from None
    try:
        normalizer = Normalizer.from_json(json.loads(text))
    except ValueError as err:  # bad JSON, or a value no scaling can have (a scale of 0 or NaN)
        raise InputError(f"{str(run_dir / NORMALIZATION)!r} is not the pixel scaling a run writes: {err}. It was "
                         "damaged or edited; restore it from the run.") from None
    return RunResult(report, run_dir, autoencoders, load_combiner(run_dir / COMBINER), normalizer, stored_at)
