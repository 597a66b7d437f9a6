"""The combiners' fits beside the features (`ensemble.scheduling.beside`) and the driver's one copy of
the images (`session.stored_splits`): the driver never holds the members' features, nor its images twice.

What the fits read of the shared data, and the scores' trimming, are pure; the fits' process and the
store's views need Ray (`slow`, the session's `ray_instance`)."""

import os
import warnings

import numpy as np
import psutil
import pytest
import torch
from threadpoolctl import threadpool_info

from classifier.side_by_side import available_cores
from ensemble.config import DataConfig
from ensemble.data import load_splits
from ensemble.report.entries import CombinerScore
from ensemble.runs.evaluation import RunScores
from ensemble.scheduling.beside import (
    FITS_APART_BYTES,
    SharedImages,
    fits_apart,
    fitted_image_bytes,
    with_overhead,
    without_features,
)
from ensemble.scheduling.session import shared_arrays
from tests.tiny import TINY
from workers.events import Done, Shipment

DIGITS = {"name": "digits", "train_size": 120, "val_size": 30, "test_size": 40}


def _score(features=None) -> CombinerScore:
    return CombinerScore(None, 0.5, np.zeros(3, dtype=np.int64), 1.0, 2.0, features, features)


# --- pure ---

def test_small_data_keeps_the_fits_in_the_driver_and_large_data_gives_them_a_process():
    assert not fits_apart(FITS_APART_BYTES - 1) and fits_apart(FITS_APART_BYTES)
    digits = load_splits(DataConfig(**DIGITS), seed=0)  # 120 training and 40 test images of 8 x 8
    assert fitted_image_bytes(digits) == (120 + 40) * 64 * 4
    few_labels = load_splits(DataConfig(**DIGITS, labels_per_class=2), seed=0)  # only the labelled rows are fitted
    assert fitted_image_bytes(few_labels) == (20 + 40) * 64 * 4
    mnist_48k = (48_000 + 10_000) * 28 * 28 * 4  # the paper's large MNIST setting: apart; mnist-5k's 3,000 + 1,000: not
    assert fits_apart(mnist_48k) and not fits_apart((3_000 + 1_000) * 28 * 28 * 4)


@pytest.mark.parametrize("labels_per_class", [None, 2])
def test_shared_images_are_what_the_splits_give_the_fits(labels_per_class):
    splits = load_splits(DataConfig(**DIGITS, labels_per_class=labels_per_class), seed=0)
    images = SharedImages(shared_arrays(splits), splits.test_y)
    assert torch.equal(images.labelled_x, splits.labelled_x) and torch.equal(images.labelled_y, splits.labelled_y)
    assert torch.equal(images.test_x, splits.test_x) and torch.equal(images.test_y, splits.test_y)
    assert len(images.labelled_y) == (20 if labels_per_class else 120)


def test_scores_come_back_without_the_features_they_were_fitted_on():
    features = [np.ones((4, 2), dtype=np.float32)]
    scores = without_features(RunScores(_score(features), _score(features), [np.zeros(3)]))
    assert scores.ensemble.train_features is None and scores.ensemble.test_features is None
    assert scores.untrained.train_features is None and scores.ensemble.test_accuracy == 0.5
    assert without_features(RunScores(_score(features), None, [])).untrained is None
    assert with_overhead(scores, 0.25).ensemble.feature_seconds == 1.25
    assert with_overhead(_score(), -1.0).feature_seconds == 1.0  # a clock's jitter never lowers it


# --- in Ray (slow) ---

def fit_reporting_where(factories, run_dir, chosen, images, combiner, seed, encoded, who="the ensemble's"):
    """A stand-in for `score_run`: what the fit saw, as the score's predictions (the process, whether each
    member's features are the store's read-only copy, the labels), and a warning, or an error when asked."""
    if who == "fail":
        raise ValueError("the fit's own error")
    warnings.warn(f"{who} head did not converge", RuntimeWarning, stacklevel=2)
    read_only = [not split.flags.writeable for member in encoded.values() for split in member[1].values()]
    blas = max(pool["num_threads"] for pool in threadpool_info())
    seen = np.array([os.getpid(), all(read_only), len(read_only), int(images.labelled_y.sum()), blas, os.nice(0)])
    return RunScores(CombinerScore(None, 1.0, seen, 0.0, 0.0, [np.ones(3)], [np.ones(3)]), None, [])


