"""Frozen encoders -> features -> a fitted combiner; no Ray import.

`classifier.features` extracts and stacks member activations, `classifier.combiner` is the
scikit-learn estimator over them, `classifier.persistence` saves and loads it without pickle.
The package's one exception type lives here so those modules can share it without importing
each other. `classifier/` sits above `workers/` (it takes the shared `InputError` and the atomic
write from there) and imports nothing from `ensemble/`.
"""

from workers.errors import InputError


class CombinerInputError(InputError):
    """Features, labels, member widths or a saved combiner that the combiner cannot use; the
    message names the problem. An `InputError`, so the CLI reports it as bad input (exit 2)."""
