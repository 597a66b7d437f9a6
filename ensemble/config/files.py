"""Reading a config's keys: a YAML or JSON file (bounded, no duplicate keys, no alias bombs) and
`--set a.b=value` assignments, as plain data before it is validated (`sections.build_config`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import yaml

from workers.errors import InputError
from workers.layout import RUN_ID

MAX_CONFIG_BYTES = 1 << 20  # a config is a few hundred bytes; more than this is not one
MAX_VALUES = 100_000  # values a config may hold with its aliases (*name) written out


class LimitedLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses an alias bomb before building it: nine levels of ten aliases each
    are 10^9 values once copied out, enough to exhaust memory (docs/performance.md). The composed document is a
    graph whose aliases are shared nodes; its size with every alias written out is counted first."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        """A key given twice is an error naming it: YAML would keep the last silently."""
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                lines = f"lines {seen[key] + 1} and {key_node.start_mark.line + 1}"
                raise yaml.constructor.ConstructorError(
                    None, None, f"it sets the key {key!r} twice ({lines}); keep one", key_node.start_mark)
            seen.setdefault(key, key_node.start_mark.line)
        return super().construct_mapping(node, deep=deep)

    def get_single_data(self):
        node = self.get_single_node()
        if node is None:
            return None
        if expanded_size(node, {}, set()) > MAX_VALUES:
            raise yaml.YAMLError(f"it holds more than {MAX_VALUES:,} values once its aliases (*name) are written "
                                 "out; a config is far smaller (is it an alias bomb?)")
        return self.construct_document(node)


def expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """How many values `node` holds with every alias written out (each shared node counted once per use)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:  # an alias inside its own anchor: a structure without end
        raise yaml.YAMLError("an alias refers to the value that contains it (a recursive structure)")
    open_nodes.add(key)
    children = ([part for pair in node.value for part in pair] if isinstance(node, yaml.MappingNode)
                else node.value if isinstance(node, yaml.SequenceNode) else [])
    sizes[key] = 1 + sum(expanded_size(child, sizes, open_nodes) for child in children)
    open_nodes.discard(key)
    return sizes[key]


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file {str(path)!r} does not exist or is not a file.")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise InputError(f"config file {str(path)!r} is {path.stat().st_size:,} bytes, more than a config can be "
                         f"({MAX_CONFIG_BYTES:,}); is it the right file?")
    try:
        text = path.read_text()
        raw = json.loads(text, object_pairs_hook=_unique_keys) if path.suffix == ".json" else \
            yaml.load(text, Loader=LimitedLoader)
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise InputError(f"config file {str(path)!r} is not valid YAML or JSON: {err}") from None
    except RecursionError:
        raise InputError(f"config file {str(path)!r} is nested too deeply to be a config.") from None
    if raw is None:  # an empty file is more likely the wrong file than a wish for the defaults
        raise InputError(f"config file {str(path)!r} is empty; drop --config to run with the defaults, or put the "
                         "keys to change in it (for example `members: 8`).")
    if not isinstance(raw, dict):
        raise InputError(f"config file {str(path)!r} must hold a mapping of keys, not {type(raw).__name__}.")
    raw.pop(RUN_ID, None)  # a run's config.json, given again: its id names that run, and a new run draws its own
    return raw


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    twice = next((key for key in keys if keys.count(key) > 1), None)
    if twice is not None:
        raise ValueError(f"it sets the key {twice!r} twice; keep one")
    return dict(pairs)


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one `a.b=value`; the value is parsed as YAML (numbers, booleans, lists, null)."""
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise InputError(f"--set {assignment!r} must look like section.key=value, for example train.lr=0.01.")
    try:
        value = yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        value = text
    set_key(raw, key, value, f"--set {assignment!r}")


def nested(keys: dict[str, Any]) -> dict[str, Any]:
    """Keys as a YAML file holds them, with dotted keys (`{"train.epochs": 2}`) made sections."""
    raw: dict[str, Any] = {}
    for key, value in keys.items():
        set_key(raw, str(key), value, f"config key {key!r}")
    return raw


def set_key(raw: dict[str, Any], key: str, value: Any, where: str) -> None:
    """raw[a][b] = value for the dotted key `a.b`, creating sections as needed."""
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise InputError(f"{where}: {part!r} is a value, not a section.")
        node = child
    node[leaf] = value


def with_assignments(raw: dict[str, Any], overrides: Sequence[str] = ()) -> dict[str, Any]:
    """A deep copy of `raw` with each `--set a.b=value` applied; a value a config cannot hold is named."""
    try:
        raw = json.loads(json.dumps(raw))  # deep copy; also rejects non-JSON values early
    except (TypeError, ValueError):
        raise InputError(_not_json(raw)) from None
    for assignment in overrides:
        apply_override(raw, assignment)
    return raw


def _not_json(raw: Any, key: str = "") -> str:
    """Names the first value a config cannot hold (a class, an object): configs are plain data."""
    items = raw.items() if isinstance(raw, dict) else enumerate(raw) if isinstance(raw, (list, tuple)) else None
    for name, value in items or []:
        found = _not_json(value, f"{key}.{name}" if key else str(name))
        if found:
            return found
    if items is not None or raw is None or isinstance(raw, (str, bool, int)):
        return ""
    if isinstance(raw, float) and raw == raw and abs(raw) != float("inf"):
        return ""
    hint = (" Pass a class as run(autoencoder=...) or baseline_autoencoder=..., or name it module:QualName."
            if "autoencoder" in key else "")
    return (f"config key {key!r} has value {raw!r}, which a config cannot hold: give numbers, strings, booleans, "
            f"lists, dicts or null.{hint}")
