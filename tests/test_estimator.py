"""EagerEnsembleClassifier: a scikit-learn estimator over the eager ensemble (fit trains on Ray)."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import parametrize_with_checks

from ensemble import EagerEnsembleClassifier, InputError
from ensemble.estimator import temporary_run_dir
from workers.layout import PLOTS

# Small enough to fit in seconds: 2 members, 1 epoch, one conv stage (2x2 images still pool once).
TINY = dict(members=2, epochs=1, eager_rule="none", settings={"model.channels": [4]})


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)  # 8x8 digits, flattened: 64 columns per row
    return X[:400], y[:400]


# --- parameters, without training ---

def test_clone_and_params_round_trip():
    clf = EagerEnsembleClassifier(members=3, settings={"train.lr": 0.01})
    copy = clone(clf)
    assert copy is not clf and copy.get_params() == clf.get_params()
    assert copy.set_params(members=4).members == 4 and clf.members == 3
    assert "members=3" in repr(clf)


@pytest.mark.parametrize("params, message", [
    ({"members": 0}, r"parameter members has value 0"),
    ({"eager_rule": "sometimes"}, r"parameter eager_rule has value 'sometimes'.*'plateau', 'fixed'"),
    ({"val_size": 1.5}, r"parameter val_size has value 1.5: .*strictly between 0 and 1"),
    ({"combiner": "stacking"}, r"parameter combiner"),
    ({"settings": {"train.lrr": 1}}, r"unknown settings key 'train.lrr'"),
    ({"settings": {"members": 3}}, r"settings may not set members: .*parameters: members for members"),
    ({"settings": {"data.test_size": 0.2}}, r"settings may not set data.test_size"),
    ({"settings": [1]}, r"settings must be a dict"),
    ({"random_state": "seed"}, r"random_state must be an int"),
    ({"image_shape": (1, 4, 4)}, r"image_shape=\(1, 4, 4\) must be \(C, H, W\).*= 64"),
])
def test_bad_parameters_are_input_errors_before_anything_runs(digits, tmp_path, params, message):
    X, y = digits
    clf = EagerEnsembleClassifier(**{**TINY, **params, "output": str(tmp_path / "runs")})
    with pytest.raises(InputError, match=message):
        clf.fit(X, y)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("X, y, message", [
    (np.zeros((10, 10)), np.arange(10) % 2, "not a square number of pixels; give image_shape"),
    (np.zeros((10, 64)), None, "requires y to be passed"),
    (np.zeros((10, 64)), np.zeros(10), r"y holds 1 class \(0.0\)"),
    (np.zeros((10, 64)), np.linspace(0, 1, 10), "Unknown label type"),
    (np.full((10, 64), np.nan), np.arange(10) % 2, "NaN or infinite"),
    (np.zeros((10, 2, 3, 4, 5)), np.arange(10) % 2, "images must be N x H x W"),
])
def test_bad_data_is_an_input_error_before_anything_runs(X, y, message):
    with pytest.raises(InputError, match=message):
        EagerEnsembleClassifier(**TINY).fit(X, y)


# --- scikit-learn's own checks ---

def test_tags_say_what_fit_and_transform_do():
    from sklearn.utils import get_tags
    tags = get_tags(EagerEnsembleClassifier())
    assert tags.transformer_tags.preserves_dtype == ["float32"]  # transform returns float32 whatever comes in
    assert tags.input_tags.three_d_array and tags.input_tags.two_d_array and not tags.input_tags.allow_nan
    assert tags.estimator_type == "classifier" and tags.classifier_tags.multi_class


FITS_TWICE = """
import sys, ray
from sklearn.datasets import load_digits
from ensemble import EagerEnsembleClassifier
X, y = load_digits(return_X_y=True)
clf = EagerEnsembleClassifier(members=2, epochs=1, eager_rule="none", settings={"model.channels": [4]})
clf.fit(X[:200], y[:200])
first = ray.is_initialized() and ray.get_runtime_context().get_node_id()
clf.fit(X[:200], y[:200])
print("SAME" if first and first == ray.get_runtime_context().get_node_id() else "NEW", flush=True)
"""


@pytest.mark.slow
def test_fits_in_one_process_share_one_ray_instance(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", FITS_TWICE], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "SAME"  # the second fit found the first fit's Ray still up

# The checks that train (iris: 4 columns = 2x2 images); they need Ray, so they run in the slow test below.
TRAINING_CHECKS = ("check_n_features_in_after_fitting", "check_positive_only_tag_during_fit")
NOT_IMAGES = "its X (2-10 columns a row) is not images, so fit refuses it; tested on real images in this file"
EXPECTED_FAILED = {name: NOT_IMAGES for name in (
    "check_fit_score_takes_y", "check_estimators_overwrite_params", "check_dont_overwrite_parameters",
    "check_estimators_fit_returns_self", "check_readonly_memmap_input", "check_estimators_dtypes",
    "check_dtype_object", "check_pipeline_consistency", "check_estimators_nan_inf", "check_estimators_pickle",
    "check_f_contiguous_array_estimator", "check_classifier_data_not_an_array", "check_classifiers_classes",
    "check_classifiers_train", "check_supervised_y_2d", "check_transformer_data_not_an_array",
    "check_transformer_general", "check_transformer_preserve_dtypes", "check_methods_sample_order_invariance",
    "check_methods_subset_invariance", "check_dict_unchanged", "check_fit_idempotent", "check_fit_check_is_fitted",
    "check_n_features_in", "check_fit2d_predict1d")}


@parametrize_with_checks([EagerEnsembleClassifier(**TINY)], expected_failed_checks=lambda e: EXPECTED_FAILED)
def test_scikit_learn_checks_that_apply(estimator, check):
    name = check.func.__name__
    if name in TRAINING_CHECKS:
        pytest.skip("trains on Ray: run by test_scikit_learn_checks_that_train")
    check(estimator)


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINING_CHECKS)
def test_scikit_learn_checks_that_train(ray_instance, name):
    getattr(estimator_checks, name)("EagerEnsembleClassifier", EagerEnsembleClassifier(**TINY))


# --- fitting, on Ray ---

@pytest.mark.slow
def test_cross_val_score_on_digits_returns_two_scores(ray_instance, digits):
    X, y = digits
    scores = cross_val_score(EagerEnsembleClassifier(**TINY), X, y, cv=2)
    assert scores.shape == (2,) and np.all(scores > 0.5)  # 10 classes: chance is 0.1


@pytest.mark.slow
def test_a_fitted_estimator_predicts_transforms_and_reports(ray_instance, digits, tmp_path):
    X, y = digits
    pipeline = make_pipeline(MinMaxScaler(), EagerEnsembleClassifier(**TINY))
    assert pipeline.fit(X[:300], y[:300]) is pipeline
    clf = pipeline[-1]
    assert list(clf.classes_) == list(range(10)) and clf.n_features_in_ == 64 and clf.image_shape_ == (1, 8, 8)
    labels, probabilities = pipeline.predict(X[300:]), pipeline.predict_proba(X[300:])
    assert np.array_equal(clf.classes_[probabilities.argmax(axis=1)], labels)
    assert pipeline.score(X[300:], y[300:]) == pytest.approx(np.mean(labels == y[300:]))
    features = clf.transform(MinMaxScaler().fit(X[:300]).transform(X[300:]))
    assert features.shape == (100, 2 * 4 * 4 * 4) and features.dtype == np.float32  # float64 in, as the tags say
    names = pipeline.get_feature_names_out()
    assert names.shape == (features.shape[1],) and names[0] == "member_00_0" and names[-1] == "member_01_63"
    with pytest.raises(ValueError, match="input_features should have length equal to number of features"):
        clf.get_feature_names_out(["a", "b"])

    # every image trained or validated: no test split held out, so no test accuracy to report
    report = clf.report_
    assert (report.dataset.train, report.dataset.val, report.dataset.test) == (240, 60, 0)
    assert report.ensemble.test_accuracy is None and report.baseline is None
    assert "No test split was held out" in report.verdict
    run_dir = temporary_run_dir(clf)
    assert run_dir is not None and clf.run_dir_.parent == run_dir and (clf.run_dir_ / "report.json").is_file()
    assert "n/a (no test split)" in (clf.run_dir_ / "report.md").read_text()
    # nobody opens the plots of a temporary run: none are drawn, and report.md links none
    assert not list(clf.run_dir_.glob("*.png")) and ".png" not in (clf.run_dir_ / "report.md").read_text()

    again = pickle.loads(pickle.dumps(clf))
    assert np.array_equal(again.predict(MinMaxScaler().fit(X[:300]).transform(X[300:])), labels[:100])
    with pytest.raises(InputError, match="X has 10 features, but EagerEnsembleClassifier is expecting 64"):
        clf.predict(np.zeros((3, 10)))

    clf.fit(X[:300] / 16, y[:300])  # a refit replaces the previous run's temporary directory
    assert not run_dir.exists() and temporary_run_dir(clf) != run_dir


@pytest.mark.slow
def test_output_keeps_the_run_and_images_may_be_3d(ray_instance, digits, tmp_path):
    X, y = digits
    images = X.reshape(-1, 8, 8)
    clf = EagerEnsembleClassifier(**TINY, output=str(tmp_path), random_state=3).fit(images[:200], y[:200])
    assert clf.run_dir_.parent == tmp_path and temporary_run_dir(clf) is None
    assert sorted(p.name for p in clf.run_dir_.glob("*.png")) == sorted(PLOTS)  # a run kept has its plots
    assert all(f"({name})" in (clf.run_dir_ / "report.md").read_text() for name in PLOTS)
    assert clf.report_.config["seed"] == 3 and clf.report_.config["data"]["val_size"] == 0.2
    assert clf.score(images[200:300], y[200:300]) > 0.5
