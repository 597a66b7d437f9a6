"""The one exception type that means "the user gave us something we cannot use".

The CLI turns it into a one-paragraph message and exit code 2; anything else is a
runtime failure (exit 1).
"""


class InputError(ValueError):
    """Bad config, data, path or checkpoint: the message names the problem and the fix."""
