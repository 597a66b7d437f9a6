"""Whether the user's own code reaches the cluster's workers. `ray job submit --working-dir .` ships the
folder (and a runtime_env's `py_modules` ship modules); a driver that connects through Ray Client
(`ray://HOST:10001`) ships nothing unless its own `ray.init` names a runtime_env, so a custom autoencoder
from a local file would fail on the first member's actor, after Ray started. This check refuses such a
run before Ray starts, naming the two ways that work. Pure functions: no Ray call."""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path
from typing import Iterable, Optional

from workers.errors import InputError

OWN_PACKAGES = ("ensemble", "workers", "classifier")  # must be installed on the cluster anyway


def installed_locations() -> list[Path]:
    """Where installed packages and the standard library live: what a cluster's image has as well."""
    paths = sysconfig.get_paths()
    return [Path(paths[key]).resolve() for key in ("purelib", "platlib", "stdlib", "platstdlib") if key in paths]


def local_modules(class_paths: Iterable[str], installed: Optional[list[Path]] = None) -> list[tuple[str, str]]:
    """(module, file) of each `module:QualName` whose module comes from a file outside the installed
    packages (the user's folder, a checkout): code a Ray Client connection would not ship."""
    installed = installed_locations() if installed is None else installed
    found = {}
    for path in class_paths:
        module = path.partition(":")[0]
        if module.partition(".")[0] in OWN_PACKAGES or module in found or module == "__main__":
            continue  # ours; or a script's or notebook's class, which cloudpickle ships by value
        origin = getattr(sys.modules.get(module), "__file__", None)
        if origin and not any(Path(origin).resolve().is_relative_to(root) for root in installed):
            found[module] = origin
    return sorted(found.items())


def client_refusal(address: str, modules: list[tuple[str, str]], class_path: str) -> str:
    """The input error's text for a Ray Client address and local modules: the two ways that work."""
    host = address.removeprefix("ray://").rpartition(":")[0] or address.removeprefix("ray://")
    names = ", ".join(f"{module} ({origin})" for module, origin in modules)
    first = modules[0][0].partition(".")[0]
    return (f"--address {address} connects through Ray Client, which does not ship your code to the cluster, and "
            f"the autoencoder comes from {names}, which the cluster's workers cannot import. Submit the run as a "
            "Ray job from the folder that holds it, which ships that folder: ray job submit --address "
            f"http://{host}:8265 --working-dir . -- ensemble run --set model.autoencoder={class_path}. Or, from "
            f"Python, connect with the module shipped first: ray.init(\"{address}\", runtime_env={{\"py_modules\": "
            f"[{first}]}}), then ensemble.run(...). Or install the module on every node.")


def check_code_ships(address: Optional[str], ray_connected: bool, class_paths: list[str]) -> None:
    """InputError when this process would connect to `address` through Ray Client itself (a connection
    made already, by the user's own `ray.init` with a runtime_env, is theirs) and a class is local."""
    if not address or not address.startswith("ray://") or ray_connected:
        return
    modules = local_modules(class_paths)
    if modules:
        named = next(path for path in class_paths if path.partition(":")[0] == modules[0][0])
        raise InputError(client_refusal(address, modules, named))
