"""Frozen encoders -> features -> a fitted combiner; no Ray import.

`classifier.features` extracts and stacks member activations, `classifier.combiner` is the
scikit-learn estimator over them, `classifier.persistence` saves and loads it without pickle.
The package's one exception type and the combiner's names (kinds, heads, the old alias) live
here, so those modules and the config can share them without importing each other or
scikit-learn. `classifier/` sits above `workers/` (it takes the shared `InputError` and the
atomic write from there) and imports nothing from `ensemble/`.
"""

from workers.errors import InputError


class CombinerInputError(InputError):
    """Features, labels, member widths or a saved combiner that the combiner cannot use; the
    message names the problem. An `InputError`, so the CLI reports it as bad input (exit 2)."""

KINDS = ("concat", "soft-vote", "hard-vote")
HEADS = ("logistic", "mlp")
KIND_ALIASES = {"stack": "concat"}  # the earlier name, in older configs, reports and saved combiners


def combiner_kind(name):
    """The combiner kind `name` means: the name itself, or the kind an old alias stands for."""
    return KIND_ALIASES.get(name, name) if isinstance(name, str) else name
