"""EagerEnsembleClassifier: the eager ensemble as a scikit-learn estimator.

    clf = EagerEnsembleClassifier(members=3, epochs=5).fit(X_train, y_train)
    clf.predict(X_test); clf.score(X_test, y_test); clf.transform(X_test)

`fit` is one `ensemble.run` on the arrays it is given: `val_size` of them (stratified) is held
out for the members' eager stopping, the rest trains, and no test split is held out (the
report's test accuracies are null: score on your own held-out data). It runs on Ray like any
run: it joins an initialised Ray (or RAY_ADDRESS), else starts a local instance on the first fit
and keeps it for the process's later fits (`cross_val_score`, grid searches), since starting Ray
cost more than training on small data; Ray stops it when the process exits (`ray.shutdown()`
stops it earlier). The member actors a fit leaves idle are kept for the next fit in the same way
(`ensemble.scheduling.warm_actors`: `ensemble.release_actors()` frees them at once).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import weakref
from datetime import datetime
from pathlib import Path
from typing import Any, Optional
from uuid import uuid4

import numpy as np
import torch
from pydantic import ValidationError
from scipy import sparse
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from ensemble.config import EnsembleConfig, describe_validation_error, set_key
from ensemble.data.sources import as_images
from workers.errors import InputError

# Each constructor parameter and the config key it sets; `settings` may set any other key.
PARAMETER_KEYS = {
    "members": "members", "epochs": "train.epochs", "eager_rule": "eager.rule",
    "eager_threshold": "eager.threshold", "eager_epoch": "eager.epoch", "combiner": "combiner.kind",
    "head": "combiner.head", "val_size": "data.val_size", "baseline": "baseline.enabled",
}
# Where a parameter's default differs from its config key's, and why: fit data is usually small (a
# fifth for validation, not auto's 1,000), and the baseline would about double each fit's time.
OWN_DEFAULTS = {"val_size": 0.2, "baseline": False}
# Keys the estimator sets itself: every image given to fit trains or validates, none is held out for testing.
FIXED_KEYS = {"data.train_size": None, "data.test_size": 0}
_TEMPORARY_RUNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # estimator -> finalizer of its temp dir


def _default(parameter: str) -> Any:
    """A parameter's default: its config key's default (one home for both), unless OWN_DEFAULTS says otherwise."""
    if parameter in OWN_DEFAULTS:
        return OWN_DEFAULTS[parameter]
    value: Any = EnsembleConfig()
    for part in PARAMETER_KEYS[parameter].split("."):
        value = getattr(value, part)
    return value


class EagerEnsembleClassifier(ClassifierMixin, TransformerMixin, BaseEstimator):
    """An eager parallel autoencoder ensemble with a classifier on the frozen encoders' features.

    Each `fit` is one `ensemble.run` on the arrays it is given: `val_size` of them (stratified) is held
    out for the members' eager stopping, the rest trains, and no test split is held out.

    Parameters
    ----------
    members : int, default=5
        Number of autoencoders trained in parallel (config `members`).
    epochs : int, default=20
        Most epochs a member trains (`train.epochs`).
    eager_rule : {"plateau", "fixed", "budget", "none"}, default="plateau"
        When a member stops (`eager.rule`).
    eager_threshold : float, default=0.2
        plateau: stop once validation loss improves by less than this fraction.
    eager_epoch : int, default=3
        fixed: stop after this many epochs.
    combiner : {"concat", "soft-vote", "hard-vote"}, default="concat"
        Features side by side into one head, or one head per member then a vote (`combiner.kind`).
    head : {"logistic", "mlp"}, default="logistic"
        The classifier head (`combiner.head`).
    autoencoder : callable or None, default=None
        None for the built-in CAE of `model.*`, or a zero-argument callable returning an nn.Module
        with `forward` (reconstruction) and `encode` (features), as `ensemble.run` takes it.
    val_size : float or int, default=0.2
        The share (a float in (0, 1)) or number of the fit images held out, stratified, for the
        members' eager stopping.
    image_shape : tuple of (C, H, W) or None, default=None
        Shape of each image when X is 2-D (one flattened image per row); None: X is N x H x W,
        N x C x H x W or N x H x W x C, or 2-D with a square number of columns (one channel).
    baseline : bool, default=False
        Also train the monolithic baseline, as `ensemble run` does (about doubles fit time).
    output : str or None, default=None
        Directory or URI that keeps each fit's run directory, plots included; None: a temporary
        directory without the plots, removed when the estimator is garbage-collected or the
        interpreter exits.
    random_state : int or None, default=0
        Seed of splits, initialisation and batch order; None draws one per fit.
    settings : dict or None, default=None
        Any other config keys, dotted, e.g. {"train.lr": 0.01, "model.channels": [4, 8]}.
    verbose : bool, default=False
        Print each member's epochs as they finish.

    Attributes
    ----------
    classes_ : ndarray
        The label values seen in fit, in the order of `predict_proba`'s columns.
    n_features_in_ : int
        Pixel values per image.
    image_shape_ : tuple of (C, H, W)
        Shape of the images the members trained on.
    result_ : RunResult
        The fit's run: frozen encoders, combiner, report.
    report_ : RunReport
        What the fit's report.json holds.
    run_dir_ : Path or str
        The fit's run directory, or its URI under `output`.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = EagerEnsembleClassifier(members=2, epochs=1).fit(X[:300], y[:300])  # doctest: +SKIP
    >>> clf.score(X[300:400], y[300:400])  # doctest: +SKIP
    """

    def __init__(self, members: int = _default("members"), epochs: int = _default("epochs"),
                 eager_rule: str = _default("eager_rule"), eager_threshold: float = _default("eager_threshold"),
                 eager_epoch: int = _default("eager_epoch"), combiner: str = _default("combiner"),
                 head: str = _default("head"), autoencoder=None, val_size: float | int = _default("val_size"),
                 image_shape: Optional[tuple[int, int, int]] = None, baseline: bool = _default("baseline"),
                 output: Optional[str] = None, random_state: Optional[int] = EnsembleConfig().seed,
                 settings: Optional[dict[str, Any]] = None, verbose: bool = False):
        self.members = members
        self.epochs = epochs
        self.eager_rule = eager_rule
        self.eager_threshold = eager_threshold
        self.eager_epoch = eager_epoch
        self.combiner = combiner
        self.head = head
        self.autoencoder = autoencoder
        self.val_size = val_size
        self.image_shape = image_shape
        self.baseline = baseline
        self.output = output
        self.random_state = random_state
        self.settings = settings
        self.verbose = verbose

    def fit(self, X, y) -> "EagerEnsembleClassifier":
        """Train the ensemble on X (images) and y (labels of any sortable kind)."""
        from ensemble.job.driver import run
        from ensemble.scheduling.session import shared_session
        config = self._config()
        labels = _labels(y)
        images = self._images(X, reset=True)
        place, temporary = self._place_run()
        try:
            shared_session()  # the next fit reuses it: a Ray start per fit cost more than 1 epoch on digits
            # a run kept only in a temporary directory draws no plots: nobody opens them there, and they
            # were most of a later fit's time on small data (docs/performance.md, 2026-12-07)
            result = run(config.model_copy(update=place), autoencoder=self.autoencoder, dataset=(images, labels),
                         progress="lines" if self.verbose else "quiet", plots=temporary is None)
        except BaseException:
            if temporary is not None:
                temporary()  # a fit that failed leaves no directory behind
            raise
        previous = _TEMPORARY_RUNS.pop(self, None)
        if previous is not None:
            previous()  # the run of the previous fit, replaced by this one
        if temporary is not None:
            _TEMPORARY_RUNS[self] = temporary
        self.result_ = result
        self.report_ = result.report
        self.classes_ = result.classes
        self.run_dir_ = result.stored_at or result.run_dir
        used = [m.name for m in result.report.members if m.selected_epoch is not None]  # transform's members
        # the combiner was fitted on those members' features, so it knows their widths (encoding an
        # image to measure them cost a later fit on small data a tenth of its time)
        self._feature_widths = list(zip(used, result.combiner.member_widths_, strict=True))
        return self

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self)
        return self.result_.predict(self._images(X))

    def predict_proba(self, X) -> np.ndarray:
        """N x K class probabilities, columns in the order of `classes_`."""
        check_is_fitted(self)
        return self.result_.predict_proba(self._images(X))

    def transform(self, X) -> np.ndarray:
        """The frozen encoders' features side by side: N x (sum of the members' feature widths), float32."""
        check_is_fitted(self)
        return self.result_.transform(self._images(X)).astype(np.float32, copy=False)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Names of `transform`'s columns: `member_00_0`, `member_00_1`, ... (each member's features in
        order, for the members the combiner uses). `input_features` is checked against
        `n_features_in_` as scikit-learn does, and does not change the names (they are not pixels)."""
        check_is_fitted(self)
        from sklearn.utils.validation import _check_feature_names_in
        _check_feature_names_in(self, input_features, generate_names=False)
        return np.asarray([f"{name}_{j}" for name, width in self._feature_widths for j in range(width)], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True  # N x H x W (and N x C x H x W) images are accepted as they are
        tags.input_tags.allow_nan = False
        tags.transformer_tags.preserves_dtype = ["float32"]  # transform always returns float32
        tags.classifier_tags.multi_class = True
        return tags

    # --- building blocks ---

    def _config(self) -> EnsembleConfig:
        """The run config of these parameters; a bad one is an InputError naming the parameter."""
        settings = {} if self.settings is None else self.settings
        if not isinstance(settings, dict):
            raise InputError(f"settings must be a dict of dotted config keys, not {type(settings).__name__}.")
        owned = {key: name for name, key in PARAMETER_KEYS.items()}
        taken = sorted(set(settings) & (set(owned) | set(FIXED_KEYS) | {"seed", "output", "name"}))
        if taken:
            raise InputError(f"settings may not set {', '.join(taken)}: the estimator sets "
                             f"{'them' if len(taken) > 1 else 'it'} (parameters: "
                             f"{', '.join(f'{owned[k]} for {k}' for k in taken if k in owned) or 'none'}).")
        raw: dict[str, Any] = {}
        for key, value in [*settings.items(), *FIXED_KEYS.items(),
                           *((key, getattr(self, name)) for name, key in PARAMETER_KEYS.items())]:
            set_key(raw, key, value, f"EagerEnsembleClassifier setting {key!r}")
        raw["seed"] = self._seed()
        try:
            return EnsembleConfig.model_validate(raw)
        except ValidationError as err:
            def name(key: str) -> str:
                return f"parameter {owned[key]}" if key in owned else f"settings key {key!r}"
            raise InputError(describe_validation_error(err, name, "EagerEnsembleClassifier parameters")) from None

    def _seed(self) -> int:
        if isinstance(self.random_state, (int, np.integer)) and not isinstance(self.random_state, bool):
            return int(self.random_state)
        try:
            return int(check_random_state(self.random_state).randint(2**31 - 1))
        except ValueError:
            raise InputError(f"random_state must be an int, None or a numpy RandomState, not "
                             f"{self.random_state!r}.") from None

    def _images(self, X, reset: bool = False):
        """X as images: 2-D rows reshaped to `image_shape` (or a square); other layouts as datasets take them."""
        if sparse.issparse(X):
            raise InputError("X is a sparse matrix, and sparse input is not supported: pass dense images.")
        X = X if isinstance(X, torch.Tensor) else np.asarray(X)
        if X.ndim == 2:
            if 0 in X.shape:
                what = "sample" if len(X) == 0 else "feature"
                raise InputError(f"X has 0 {what}(s) (shape={X.shape}) while a minimum of 1 is required.")
            flat = as_images(X.reshape(len(X), 1, 1, -1), "X")  # numeric, real and finite, whatever the shape
            shape = _flat_image_shape(X.shape[1], self.image_shape) if reset else self.image_shape_
            if not reset and X.shape[1] != self.n_features_in_:
                raise InputError(f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                                 f"{self.n_features_in_} features as input (images of {shape}).")
            X = flat.reshape(len(X), *shape)
        else:
            X = as_images(X, "X")
        if len(X) == 0:
            raise InputError(f"X has 0 sample(s) (shape={tuple(X.shape)}) while a minimum of 1 is required.")
        if reset:
            self.image_shape_: tuple[int, ...] = tuple(X.shape[1:])
            self.n_features_in_: int = math.prod(self.image_shape_)
        return X

    def _place_run(self) -> tuple[dict[str, str], Optional[weakref.finalize]]:
        """Where this fit's run directory goes: under `output`, or in a temporary directory that
        lives as long as the estimator (with the finalizer that removes it)."""
        name = f"fit-{datetime.now():%Y%m%d-%H%M%S}-{uuid4().hex[:6]}"  # fits in one second never collide
        if self.output is not None:
            return {"output": str(self.output), "name": name}, None
        temporary = tempfile.mkdtemp(prefix="eager-ensemble-")
        return {"output": temporary, "name": name}, weakref.finalize(self, shutil.rmtree, temporary, ignore_errors=True)


def _labels(y) -> np.ndarray:
    """y checked as class labels: one dimension, discrete, at least two classes."""
    if y is None:
        raise InputError("EagerEnsembleClassifier requires y to be passed, but the target y is None.")
    labels = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y)
    if labels.ndim != 1:
        raise InputError(f"y should be a 1d array of labels, one per image; got shape {labels.shape}.")
    try:
        check_classification_targets(labels)
        classes = np.unique(labels)
    except (TypeError, ValueError) as err:  # continuous targets, unsortable labels
        raise InputError(f"y: {err}") from None
    if len(classes) < 2:
        raise InputError(f"y holds {len(classes)} class ({', '.join(map(repr, classes[:1].tolist()))}); a "
                         "classifier needs at least 2 classes.")
    return labels


def _flat_image_shape(columns: int, image_shape) -> tuple[int, int, int]:
    """The (C, H, W) of a 2-D X's rows: `image_shape`, or one channel of a square."""
    if image_shape is None and columns == 1:
        raise InputError("X has 1 feature(s) per row: one pixel is not an image; X's rows must be images.")
    if image_shape is None:
        side = math.isqrt(columns)
        if side * side != columns:
            raise InputError(f"X has {columns} columns per row, not a square number of pixels; give "
                             "image_shape=(C, H, W) to say how each row is an image.")
        return 1, side, side
    try:
        shape = tuple(int(size) for size in image_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1 or math.prod(shape) != columns:
        raise InputError(f"image_shape={image_shape!r} must be (C, H, W), positive, with C x H x W = {columns} "
                         "(the columns of X).")
    return shape


def temporary_run_dir(estimator: EagerEnsembleClassifier) -> Optional[Path]:
    """The temporary directory that holds `estimator`'s run, if it has one (for tests and clean-up)."""
    finalizer = _TEMPORARY_RUNS.get(estimator)
    if finalizer is None or not finalizer.alive:
        return None
    _, _, (directory,), _ = finalizer.peek()  # (estimator, shutil.rmtree, args, kwargs)
    return Path(directory)
