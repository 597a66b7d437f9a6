"""The combiner over frozen members' features (concat, soft-vote, hard-vote; logistic or MLP head): fit,
predict, save and load, scikit-learn's estimator checks, and bad input named."""

import json
import warnings
import zipfile

import numpy as np
import pytest
import sklearn
import skops.io as sio
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from classifier import HEADS, KINDS, CombinerInputError
from classifier.combiner import EnsembleCombiner, block_scaler, fit_combiner
from classifier.persistence import load_combiner, save_combiner

WIDTHS = (16, 24, 24)  # the 64 pixels of an 8x8 digit, cut into three "members"


@pytest.fixture(scope="module")
def digits() -> tuple[list[np.ndarray], np.ndarray]:
    """300 digits as three members' float32 feature blocks, and their labels."""
    X, y = load_digits(return_X_y=True)
    X = X[:300].astype(np.float32)
    edges = np.cumsum(WIDTHS)[:-1]
    return np.split(X, edges, axis=1), y[:300]


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("kind", KINDS)
def test_fit_predict_save_load_round_trip(digits, kind, head, tmp_path):
    per_member, y = digits
    combiner, seconds = fit_combiner(kind, head, per_member, y)
    assert seconds > 0 and combiner.member_widths_ == WIDTHS
    X = np.hstack(per_member)
    predictions, probabilities = combiner.predict(X), combiner.predict_proba(X)
    assert combiner.score(X, y) > 0.8
    np.testing.assert_array_equal(combiner.predict_members(per_member), predictions)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(combiner.classes_[probabilities.argmax(axis=1)], predictions)

    path = tmp_path / "combiner.skops"
    save_combiner(combiner, path)
    save_combiner(combiner, path)  # overwriting is fine, and leaves no temporary file behind
    assert [p.name for p in tmp_path.iterdir()] == ["combiner.skops"]
    loaded = load_combiner(path)
    assert loaded.get_params() == combiner.get_params()
    np.testing.assert_array_equal(loaded.predict(X), predictions)
    np.testing.assert_array_equal(loaded.predict_proba(X), probabilities)


def test_soft_vote_averages_the_members_own_pipelines(digits):
    per_member, y = digits
    combiner, _ = fit_combiner("soft-vote", "logistic", per_member, y)
    heads = [make_pipeline(StandardScaler(), LogisticRegression(max_iter=200)).fit(block, y) for block in per_member]
    by_hand = np.mean([head.predict_proba(block) for head, block in zip(heads, per_member, strict=True)], axis=0)
    np.testing.assert_allclose(combiner.predict_proba(np.hstack(per_member)), by_hand, rtol=1e-6, atol=1e-7)


def test_hard_vote_is_the_majority_with_ties_to_the_lowest_class(digits):
    per_member, y = digits
    two_members = [per_member[0], np.hstack(per_member[1:])]  # two voters: every disagreement is a tie
    combiner, _ = fit_combiner("hard-vote", "logistic", two_members, y)
    X = np.hstack(two_members)
    votes = np.column_stack([member.predict(X) for member in combiner.model_.estimators_])  # class indices
    ties = votes[:, 0] != votes[:, 1]
    assert ties.any()
    expected = np.where(ties, votes.min(axis=1), votes[:, 0])
    np.testing.assert_array_equal(combiner.predict(X), combiner.classes_[expected])
    shares = combiner.predict_proba(X)
    assert set(np.unique(shares)) <= {0.0, 0.5, 1.0}

    three, _ = fit_combiner("hard-vote", "logistic", per_member, y)
    X = np.hstack(per_member)
    votes = np.column_stack([member.predict(X) for member in three.model_.estimators_])
    majority = [np.bincount(row, minlength=10).argmax() for row in votes]
    np.testing.assert_array_equal(three.predict(X), three.classes_[majority])


# The checks feed the estimator arbitrary column counts, so they run with member_widths=None
# (one member spanning all columns); the logistic head runs under every kind, the MLP head once.
MLP_EARLY_STOPPING = ("early stopping holds out a stratified 10% of rows; the check fits on 10 rows, "
                      "which leaves 1 validation row for 2 classes")


