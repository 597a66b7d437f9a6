"""The configuration reference, generated from the fields: the docs' table and `ensemble config`."""

from __future__ import annotations

import json

from ensemble.config.sections import leaf_fields


def config_reference() -> list[tuple[str, str, str]]:
    """(key, default, description) for every leaf key, for the docs' reference table (docs/guide/configuration.md)."""
    rows = []
    for key, field in leaf_fields():
        default = field.get_default(call_default_factory=True)
        shown = list(default) if isinstance(default, tuple) else default
        rows.append((key, json.dumps(shown), field.description or ""))
    return rows


def reference_markdown() -> str:
    """The config reference table of docs/guide/configuration.md, generated from the field descriptions."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    lines += [f"| `{key}` | `{default}` | {description} |" for key, default, description in config_reference()]
    return "\n".join(lines)


def reference_text(width: int = 100) -> str:
    """`ensemble config`: every key with its default and meaning, grouped by section, for a console."""
    import textwrap
    rows = config_reference()
    key_width = max(len(key) + len(default) + 3 for key, default, _ in rows)
    lines: list[str] = []
    section = None
    for key, default, description in rows:
        head = key.split(".", 1)[0] if "." in key else ""
        if head != section:
            lines += ([""] if lines else []) + [f"[{head or 'top level'}]"]
            section = head
        left = f"{key} = {default}".ljust(key_width)
        body = textwrap.wrap(description, max(width - key_width - 2, 30)) or [""]
        lines += [f"{left}  {body[0]}"] + [" " * (key_width + 2) + more for more in body[1:]]
    return "\n".join(lines)
