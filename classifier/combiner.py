"""Concatenate, soft-vote or hard-vote over frozen members' features, as one scikit-learn estimator.

`fit` takes the stacked matrix (members' feature blocks side by side, as
`classifier.features.stack_features` builds it); `member_widths` says where each block ends.
- concat:    StandardScaler + one head on all columns (formerly "stack", still accepted). Not
             scikit-learn's StackingClassifier, which fits a meta-learner on members' predictions.
- soft-vote: per member, a pipeline (select its columns, StandardScaler, head); the
             members' probabilities are averaged (VotingClassifier, voting="soft").
- hard-vote: the same pipelines, majority vote (VotingClassifier, voting="hard"). Ties go
             to the lowest class index, i.e. the first of `classes_`, because the vote is an
             argmax over vote counts. `predict_proba` is each class's share of the votes.
"""

from __future__ import annotations

import time
import warnings
from typing import Optional, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import VotingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d, validate_data

from classifier import HEADS, KINDS, CombinerInputError, combiner_kind
from classifier.features import member_widths, stack_features
from classifier.side_by_side import fit_threads

SMALL_FIT_TOL, LARGE_FIT_TOL = 1e-4, 1e-3  # lbfgs tolerances: `lbfgs_tolerance`
LARGE_FIT_ROWS = 40_000
SCALER_COLUMNS = 128  # columns a scaler fits at a time: a float64 copy of 128 columns, not of a member's 784
MLP_HIDDEN_UNITS = 64  # as accurate as 128 hidden units on five members' features, and faster (performance log)

# float32 features (what classifier.features returns) stay float32 instead of being upcast, and
# other non-float input becomes float32: the stack head sees every member's columns, and lbfgs on
# float32 takes half the memory and less time than on float64 for the same test accuracy
# (docs/performance.md#figures-behind-design-choices). float64 input stays float64.
FEATURE_DTYPES = (np.float32, np.float64)


