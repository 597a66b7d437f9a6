"""What a bad key or value is told: one sentence per problem key, with "did you mean" for near misses.

Generic over the keys: which keys exist is the sections' knowledge (`sections.known_keys`), and
`sections.describe_validation_error` / `did_you_mean` pass them in."""

from __future__ import annotations

import difflib
from typing import Any, Callable, Mapping

from pydantic import ValidationError


def describe(err: ValidationError, name: Callable[[str], str], what: str, suggest: Callable[[list[str]], str]) -> str:
    """One sentence per problem key; `name` says how to call a dotted key (the estimator names its parameter),
    `suggest` what an unknown key (or the dotted keys it stood for) may have meant."""
    wanted: dict[str, list[str]] = {}  # key -> what it should have been ("" key: a rule across keys)
    given: dict[str, Any] = {}
    for item in err.errors():
        # a Union's branches add their kind to the location (literal['auto'], constrained-int): not a key
        key = ".".join(str(part) for part in item["loc"] if str(part).isidentifier())
        unknown = item["type"] == "extra_forbidden"
        wanted.setdefault(key, []).append("" if unknown else _problem(item))
        given[key] = item.get("input")
    sentences = []
    for key, messages in wanted.items():
        if not key:  # a rule across keys (min_members and members)
            sentences += messages
        elif messages == [""]:
            sentences.append(f"unknown {name(key)}{suggest(_leaf_keys(key, given[key]))}")
        else:  # a Union's branches each say what they wanted: either would do
            sentences.append(f"{name(key)} has value {given[key]!r}: {' or '.join(messages)}")
    return f"Invalid {what}: " + "; ".join(sentences) + "."


def _problem(item: Mapping[str, Any]) -> str:
    """What pydantic says is wrong with one value; a choice lists its allowed values once."""
    expected = (item.get("ctx") or {}).get("expected")
    if expected and item["type"] == "literal_error":
        return f"allowed: {expected}"
    return item["msg"].removeprefix("Value error, ")


def _leaf_keys(key: str, value: Any) -> list[str]:
    """The dotted keys an unknown key stood for: `trian: {epochs: 3}` is `trian.epochs`, which
    is nearer to `train.epochs` than `trian` is to any section."""
    if isinstance(value, dict) and value:
        return [leaf for child, inner in value.items() for leaf in _leaf_keys(f"{key}.{child}", inner)]
    return [key]


def closest(keys: str | list[str], known: list[str]) -> str:
    """" (did you mean 'train.epochs'?)" for a mistyped key (or any of the dotted keys it stood
    for), by difflib's similarity: to a whole known key, else its last part to a known key's last
    part (`epochs` alone is `train.epochs`); "" when none is near. One small function, so every
    place that refuses a key (--set, config files, Python, the estimator's settings) says the same."""
    keys = [keys] if isinstance(keys, str) else keys
    last: dict[str, str] = {}  # a known key's last part -> the first key ending in it
    for name in known:
        last.setdefault(name.rsplit(".", 1)[-1], name)
    for key in keys:
        dotted = "." in key  # a dotted key is near a key in a section, not near the section itself
        close = difflib.get_close_matches(key, [k for k in known if "." in k or not dotted], n=1, cutoff=0.75)
        close = close or [last[k] for k in difflib.get_close_matches(key.rsplit(".", 1)[-1], last, n=1, cutoff=0.8)]
        if close:
            return f" (did you mean {close[0]!r}?)"
    return ""
