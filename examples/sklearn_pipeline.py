"""The eager ensemble as a scikit-learn estimator: in a Pipeline, under cross_val_score, and as a
feature extractor in front of another classifier.

    python examples/sklearn_pipeline.py           # 3 members, 5 epochs, 3-fold CV on all digits (a few minutes)
    python examples/sklearn_pipeline.py --tiny    # 2 members, 1 epoch, 2-fold CV on 400 digits: a smoke run

Each row of X is one flattened square image (here 8 x 8 digits); `image_shape=(C, H, W)` says
otherwise. Every fit is one run on Ray, so one Ray instance is started up front and shared.
"""

import argparse

import ray
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

from ensemble import EagerEnsembleClassifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="2 members, 1 epoch, 400 images, 2 folds")
    tiny = parser.parse_args().tiny

    X, y = load_digits(return_X_y=True)
    if tiny:
        X, y = X[:400], y[:400]
    # address="local": a Ray instance of our own for every fit below, even when a `ray start` cluster
    # runs on this machine (ray.init(address="auto") would join that one instead).
    ray.init(address="local", num_cpus=2 if tiny else None, include_dashboard=False)

    ensemble = EagerEnsembleClassifier(members=2 if tiny else 3, epochs=1 if tiny else 5, random_state=0)

    # 1. A Pipeline with a preprocessing step, scored by cross-validation (each fold clones and refits).
    pipeline = make_pipeline(MinMaxScaler(), ensemble)
    scores = cross_val_score(pipeline, X, y, cv=2 if tiny else 3)
    print(f"cross-validated accuracy: {scores.mean():.3f} +- {scores.std():.3f} over {len(scores)} folds")

    # 2. The frozen encoders as features (transform) for any other scikit-learn classifier.
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    features_then_logistic = make_pipeline(MinMaxScaler(), ensemble, LogisticRegression(max_iter=1000))
    features_then_logistic.fit(X_train, y_train)
    print(f"encoder features + logistic regression, held-out accuracy: "
          f"{features_then_logistic.score(X_test, y_test):.3f}")

    ray.shutdown()


if __name__ == "__main__":
    main()