# Upstream MLPClassifier behaviour on older releases (measured on 1.6.0, 1.7.0 and 1.8.0; 1.9.1 passes).
# The ensemble itself always fits its combiner on integer labels 0..K-1 with hundreds of rows.
SKLEARN = tuple(int(part) for part in sklearn.__version__.split(".")[:2])
OLD_MLP = {
    "check_classifiers_classes": (SKLEARN < (1, 9), "scikit-learn < 1.9: MLPClassifier's early stopping scores "
                                                    "string labels with np.isnan (TypeError)"),
    "check_n_features_in_after_fitting": (SKLEARN < (1, 7), "scikit-learn 1.6: " + MLP_EARLY_STOPPING),
}


def expected_failed_checks(estimator):
    if estimator.head == "mlp":
        old = {name: reason for name, (applies, reason) in OLD_MLP.items() if applies}
        return {"check_estimators_nan_inf": MLP_EARLY_STOPPING, "check_fit2d_1feature": MLP_EARLY_STOPPING, **old}
    return {}


@parametrize_with_checks([EnsembleCombiner(kind=kind) for kind in KINDS] + [EnsembleCombiner(head="mlp")],
                         expected_failed_checks=expected_failed_checks)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_bad_training_inputs_are_named(digits):
    per_member, y = digits
    X = np.hstack(per_member)
    with pytest.raises(CombinerInputError, match="features have 300 rows but labels have 299"):
        EnsembleCombiner().fit(X, y[:-1])
    with pytest.raises(CombinerInputError, match=r"row counts differ: \[300, 300, 299\]"):
        fit_combiner("stack", "logistic", [*per_member[:2], per_member[2][:-1]], y)
    with pytest.raises(CombinerInputError, match="zero members"):
        fit_combiner("stack", "logistic", [], y)
    with pytest.raises(CombinerInputError, match="zero members"):
        EnsembleCombiner(member_widths=()).fit(X, y)
    with pytest.raises(CombinerInputError, match="labels hold one class"):
        EnsembleCombiner().fit(X, np.full(len(y), 3))
    with pytest.raises(CombinerInputError, match=r"member_widths \(16, 24\) sum to 40, but the features have 64"):
        EnsembleCombiner(kind="soft-vote", member_widths=(16, 24)).fit(X, y)
    with pytest.raises(CombinerInputError, match="width below 1"):
        EnsembleCombiner(member_widths=(64, 0)).fit(X, y)
    with pytest.raises(CombinerInputError, match="kind must be one of"):
        EnsembleCombiner(kind="bagging").fit(X, y)
    with pytest.raises(CombinerInputError, match="head must be one of"):
        EnsembleCombiner(head="svm").fit(X, y)
    with pytest.raises(CombinerInputError, match="C must be positive"):
        EnsembleCombiner(head="mlp", C=0).fit(X, y)
    for bad in (np.nan, np.inf):
        poisoned = X.copy()
        poisoned[5, 7] = bad
        with pytest.raises(CombinerInputError, match="NaN or inf in 1 row.*first at row 5"):
            EnsembleCombiner().fit(poisoned, y)


def test_bad_prediction_inputs_are_named(digits, tmp_path):
    per_member, y = digits
    combiner, _ = fit_combiner("soft-vote", "logistic", per_member, y)
    save_combiner(combiner, tmp_path / "combiner.skops")
    saved = load_combiner(tmp_path / "combiner.skops")
    X = np.hstack(per_member)
    with pytest.raises(CombinerInputError, match=r"X has 40 features.*expecting 64.*member widths \(16, 24, 24\)"):
        saved.predict(X[:, :40])
    # same total width, different members: only the per-member check can tell
    with pytest.raises(CombinerInputError, match=r"widths \(24, 24, 16\) disagree with the \(16, 24, 24\)"):
        saved.predict_members([X[:, :24], X[:, 24:48], X[:, 48:]])
    poisoned = X.copy()
    poisoned[2, 0] = np.nan
    with pytest.raises(CombinerInputError, match="NaN or inf"):
        saved.predict_proba(poisoned)


def replace_first_node(node, class_name: str, new: dict) -> bool:
    """Rewrite the first skops schema node of `class_name` in place."""
    if isinstance(node, dict):
        if node.get("__class__") == class_name:
            node.update(new)
            return True
        return any(replace_first_node(value, class_name, new) for value in node.values())
    if isinstance(node, list):
        return any(replace_first_node(value, class_name, new) for value in node)
    return False


