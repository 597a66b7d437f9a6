"""Eager parallel autoencoder ensembles on Ray: the public API.

    import ensemble
    result = ensemble.run(ensemble.EnsembleConfig(members=5))
    ensemble.load(result.run_dir).predict(images)
    ensemble.EagerEnsembleClassifier(members=3).fit(X, y).score(X_test, y_test)
    ensemble.sweep(ensemble.EnsembleConfig(), {"members": [1, 5]}, repeats=3, name="grid")

Layers: `ensemble` (the driver side) imports `workers` (the member side, lowest) and
`classifier`; neither imports `ensemble`. The heavy names (`run`, `load`, `RunResult`) load on
first use, so the CLI answers `--help` and refuses a bad config without first importing PyTorch,
Ray, scikit-learn and matplotlib (seconds: docs/performance.md, figures behind design choices).
"""

import importlib

from ensemble.shadowing import check_own_packages

check_own_packages()  # before the imports below: a user's workers.py or classifier.py gets one clear line

from ensemble.config import EnsembleConfig  # noqa: E402
from ensemble.errors import MemberFailed  # noqa: E402
from ensemble.report import RunReport  # noqa: E402
from workers.errors import InputError  # noqa: E402

__version__ = "0.1.0"  # the one place it is written: pyproject.toml reads it from here

_ON_FIRST_USE = {
    "EagerEnsembleClassifier": "ensemble.estimator",
    "RunResult": "ensemble.result",
    "load": "ensemble.result",
    "release_actors": "ensemble.scheduling.warm_actors",
    "run": "ensemble.job.driver",
    "serve": "ensemble.serving.application",
    "sweep": "ensemble.sweeps.runner",
    "Watch": "ensemble.observers.progress",
}
__all__ = ["EagerEnsembleClassifier", "EnsembleConfig", "InputError", "MemberFailed", "RunReport", "RunResult",
           "Watch", "__version__", "load", "release_actors", "run", "serve", "sweep"]


def __getattr__(name: str):
    if name not in _ON_FIRST_USE:
        raise AttributeError(f"module 'ensemble' has no attribute {name!r}")
    return getattr(importlib.import_module(_ON_FIRST_USE[name]), name)


def __dir__():
    return __all__