class EnsembleCombiner(ClassifierMixin, BaseEstimator):
    """A classifier over the stacked features of N frozen encoders.

    Parameters
    ----------
    kind : {"concat", "stack", "soft-vote", "hard-vote"}, default="concat"
        concat (alias stack): the members' features side by side into one head; soft-vote /
        hard-vote: one head per member, then a vote (see the module docstring).
    head : {"logistic", "mlp"}, default="logistic"
        LogisticRegression, or an MLP with one hidden layer and early stopping.
    member_widths : tuple of int or None, default=None
        Each member's number of columns, in order; None means one member spanning all columns.
    C : float, default=1.0
        Inverse L2 strength for either head (the MLP's alpha is 1 / C, the same penalty per sample).
    max_iter : int, default=200
        lbfgs iterations (logistic) or epochs (mlp).
    random_state : int, default=0
        Seed of the MLP's initialisation and early-stopping split.

    Attributes
    ----------
    classes_ : ndarray
        The class labels seen in fit.
    member_widths_ : tuple of int
        Each member's number of columns, resolved.
    model_ : Pipeline or VotingClassifier
        The fitted head: a Pipeline (concat) or a VotingClassifier (soft-vote, hard-vote).
    n_iter_ : int
        The most iterations any head ran (equal to max_iter: it hit the cap).
    tol_ : float or None
        The logistic heads' lbfgs tolerance, chosen by the rows fitted on (`lbfgs_tolerance`); None for mlp.
    n_features_in_ : int
        Columns seen in fit.

    Examples
    --------
    >>> import numpy as np
    >>> X, y = np.random.default_rng(0).normal(size=(60, 6)), np.arange(60) % 3
    >>> EnsembleCombiner(kind="soft-vote", member_widths=(3, 3)).fit(X, y).predict(X[:2]).shape
    (2,)
    """

    def __init__(self, kind: str = "concat", head: str = "logistic", member_widths: tuple[int, ...] | None = None,
                 C: float = 1.0, max_iter: int = 200, random_state: int = 0):
        self.kind = kind
        self.head = head
        self.member_widths = member_widths
        self.C = C
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X, y) -> "EnsembleCombiner":
        with fit_threads():  # lbfgs's optimiser on one BLAS thread (`classifier.side_by_side`)
            return self._fit_stacked(X, y)

    def fit_members(self, per_member_features: Sequence[np.ndarray], y) -> "EnsembleCombiner":
        """`fit` on one feature array per member (their widths are the member widths), without stacking
        them first: a concat combiner scales each member's block straight into the one matrix its head
        fits on, one copy of the features where `fit(stacked)` makes two more (the stacked and the scaled
        matrix; their cost: docs/performance.md#figures-behind-design-choices). The fitted combiner is
        bitwise the one `fit` gives."""
        with fit_threads():  # lbfgs's optimiser on one BLAS thread (`classifier.side_by_side`)
            return self._fit_members(per_member_features, y)

    def _fit_members(self, per_member_features: Sequence[np.ndarray], y) -> "EnsembleCombiner":
        self._check_params()
        widths = member_widths(per_member_features)
        if self.member_widths is not None and self._resolved_widths(sum(widths)) != widths:
            raise CombinerInputError(f"member_widths {tuple(self.member_widths)} disagree with the members' feature "
                                     f"widths {widths}.")
        if self._kind() != "concat":  # each voting head selects its own columns from the stacked matrix
            return self._fit_stacked(np.hstack(per_member_features), y, widths)
        blocks = [check_array(block, dtype=FEATURE_DTYPES, ensure_all_finite=False) for block in per_member_features]
        common = np.result_type(*blocks)  # what stacking them would give
        blocks = [block.astype(common, copy=False) for block in blocks]
        y = self._checked_labels(y, len(blocks[0]))
        _check_finite(*blocks)
        self.member_widths_, self.n_features_in_ = widths, sum(widths)
        self.__dict__.pop("feature_names_in_", None)  # as validate_data does for arrays without column names
        return self._fitted(self._fit_concat(blocks, y))

    def _fit_stacked(self, X, y, widths: Optional[tuple[int, ...]] = None) -> "EnsembleCombiner":
        """`fit` on the stacked matrix; `widths`: the members' widths when known, else `member_widths`."""
        self._check_params()
        X = validate_data(self, X, ensure_all_finite=False, dtype=FEATURE_DTYPES)
        y = self._checked_labels(y, len(X))
        _check_finite(X)
        self.member_widths_ = widths or self._resolved_widths(X.shape[1])
        if self._kind() == "concat":
            return self._fitted(self._fit_concat(column_blocks(X, self.member_widths_), y))
        return self._fitted(self._build_model(len(y)).fit(X, y))

    def _checked_labels(self, y, rows: int) -> np.ndarray:
        y = column_or_1d(y, warn=True)
        if len(y) != rows:
            raise CombinerInputError(f"features have {rows} rows but labels have {len(y)}; "
                                     "they must describe the same images.")
        check_classification_targets(y)
        classes = np.unique(y)
        if len(classes) < 2:
            raise CombinerInputError(f"labels hold one class ({classes[0]!r}); a classifier needs at least two.")
        return y

    def _fitted(self, model) -> "EnsembleCombiner":
        self.model_ = model
        self.classes_ = self.model_.classes_
        heads = [self.model_[-1]] if self._kind() == "concat" else [member[-1] for member in self.model_.estimators_]
        self.n_iter_ = max(int(np.max(head.n_iter_)) for head in heads)
        return self

    def predict(self, X) -> np.ndarray:
        X = self._checked_features(X)
        return self.model_.predict(X)

    def predict_proba(self, X) -> np.ndarray:
        X = self._checked_features(X)
        if self.kind != "hard-vote":
            return self.model_.predict_proba(X)
        votes = self.model_.transform(X)  # (rows, members) of class indices into classes_
        return (votes[:, :, np.newaxis] == np.arange(len(self.classes_))).mean(axis=1)

    def predict_members(self, per_member_features: Sequence[np.ndarray]) -> np.ndarray:
        """Labels from one feature array per member, in the order the combiner was fitted on;
        checks each member's width, not only their sum."""
        check_is_fitted(self)
        features, widths = stack_features(per_member_features)
        if widths != self.member_widths_:
            raise CombinerInputError(f"members' feature widths {widths} disagree with the {self.member_widths_} "
                                     "this combiner was fitted on; use the same encoders, in the same order.")
        return self.predict(features)

    # --- building blocks ---

    def _kind(self) -> str:
        return combiner_kind(self.kind)

    def _check_params(self) -> None:
        if self._kind() not in KINDS:
            raise CombinerInputError(f"kind must be one of {KINDS}; got {self.kind!r}.")
        if self.head not in HEADS:
            raise CombinerInputError(f"head must be one of {HEADS}; got {self.head!r}.")
        if not self.C > 0:
            raise CombinerInputError(f"C must be positive (it is the inverse regularisation strength); got {self.C!r}.")
        if self.member_widths is not None and len(self.member_widths) == 0:
            raise CombinerInputError("member_widths is empty: a combiner needs at least one member (zero members).")

    def _resolved_widths(self, columns: int) -> tuple[int, ...]:
        if self.member_widths is None:
            return (columns,)
        widths = tuple(int(width) for width in self.member_widths)
        if any(width < 1 for width in widths):
            raise CombinerInputError(f"member_widths {widths} holds a width below 1; every member needs a column.")
        if sum(widths) != columns:
            raise CombinerInputError(f"member_widths {widths} sum to {sum(widths)}, but the features have {columns} "
                                     "columns; give one width per member, in stacking order.")
        return widths

    def _head(self, rows: int):
        if self.head == "logistic":
            # lbfgs on standardised features converges in a few dozen iterations even with
            # thousands of columns; max_iter only caps pathological data. A tighter tol cost many
            # times the iterations for a negligible gain in accuracy; the tolerance by rows:
            self.tol_: Optional[float] = lbfgs_tolerance(rows)  # None: the mlp head has no tolerance of ours
            return LogisticRegression(C=self.C, max_iter=self.max_iter, tol=self.tol_)
        self.tol_ = None
        return MLPClassifier(hidden_layer_sizes=(MLP_HIDDEN_UNITS,), alpha=1.0 / self.C, early_stopping=True,
                             max_iter=self.max_iter, random_state=self.random_state)

    def _fit_concat(self, blocks: Sequence[np.ndarray], y: np.ndarray) -> Pipeline:
        """The concat pipeline (what `_build_model` builds), with its scaler fitted a few of a member's
        columns at a time (`column_chunks`, as `block_scaler` does) and each chunk scaled straight into the
        matrix the head fits on: the same fitted pipeline, bitwise, in less time and memory than scaling
        the whole matrix."""
        scaled = np.empty((len(y), sum(block.shape[1] for block in blocks)), dtype=blocks[0].dtype)
        parts, start = [], 0
        for block in blocks:
            for chunk in column_chunks(block):
                parts.append(StandardScaler().fit(chunk))
                scaled[:, start:start + chunk.shape[1]] = parts[-1].transform(chunk)  # elementwise, as on the whole
                start += chunk.shape[1]
        return Pipeline([("scale", merged_scaler(parts)), ("head", self._head(len(y)).fit(scaled, y))])

    def _build_model(self, rows: int):
        if self._kind() == "concat":
            return Pipeline([("scale", StandardScaler()), ("head", self._head(rows))])
        members = []
        start = 0
        for index, width in enumerate(self.member_widths_):
            select = ColumnTransformer([("columns", "passthrough", slice(start, start + width))])
            members.append((f"member_{index}", Pipeline([("select", select), ("scale", StandardScaler()),
                                                         ("head", self._head(rows))])))
            start += width
        return VotingClassifier(members, voting="soft" if self.kind == "soft-vote" else "hard")

    def _checked_features(self, X) -> np.ndarray:
        check_is_fitted(self)
        # Our own message for the likeliest mistake: encoders that are not the ones fitted on.
        # (an array's own shape when it has one: a second full check is paid again by every served request)
        columns = X.shape[1] if isinstance(X, np.ndarray) and X.ndim == 2 else \
            check_array(X, dtype=None, ensure_all_finite=False).shape[1]
        if columns != self.n_features_in_:
            raise CombinerInputError(
                f"X has {columns} features, but {type(self).__name__} is expecting {self.n_features_in_} features "
                f"as input (member widths {self.member_widths_}); extract features with the encoders it was fitted on.")
        X = validate_data(self, X, reset=False, ensure_all_finite=False, dtype=FEATURE_DTYPES)
        _check_finite(X)
        return X


