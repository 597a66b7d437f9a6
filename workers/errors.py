"""The one exception type that means "the user gave us something we cannot use".

The CLI turns it into a one-paragraph message and exit code 2; anything else is a runtime
failure (exit 1). It lives in the lowest layer so members, the combiner and the driver all
raise the same type; the public API exports it as `ensemble.InputError`.
"""


class InputError(ValueError):
    """Bad config, data, path or checkpoint: the message names the problem and the fix."""
