"""The combiners' fits in one Ray task on the driver's machine, beside the members' features.

Each member's actor sends its features with its `Done` (`workers.encoding`). They stay in the object
store: the pool keeps a reference to that shipment, never a copy (`MemberRecord.shipment`). The fits
(`ensemble.runs.evaluation`: the ensemble's, the untrained reference's, each member's own head; the
baseline's) run in a task that reads the features and the shared images zero-copy; only the fitted
combiners, the test predictions and the timings come back. So the driver never holds the features
(each member's as large as its training images, per epoch encoded) nor the fits' scaled copies, and
its memory grows with the data alone (docs/performance.md, 2026-12-06, issue 34).

Small data keeps the fits in the driver (`fits_apart`): there the process's start (a fresh Python importing
torch and scikit-learn) costs more CPU than the fits themselves, and the features are a few megabytes.

The task asks for no CPUs, as the driver's own fits did not, so actors a session keeps for its next
run never leave it waiting, and it runs on the driver's node, where the run directory is: a checkpoint
no actor encoded (an older run's, a member whose actor could not) is encoded there, as the driver did.
The fits are the same calls with the same threads (`classifier.side_by_side`), so the same numbers.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Optional, TypeVar, Union, overload

import numpy as np
import ray
import torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from classifier.side_by_side import available_cores
from ensemble.data import Splits
from ensemble.report.entries import CombinerScore
from ensemble.runs.evaluation import RunScores
from ensemble.scheduling.session import driver_node_id

Scores = TypeVar("Scores", CombinerScore, RunScores)


@dataclass(frozen=True)
class SharedImages:
    """What `ensemble.runs.evaluation` reads of a `Splits`, from the data the members shared
    (`session.share_data`) and the test labels; each array made when first asked for (the images only
    for a checkpoint no actor encoded)."""
    data: Mapping[str, np.ndarray]
    test_y: torch.Tensor

    @property
    def labelled_x(self) -> torch.Tensor:  # the rows the combiner fits on, as `Splits.labelled_x` has them
        return torch.from_numpy(self.data["train_x"][self.data["head_rows"]])

    @property
    def labelled_y(self) -> torch.Tensor:
        return torch.from_numpy(np.array(self.data["head_y"]))  # the store's arrays are read-only

    @property
    def test_x(self) -> torch.Tensor:
        return torch.from_numpy(np.array(self.data["test_x"]))


@overload
def without_features(scores: RunScores) -> RunScores: ...


@overload
def without_features(scores: CombinerScore) -> CombinerScore: ...


def without_features(scores: Union[RunScores, CombinerScore]) -> Union[RunScores, CombinerScore]:
    """The scores without the features they were fitted on: the driver needs only the combiners and figures."""
    if isinstance(scores, RunScores):
        return replace(scores, ensemble=without_features(scores.ensemble),
                       untrained=None if scores.untrained is None else without_features(scores.untrained))
    return replace(scores, train_features=None, test_features=None)


# Above this many bytes of images fitted on (their float32 training rows and test rows) the fits get a process of
# their own: about 10,700 MNIST digits, where the features the driver would hold pass tens of megabytes. Below it,
# the process's start (5 CPU-s for a tiny run's fits of well under one) is the larger cost (docs/performance.md).
FITS_APART_BYTES = 32 * 2**20


def fitted_image_bytes(splits: Splits) -> int:
    """The bytes of the images the combiners fit and score on: the labelled training rows and the test rows."""
    rows = len(splits.train_x) if splits.labelled is None else len(splits.labelled)
    return (rows + len(splits.test_x)) * splits.train_x.shape[1:].numel() * splits.train_x.element_size()


def fits_apart(image_bytes: int) -> bool:
    """Whether the fits run in a process of their own beside the features, or in the driver."""
    return image_bytes >= FITS_APART_BYTES


def fit_with_warnings(fit: Callable, data: Mapping[str, np.ndarray], test_y: np.ndarray, shipments: dict,
                      args: tuple, keywords: dict):
    """`fit(*args[:3], images, *args[3:], encoded, **keywords)` on the store's images and features; returns its
    scores without their features, the warnings it raised (re-raised where the user sees them) and its seconds."""
    started = time.perf_counter()
    encoded = {name: ray.get(shipment).features for name, shipment in shipments.items()}  # zero-copy views
    images = SharedImages(data, torch.from_numpy(np.array(test_y)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = fit(*args[:3], images, *args[3:], encoded, **keywords)
    del encoded
    return without_features(scores), [(w.category, str(w.message)) for w in caught], \
        time.perf_counter() - started


@ray.remote(num_cpus=0, max_restarts=0)
class _Fitter:
    """The process the fits run in, started with the run so its imports (torch, scikit-learn: seconds on a
    loaded machine) overlap the members' training instead of adding to the tail."""

    def __init__(self):
        import ensemble.runs.evaluation  # noqa: F401 (the imports are the point)

    def fit(self, fit: Callable, data: dict, test_y: np.ndarray, shipments: dict, args: tuple, keywords: dict):
        """`fit_with_warnings` in this process."""
        return fit_with_warnings(fit, data, test_y, shipments, args, keywords)


