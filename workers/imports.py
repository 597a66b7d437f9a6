"""How every command and the Python API find a class the user names as `module:QualName`: the one
rule, in one place. The current directory comes first on the import path, as `python -m` and the
interactive interpreter have it; the `ensemble` console script's own path starts at its bin
directory instead, so without this `ensemble run --set model.autoencoder=mymods:AE` (whose driver
runs as `python -m ensemble`) worked while `ensemble select RUN --autoencoder mymods:AE` in the
same folder did not. Whether a run directory's recorded class may be imported at all is the trust
rule's business (`workers.models.trusts`), not this file's."""

from __future__ import annotations

import os
import pkgutil
import sys
from typing import Any

from workers.errors import InputError


def current_directory_on_path() -> None:
    """The current directory first on `sys.path`, unless it is there already ('' is the directory
    Python runs in). Ray workers a local Ray instance starts afterwards inherit the driver's path."""
    here = os.getcwd()
    if not any(os.path.abspath(entry or os.curdir) == here for entry in sys.path):
        sys.path.insert(0, here)


def resolve_here(path: str) -> Any:
    """What `module:QualName` names, found as `python -m` finds it (see the module's docstring).
    An InputError that says what to do, from the command line and from Python, when it is not found."""
    current_directory_on_path()
    try:
        return pkgutil.resolve_name(path)
    except Exception as err:  # the module's own import-time code may raise anything
        raise not_importable(path, err) from None


def not_importable(path: str, error: BaseException) -> InputError:
    module, _, qualname = path.partition(":")
    name, top = qualname.rpartition(".")[2], module.partition(".")[0]
    if top == "__main__":  # a class of a script run as a program, or of a notebook: it lives in that process
        command_line = f"save the class in a module file (mymodels.py) and name it mymodels:{name}"
    else:
        command_line = (f"run the command in the folder that holds {top}.py (or the {top}/ package), or add that "
                        "folder to PYTHONPATH (PYTHONPATH=/path/to/folder ensemble ...), or name the class with "
                        "--autoencoder MODULE:NAME")
    return InputError(
        f"the autoencoder {path} cannot be imported here ({type(error).__name__}: {error}). On the command line: "
        f"{command_line}. From Python: pass the class itself (autoencoder={name}); a class defined in a notebook "
        "or in a script run as a program exists only in that process.")