def lbfgs_tolerance(rows: int) -> float:
    """The logistic head's lbfgs tolerance for `rows` training rows: scikit-learn's 1e-4 below
    `LARGE_FIT_ROWS`, 1e-3 from there. With C fixed the penalty weighs less per row as rows grow, so
    lbfgs needs more iterations on a matrix too large for the cache; at large fits 1e-3 stops much
    sooner at the same test accuracy within its Wilson interval, while at medium ones it cost a
    point of accuracy, so only the large regime loosens (the figures: docs/performance.md, "the heads'
    fit and the driver's memory against data size"); the default run fits as before."""
    return LARGE_FIT_TOL if rows >= LARGE_FIT_ROWS else SMALL_FIT_TOL


def block_scaler(X: np.ndarray, widths: Sequence[int]) -> StandardScaler:
    """A StandardScaler on all of X's columns, fitted one block of `widths` columns at a time.

    A column's mean and variance depend on that column alone, so the statistics are bitwise those of
    one fit on the whole matrix; but scikit-learn computes them on a float64 copy of what it is given,
    and one block's small copy is reused where the whole matrix's is a fresh allocation
    that grows with N (measured with `benchmarks/fit_scaling.py --scaler-only`:
    docs/performance.md#figures-behind-design-choices)."""
    return merged_scaler([StandardScaler().fit(chunk) for block in column_blocks(X, widths)
                          for chunk in column_chunks(block)])


