"""The one exception type that means "the user gave us something we cannot use".

The CLI turns it into a one-paragraph message and exit code 2; anything else is a runtime
failure (exit 1). It lives in the lowest layer so members, the combiner and the driver all
raise the same type; the public API exports it as `ensemble.InputError`. Here too: the one filter
for library text that advises unpickling.
"""

import re


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


# Libraries' advice to unpickle a file they refused (numpy: "load it unsafely using the `allow_pickle=` keyword
# argument or `pickle.load()`"; PyTorch: "Re-running `torch.load` with `weights_only` set to `False` will likely
# succeed"). Unpickling a file runs its code, and a file we refused came from somewhere we do not trust.
_UNPICKLING_ADVICE = re.compile(r"allow_pickle|pickle\.load|weights_only|unsafe|arbitrary code|trust|safe_globals|"
                                r"allowlist|can still be loaded", re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_GLOBAL = re.compile(r"GLOBAL\s+([\w.]+)")


def without_unpickling_advice(error: BaseException) -> str:
    """A library's error text without its sentences that advise unpickling: the rest (what was refused)
    kept, or the error's type alone when nothing else is left."""
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(_ANSI.sub("", str(error)).split()))
    kept = [s for s in sentences if s and not _UNPICKLING_ADVICE.search(s)
            and not s.lower().startswith(("check the documentation of torch.load", "in pytorch 2.6"))]
    return " ".join(kept) or type(error).__name__


def refused_global(error: BaseException) -> str:
    """What a refused pickle asked to import (`GLOBAL os.system`), as a weights-only loader reports it;
    "objects other than tensors and plain values" when it does not say."""
    found = _GLOBAL.search(str(error))
    return f"it asks for {found.group(1)}" if found else "it holds objects other than tensors and plain values"
