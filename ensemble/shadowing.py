"""A user's own `workers.py` or `classifier.py` next to their script must not break `import ensemble`
with "No module named 'workers.errors'; 'workers' is not a package": Python puts the script's directory
first on the import path, so such a file hides our package of the same name. This check runs before
`ensemble` imports either package and says, in one line, which file to rename."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Optional

# The two top-level packages `ensemble` imports besides itself, each with files that tell it apart from
# a user's package of the same name. Installed, they sit beside `ensemble/`; shipped to a Ray job as
# `py_modules`, each lands in a directory of its own, so the files decide there.
OWN_PACKAGES = {"workers": ("py.typed", "errors.py", "events.py", "checkpoints.py"),
                "classifier": ("py.typed", "combiner.py", "features.py")}


def where_it_resolves(name: str) -> Optional[Path]:
    """The file or directory `import name` gives (already imported, or as the import system would find
    it now); None when nothing is found, so Python's own ImportError says so as usual."""
    module = sys.modules.get(name)
    if module is not None:
        origin = getattr(module, "__file__", None)
        locations = list(getattr(module, "__path__", []) or [])
    else:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        origin, locations = spec.origin, list(spec.submodule_search_locations or [])
    if origin and origin not in ("namespace", "built-in", "frozen"):
        return Path(origin)
    return Path(locations[0]) if locations else None


def shadowing_message(name: str, found: Path, home: Path) -> Optional[str]:
    """None when `found` is our package `name` in `home` (the directory holding `ensemble/`), else the
    one-line error naming what to rename."""
    ours = home / name / "__init__.py"
    if found.resolve() == ours.resolve():
        return None
    if found.name == "__init__.py" and all((found.parent / marker).is_file() for marker in OWN_PACKAGES[name]):
        return None  # our package, from another directory of the path (py_modules, a second checkout)
    culprit = found.parent if found.name == "__init__.py" else found  # a package: name its directory
    return (f"{culprit} shadows the '{name}' package that eager-ensembles installs, so `import ensemble` "
            f"cannot work: rename that {'directory' if culprit.is_dir() else 'file'} (or move it off the "
            f"import path, e.g. out of your script's directory).")


def check_own_packages() -> None:
    """Raise ImportError (one line) when `workers` or `classifier` would not import our own package."""
    home = Path(__file__).resolve().parent.parent
    for name in OWN_PACKAGES:
        found = where_it_resolves(name)
        message = shadowing_message(name, found, home) if found is not None else None
        if message:
            raise ImportError(message, name=name, path=str(found))