def column_chunks(block: np.ndarray, most: Optional[int] = None) -> list[np.ndarray]:
    """Views of `block`'s columns, at most `most` (default `SCALER_COLUMNS`) at a time. StandardScaler
    computes a block's statistics on a float64 copy of it, so a member's whole block made a transient
    copy twice the size of its features (docs/performance.md), two at once when fits
    run side by side; a column's statistics depend on that column alone, so chunks give the same
    numbers, bitwise, except for a chunk of a single column (numpy then sums it pairwise, not row by row,
    which moves the variance's last bits), so a lone last column joins the chunk before it."""
    most = max(2, most or SCALER_COLUMNS)
    edges = list(range(0, block.shape[1], most)) + [block.shape[1]]
    if len(edges) > 2 and edges[-1] - edges[-2] == 1:
        del edges[-2]
    return [block[:, start:end] for start, end in zip(edges[:-1], edges[1:], strict=True)]


def column_blocks(X: np.ndarray, widths: Sequence[int]) -> list[np.ndarray]:
    """Views of X's columns, one block of `widths` columns per member, in order."""
    edges = np.cumsum([0, *widths])
    return [X[:, start:end] for start, end in zip(edges[:-1], edges[1:], strict=True)]


def merged_scaler(parts: Sequence[StandardScaler]) -> StandardScaler:
    """One StandardScaler over the columns of `parts`, side by side (their statistics concatenated)."""
    scaler = StandardScaler()
    scaler.mean_ = np.concatenate([part.mean_ for part in parts])
    scaler.var_ = np.concatenate([part.var_ for part in parts])
    scaler.scale_ = np.concatenate([part.scale_ for part in parts])
    scaler.n_samples_seen_ = parts[0].n_samples_seen_  # finite features: the same count for every column
    scaler.n_features_in_ = len(scaler.mean_)
    return scaler


