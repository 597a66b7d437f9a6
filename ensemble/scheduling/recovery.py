"""Failure decisions as pure functions: restart a dead member, and go on without lost ones?"""

from __future__ import annotations

from typing import Sequence


def should_restart(restarts_so_far: int, max_restarts: int) -> bool:
    """A member whose actor died is restarted (it resumes from its newest valid checkpoint)
    until it has used up `max_restarts`."""
    return restarts_so_far < max_restarts


def too_few_members(usable: Sequence[str], lost: dict[str, str], min_members: int) -> str | None:
    """Why the run cannot go on, or None: fewer usable members than `min_members`."""
    if len(usable) >= min_members:
        return None
    why = "; ".join(f"{name}: {reason}" for name, reason in lost.items()) or "none lost"
    return (f"only {len(usable)} usable member(s) remain, fewer than min_members={min_members} "
            f"(lost or excluded: {why}). Checkpoints are kept; fix the cause and run "
            "`ensemble run --resume RUN_DIR`.")