def test_tampered_or_foreign_files_are_refused(digits, tmp_path):
    per_member, y = digits
    good = tmp_path / "good.skops"
    save_combiner(fit_combiner("stack", "logistic", per_member, y)[0], good)

    tampered = tmp_path / "tampered.skops"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(tampered, "w") as target:
        for name in source.namelist():
            content = source.read(name)
            if name == "schema.json":
                schema = json.loads(content)
                assert replace_first_node(schema, "StandardScaler", {"__module__": "os", "__class__": "system"})
                content = json.dumps(schema)
            target.writestr(name, content)
    with pytest.raises(CombinerInputError, match=r"types a combiner never contains: \['os.system'\]"):
        load_combiner(tampered)

    truncated = tmp_path / "truncated.skops"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CombinerInputError, match="not a readable combiner file"):
        load_combiner(truncated)

    foreign = tmp_path / "foreign.skops"
    sio.dump(LogisticRegression().fit(np.hstack(per_member), y), foreign)
    with pytest.raises(CombinerInputError, match="holds a LogisticRegression, not an EnsembleCombiner"):
        load_combiner(foreign)

    with pytest.raises(CombinerInputError, match="no combiner file"):
        load_combiner(tmp_path / "missing.skops")


def test_only_fitted_combiners_are_saved(tmp_path):
    with pytest.raises(CombinerInputError, match="fitted"):
        save_combiner(EnsembleCombiner(), tmp_path / "c.skops")
    with pytest.raises(CombinerInputError, match="saves an EnsembleCombiner"):
        save_combiner(LogisticRegression(), tmp_path / "c.skops")
    assert list(tmp_path.iterdir()) == []


def test_the_docstring_example_runs_as_written():
    """The public docstring's example (numpydoc, scikit-learn style) is checked, not only read."""
    import doctest

    import classifier.combiner
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(classifier.combiner.EnsembleCombiner, "EnsembleCombiner", module=classifier.combiner):
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.failed == 0 and results.attempted > 0


def test_concat_scaler_fitted_block_by_block_is_bitwise_the_whole_matrix_fit():
    rng = np.random.default_rng(3)
    widths = (16, 24, 8)
    X = np.maximum(0, rng.normal(1.0, 3.0, size=(200, sum(widths)))).astype(np.float32)
    X[:, 5] = 0.0  # a dead unit (ReLU): its scale is 1, as scikit-learn makes it
    y = rng.integers(0, 3, size=200)
    ours = EnsembleCombiner(kind="concat", member_widths=widths).fit(X, y)
    whole = Pipeline([("scale", StandardScaler()), ("head", LogisticRegression(C=1.0, max_iter=200))]).fit(X, y)
    for name in ("mean_", "var_", "scale_"):
        assert np.array_equal(getattr(ours.model_[0], name), getattr(whole[0], name))
    assert ours.model_[0].n_samples_seen_ == 200 and ours.model_[0].n_features_in_ == 48
    assert np.array_equal(ours.model_[-1].coef_, whole[-1].coef_)
    assert np.array_equal(ours.predict_proba(X), whole.predict_proba(X))


def test_scaler_fitted_a_few_columns_at_a_time_is_bitwise_the_whole_matrix_fit(monkeypatch):
    """Chunks of columns smaller than a member's block (what bounds the scaler's float64 copy on
    48,000 rows) give the same statistics, scaled matrix and head as one fit on everything."""
    import classifier.combiner
    monkeypatch.setattr(classifier.combiner, "SCALER_COLUMNS", 5)
    rng = np.random.default_rng(4)
    widths = (16, 7)
    X = np.maximum(0, rng.normal(1.0, 3.0, size=(150, sum(widths)))).astype(np.float32)
    y = rng.integers(0, 3, size=150)
    ours = EnsembleCombiner(kind="concat", member_widths=widths).fit(X, y)
    whole = Pipeline([("scale", StandardScaler()), ("head", LogisticRegression(C=1.0, max_iter=200))]).fit(X, y)
    assert [c.shape[1] for c in classifier.combiner.column_chunks(X[:, :16])] == [5, 5, 6]  # no lone column
    for name in ("mean_", "var_", "scale_"):
        assert np.array_equal(getattr(ours.model_[0], name), getattr(whole[0], name))
    assert np.array_equal(ours.model_[-1].coef_, whole[-1].coef_)
    assert np.array_equal(block_scaler(X, widths).var_, whole[0].var_)


