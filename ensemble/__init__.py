"""Eager parallel autoencoder ensembles on Ray: the public API.

    import ensemble
    result = ensemble.run(ensemble.EnsembleConfig(members=5))
    ensemble.load(result.run_dir).predict(images)

Layers: `ensemble` (the driver side) imports `workers` (the member side, lowest) and
`classifier`; neither imports `ensemble`. The heavy names (`run`, `load`, `RunResult`) load on
first use, so the CLI answers `--help` and refuses a bad config in a fraction of a second
instead of first spending about 4 s importing PyTorch, Ray, scikit-learn and matplotlib.
"""

import importlib

from ensemble.config import EnsembleConfig
from ensemble.report import RunReport
from workers.errors import InputError

_ON_FIRST_USE = {
    "RunResult": "ensemble.result",
    "load": "ensemble.result",
    "run": "ensemble.job.driver",
    "Watch": "ensemble.job.console",
}
__all__ = ["EnsembleConfig", "InputError", "RunReport", "RunResult", "Watch", "load", "run"]


def __getattr__(name: str):
    if name not in _ON_FIRST_USE:
        raise AttributeError(f"module 'ensemble' has no attribute {name!r}")
    return getattr(importlib.import_module(_ON_FIRST_USE[name]), name)


def __dir__():
    return __all__