class FitsBeside:
    """The run's combiner fits, each in one process on the driver's node started when this is made (see the
    module docstring), or in the driver when not `apart` (`fits_apart`); `data_ref`: what
    `session.share_data` put. Used as a context manager: the process ends when the `with` does, even while a
    traceback (a notebook's last error, a test's `raises`) still holds this object; otherwise it would stay,
    with its memory, until the Ray session ends."""

    def __init__(self, data_ref: ray.ObjectRef, apart: bool = True):
        self._data_ref = data_ref
        self._fitter = self._start() if apart else None

    @staticmethod
    def _start() -> "ray.actor.ActorHandle":
        # As in the driver: Ray gives a process without CPUs one OpenMP/BLAS thread, but the fits share the
        # cores out themselves (`side_by_side`); and it starts its workers at niceness 15, where on a shared
        # machine the fits took 1.45x their time in the driver (docs/performance.md): Ray's own job manager
        # keeps a driver's priority the same way
        driver_like = {"OMP_NUM_THREADS": str(available_cores()), "RAY_worker_niceness": "0"}
        return _Fitter.options(  # type: ignore[attr-defined]  # @ray.remote adds it
            scheduling_strategy=NodeAffinitySchedulingStrategy(driver_node_id(), soft=False),
            runtime_env={"env_vars": driver_like}).remote()

    def __enter__(self) -> "FitsBeside":
        return self

    def __exit__(self, *exc_info) -> None:
        if self._fitter is None:
            return
        try:
            ray.kill(self._fitter, no_restart=True)
        except Exception:  # noqa: BLE001 (Ray already gone or the actor already dead: nothing left to end)
            pass

    def __call__(self, fit: Callable[..., Scores], test_y: torch.Tensor, shipments: Mapping[str, ray.ObjectRef],
                 *args, **keywords) -> Scores:
        """`fit` (`score_run` or `score_checkpoints`, with `args` as they take them, less the splits and the
        features) beside the features: `shipments` are the members' `Done` shipments by name. What the call
        costs beyond the fit (the features' reading, a process still importing) is counted in the features'
        seconds of the scores, as the user waits for it. An error in the fit is raised here as itself."""
        started = time.perf_counter()
        if self._fitter is None:
            scores, caught, inside = fit_with_warnings(fit, ray.get(self._data_ref), test_y.numpy(), dict(shipments),
                                                       args, keywords)
        else:
            call = self._fitter.fit.remote(fit, self._data_ref, test_y.numpy(), dict(shipments), args, keywords)
            try:
                scores, caught, inside = ray.get(call)
            except ray.exceptions.RayTaskError as error:
                cause: Optional[BaseException] = getattr(error, "cause", None)
                raise (cause if cause is not None else error) from None
        for category, message in caught:
            warnings.warn(message, category, stacklevel=2)
        return with_overhead(scores, time.perf_counter() - started - inside)


@overload
def with_overhead(scores: RunScores, seconds: float) -> RunScores: ...


@overload
def with_overhead(scores: CombinerScore, seconds: float) -> CombinerScore: ...


def with_overhead(scores: Union[RunScores, CombinerScore], seconds: float) -> Union[RunScores, CombinerScore]:
    """`scores` with `seconds` added to the ensemble's (or the one score's) feature seconds."""
    if isinstance(scores, RunScores):
        return replace(scores, ensemble=with_overhead(scores.ensemble, seconds))
    return replace(scores, feature_seconds=scores.feature_seconds + max(0.0, seconds))
