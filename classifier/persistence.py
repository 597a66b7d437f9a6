"""Save and load a fitted EnsembleCombiner with skops: no pickle, an explicit trusted-type list.

skops already trusts scikit-learn's estimators and numpy's types; beyond those a combiner
file may hold only the types in TRUSTED_TYPES. A file naming anything else (say `os.system`
in a tampered payload) is refused before any object is built, and so is a truncated or
corrupt one. Files are written under a temporary name in the same directory and renamed into
place, so a crash mid-write never leaves a half file under the real name.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import skops.io as sio
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from classifier import CombinerInputError
from classifier.combiner import EnsembleCombiner
from workers.layout import write_atomic

TRUSTED_TYPES = frozenset({
    f"{EnsembleCombiner.__module__}.{EnsembleCombiner.__qualname__}",
    "sklearn.utils._bunch.Bunch",  # VotingClassifier.named_estimators_
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",  # a fitted MLPClassifier's solver state
})


def save_combiner(estimator: EnsembleCombiner, path: str | Path) -> None:
    if not isinstance(estimator, EnsembleCombiner):
        raise CombinerInputError(f"save_combiner saves an EnsembleCombiner; got {type(estimator).__name__}.")
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        raise CombinerInputError("save_combiner needs a fitted combiner; call fit() first.") from None
    write_atomic(path, sio.dumps(estimator))


def load_combiner(path: str | Path) -> EnsembleCombiner:
    path = Path(path)
    if not path.is_file():
        raise CombinerInputError(f"no combiner file at {str(path)!r}.")
    try:
        found = set(sio.get_untrusted_types(file=path))
        unexpected = found - TRUSTED_TYPES
        if unexpected:
            raise CombinerInputError(f"{str(path)!r} holds types a combiner never contains: {sorted(unexpected)}; "
                                     "refusing to load it (tampered, or not written by save_combiner).")
        combiner = sio.load(path, trusted=sorted(found))
    except (zipfile.BadZipFile, json.JSONDecodeError, KeyError) as err:
        raise CombinerInputError(f"{str(path)!r} is not a readable combiner file (truncated or corrupt: "
                                 f"{err}).") from None
    if not isinstance(combiner, EnsembleCombiner):
        raise CombinerInputError(f"{str(path)!r} holds a {type(combiner).__name__}, not an EnsembleCombiner.")
    return combiner
