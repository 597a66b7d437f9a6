"""Environment variables set for the length of a `with`: settings a library reads from the process's
environment when it acts (MLflow's HTTP retries), or a process started meanwhile inherits (a local Ray
instance's Serve settings)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, Mapping


@contextmanager
def environment(values: Mapping[str, str], override: bool = True) -> Iterator[None]:
    """`values` in os.environ for the `with`, every key as it was afterwards; `override=False` leaves a
    key that is set already (the user's own setting) as it is."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update({key: value for key, value in values.items() if override or before[key] is None})
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