def _check_finite(*blocks: np.ndarray) -> None:
    """NaN or inf anywhere: an error naming how many rows (of the blocks side by side) and the first."""
    bad = np.zeros(len(blocks[0]), dtype=bool)
    for block in blocks:
        bad |= ~np.isfinite(block).all(axis=1)
    bad_rows = np.flatnonzero(bad)
    if len(bad_rows):
        raise CombinerInputError(f"features contain NaN or inf in {len(bad_rows)} row(s), the first at row "
                                 f"{bad_rows[0]}; check the encoders' inputs and weights.")


def fit_combiner(kind: str, head: str, per_member_features: Sequence[np.ndarray], labels,
                 random_state: int = 0, max_iter: int = 200, who: str = "the combiner's"
                 ) -> tuple[EnsembleCombiner, float]:
    """Fit a combiner on the members' features side by side; returns it and the seconds spent. A head
    that used up `max_iter` gets a ConvergenceWarning naming `who` it belongs to ("the ensemble's",
    "the baseline's", ...) and the config key that raises the cap.

    Parameters
    ----------
    kind : str
        `concat` (one head on every member's features side by side), `soft-vote` or `hard-vote`.
    head : str
        The classifier each head is (`classifier.HEADS`).
    per_member_features : sequence of ndarray
        One n_samples x n_features array per member, rows in the same order.
    labels : array-like
        One label per row.
    random_state : int
        Seed of the heads.
    max_iter : int, default=200
        Most iterations of each head (`combiner.max_iter`).
    who : str, default="the combiner's"
        Whose head it is, for the warning when it does not converge.

    Returns
    -------
    combiner : EnsembleCombiner
        Fitted: `predict_members`, `predict_proba_members`.
    seconds : float
        Wall-clock seconds the fit took.

    Examples
    --------
    >>> import numpy as np
    >>> from classifier.combiner import fit_combiner
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat([0, 1], 20)
    >>> features = [rng.normal(size=(40, 4)) + labels[:, None] for _ in range(3)]  # three members
    >>> combiner, seconds = fit_combiner("soft-vote", "logistic", features, labels)
    >>> combiner.predict_members([f[:4] for f in features]).tolist()
    [0, 0, 0, 0]
    """
    started = time.perf_counter()
    combiner = EnsembleCombiner(kind=kind, head=head, member_widths=member_widths(per_member_features),
                                random_state=random_state, max_iter=max_iter)
    combiner.fit_members(per_member_features, labels)
    if combiner.n_iter_ >= max_iter:
        warnings.warn(ConvergenceWarning(
            f"{who} combiner head ({head}) did not converge in combiner.max_iter={max_iter} iterations; its "
            f"accuracy may be a little low. Raise the cap: --set combiner.max_iter={4 * max_iter} (or "
            f"combiner: {{max_iter: {4 * max_iter}}} in a config file)."), stacklevel=2)
    return combiner, time.perf_counter() - started


def own_head_predictions(kind: str, head: str, random_state: int, train_features: np.ndarray, labels,
                         test_features: np.ndarray, max_iter: int = 200) -> np.ndarray:
    """One member alone: the combiner kind fitted on that member's features only, its test predictions
    (each member's accuracy and the ensemble's diversity). Run on the driver, or in the member's actor
    when it finishes (`workers.encoding.EncodeRequest.own_head`): the same arithmetic either way."""
    alone, _ = fit_combiner(kind, head, [train_features], labels, random_state=random_state, max_iter=max_iter,
                            who="a member's own")
    return alone.predict_members([test_features])