def test_lbfgs_tolerance_loosens_from_the_large_fit_rows_only(monkeypatch):
    import classifier.combiner as combiner
    assert combiner.lbfgs_tolerance(3000) == 1e-4 == combiner.lbfgs_tolerance(combiner.LARGE_FIT_ROWS - 1)
    assert combiner.lbfgs_tolerance(combiner.LARGE_FIT_ROWS) == 1e-3 == combiner.lbfgs_tolerance(48000)
    rng = np.random.default_rng(5)
    y = np.arange(120) % 3
    X = (rng.normal(size=(120, 6)) + y[:, None]).astype(np.float32)
    small = EnsembleCombiner().fit(X, y)
    monkeypatch.setattr(combiner, "LARGE_FIT_ROWS", 100)  # these 120 rows count as a large fit
    for kind in KINDS:
        large = EnsembleCombiner(kind=kind, member_widths=(3, 3)).fit(X, y)
        heads = [large.model_[-1]] if kind == "concat" else [m[-1] for m in large.model_.estimators_]
        assert large.tol_ == 1e-3 and all(head.tol == 1e-3 for head in heads)
    assert small.tol_ == small.model_[-1].tol == 1e-4
    assert EnsembleCombiner(head="mlp", max_iter=20).fit(X, y).tol_ is None


def test_fitting_on_the_members_blocks_is_bitwise_fitting_on_the_stacked_matrix(digits):
    """fit_combiner scales each member's block straight into the head's matrix (`fit_members`): the
    combiner is the one `fit` gives on the stacked features, for every kind, whatever the dtypes."""
    per_member, y = digits
    for kind in KINDS:
        blocks, _ = fit_combiner(kind, "logistic", per_member, y)
        stacked = EnsembleCombiner(kind=kind, member_widths=WIDTHS).fit(np.hstack(per_member), y)
        assert blocks.member_widths == blocks.member_widths_ == WIDTHS and blocks.n_features_in_ == 64
        heads = [blocks.model_[-1]] if kind == "concat" else [m[-1] for m in blocks.model_.estimators_]
        others = [stacked.model_[-1]] if kind == "concat" else [m[-1] for m in stacked.model_.estimators_]
        assert all(np.array_equal(a.coef_, b.coef_) for a, b in zip(heads, others, strict=True))
        assert np.array_equal(blocks.predict_members(per_member), stacked.predict_members(per_member))
    mixed = [per_member[0].astype(np.float64), *per_member[1:]]  # stacking would make all float64
    ours = EnsembleCombiner().fit_members(mixed, y)
    whole = EnsembleCombiner(member_widths=WIDTHS).fit(np.hstack(mixed), y)
    assert ours.model_[0].mean_.dtype == np.float64 and np.array_equal(ours.model_[-1].coef_, whole.model_[-1].coef_)


def test_bad_member_blocks_are_named_as_the_stacked_matrix_would_be(digits):
    per_member, y = digits
    poisoned = [block.copy() for block in per_member]
    poisoned[2][9, 3], poisoned[0][4, 0] = np.nan, np.inf
    with pytest.raises(CombinerInputError, match="NaN or inf in 2 row.*first at row 4"):
        EnsembleCombiner().fit_members(poisoned, y)
    with pytest.raises(CombinerInputError, match="features have 300 rows but labels have 299"):
        EnsembleCombiner().fit_members(per_member, y[:-1])
    with pytest.raises(CombinerInputError, match=r"member_widths \(40, 24\) disagree with the members' feature"):
        EnsembleCombiner(member_widths=(40, 24)).fit_members(per_member, y)
    with pytest.raises(CombinerInputError, match="zero members"):
        EnsembleCombiner().fit_members([], y)


def test_a_head_that_does_not_converge_warns_naming_itself_and_the_key_that_raises_its_iterations():
    from sklearn.exceptions import ConvergenceWarning

    from classifier.combiner import fit_combiner
    rng = np.random.default_rng(0)
    features, labels = [rng.normal(size=(80, 6)), rng.normal(size=(80, 6))], np.arange(80) % 3
    with pytest.warns(ConvergenceWarning) as caught:
        combiner, _ = fit_combiner("concat", "logistic", features, labels, max_iter=2, who="the baseline's")
    ours = [str(w.message) for w in caught if "combiner.max_iter" in str(w.message)]
    assert combiner.n_iter_ == 2 and ours == [
        "the baseline's combiner head (logistic) did not converge in combiner.max_iter=2 iterations; its accuracy "
        "may be a little low. Raise the cap: --set combiner.max_iter=8 (or combiner: {max_iter: 8} in a config file)."]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # converged: no warning of ours
        fit_combiner("concat", "logistic", features, labels, max_iter=500, who="the ensemble's")
