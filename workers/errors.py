"""The one exception type that means "the user gave us something we cannot use".

The CLI turns it into a one-paragraph message and exit code 2; anything else is a runtime
failure (exit 1). It lives in the lowest layer so members, the combiner and the driver all
raise the same type; the public API exports it as `ensemble.InputError`.
"""


class InputError(ValueError):
    """Bad config, data, path or checkpoint: the message names the problem and the fix.

    The command line prints the message as one paragraph and exits with code 2, without a
    traceback; from Python, catch it as `ensemble.InputError` (a `ValueError`).

    Examples
    --------
    >>> import ensemble
    >>> try:
    ...     ensemble.EnsembleConfig(train={"lr": -1})
    ... except ensemble.InputError as err:
    ...     print(err)
    Invalid configuration: config key 'train.lr' has value -1: Input should be greater than 0.
    >>> issubclass(ensemble.InputError, ValueError)
    True
    """