@pytest.mark.slow
@pytest.mark.parametrize("apart", [True, False])
def test_fits_run_in_another_process_or_the_driver_on_the_stores_features(ray_instance, apart):
    import ray

    from ensemble.scheduling.beside import FitsBeside
    splits = load_splits(DataConfig(**DIGITS), seed=0)
    fits = FitsBeside(ray.put(shared_arrays(splits)), apart)
    # as the actors send them: each member's Done shipment, its features by epoch; the driver holds references
    features = {1: {"train": np.ones((120, 8), np.float32), "test": np.ones((40, 8), np.float32)}}
    shipments = {name: ray.put(Shipment(Done(name, 0.0, None), {}, features))  # type: ignore[arg-type]
                 for name in ("member_00", "member_01")}
    with pytest.warns(RuntimeWarning, match="the ensemble's head did not converge"):
        scores = fits(fit_reporting_where, splits.test_y, shipments, None, None, [], None, 0)
    pid, read_only, arrays, labels, blas, niceness = scores.ensemble.test_predictions.tolist()
    assert (pid != os.getpid()) == apart and read_only and arrays == 4 and labels == int(splits.labelled_y.sum())
    if apart:
        assert blas == available_cores() and niceness == os.nice(0)  # the driver's threads and priority
    assert scores.ensemble.train_features is None and scores.ensemble.test_features is None
    with pytest.raises(ValueError, match="the fit's own error"):
        fits(fit_reporting_where, splits.test_y, shipments, None, None, [], None, 0, who="fail")
    with fits:  # as the driver uses it: the process ends with the `with`, though `fits` is still referenced
        pass
    if apart:
        psutil.Process(pid).wait(timeout=60)  # raises TimeoutExpired if the fits' process outlives the run


@pytest.mark.slow
def test_the_driver_keeps_the_stores_copy_of_the_images(ray_instance):
    import ray

    from ensemble.scheduling.session import share_data, stored_splits
    images, unlabelled = torch.rand(90, 1, 32, 32), torch.rand(40, 1, 32, 32)
    splits = load_splits(DataConfig(train_size=60, val_size=15, test_size=15), 0,
                         dataset=(images, torch.arange(90) % 3), unlabelled=unlabelled)
    data_ref = share_data(splits)  # 520 KiB: in the shared store, not inlined as objects under 100 KiB are
    stored = stored_splits(splits, data_ref)
    for name in ("train_x", "val_x", "test_x", "unlabelled_x"):
        assert torch.equal(getattr(stored, name), getattr(splits, name))
    assert torch.equal(stored.autoencoder_x, splits.autoencoder_x) and stored.labelled_y is splits.labelled_y
    shared = ray.get(data_ref)  # the very memory the actors read, not a copy the driver keeps
    assert stored.train_x.data_ptr() == shared["train_x"].ctypes.data
    assert stored.unlabelled_x.data_ptr() == shared["train_x"][60:].ctypes.data
    assert stored.val_x.data_ptr() == shared["val_x"].ctypes.data


@pytest.mark.slow
def test_a_run_frees_the_drivers_first_copy_of_the_images_once_the_store_holds_them(ray_instance, tmp_path,
                                                                                     monkeypatch):
    """While members train, the driver's images are the object store's alone: nothing (the run directory's
    lock, the event handler) still holds the plan's first copy, which at 48,000 images was 179 MiB more."""
    import gc
    import weakref

    import ensemble
    from ensemble.config import build_config
    from ensemble.job import driver
    first, alive_while_training = {}, {}

    def keeping_a_weak_reference(splits, data_ref):
        first.update({name: weakref.ref(getattr(splits, name)) for name in ("train_x", "val_x", "test_x")})
        return stored_splits(splits, data_ref)

    def checking_then_training(plan, *args):
        gc.collect()
        alive_while_training.update({name: ref() is not None for name, ref in first.items()})
        return train_members(plan, *args)

    stored_splits, train_members = driver.stored_splits, driver.train_members.run
    monkeypatch.setattr(driver, "stored_splits", keeping_a_weak_reference)
    monkeypatch.setattr(driver.train_members, "run", checking_then_training)
    ensemble.run(build_config({}, TINY + [f"output={tmp_path}", "baseline.enabled=false"]), on_event=lambda e: None)
    assert alive_while_training == {"train_x": False, "val_x": False, "test_x": False}
