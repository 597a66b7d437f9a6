"""Eager parallel autoencoder ensembles on Ray: public API.

Names are imported on first use, so `workers/` (which shares `ensemble.errors` and
`ensemble.eager` with the driver) can import this package without pulling in the driver.
"""

import importlib

_PUBLIC = {
    "EnsembleConfig": "ensemble.config",
    "InputError": "ensemble.errors",
    "RunReport": "ensemble.report",
    "RunResult": "ensemble.result",
    "load": "ensemble.result",
    "run": "ensemble.driver",
    "serve": "ensemble.serving",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'ensemble' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)


def __dir__():
    return __all__
