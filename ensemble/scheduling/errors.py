"""A member's own code failed: the error scheduling raises for it, with the member and the epoch."""

from __future__ import annotations

import re
from typing import Optional

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class MemberFailed(RuntimeError):
    """A member's own code (its autoencoder, or the disk its actor writes to) raised while it trained."""

    def __init__(self, name: str, epoch: Optional[int], cause: BaseException, remote_traceback: str = ""):
        self.name, self.epoch, self.cause = name, epoch, cause
        self.remote_traceback = plain(remote_traceback or "")
        when = f"in epoch {epoch}" if epoch else "while its actor warmed up (one training step on one batch)"
        super().__init__(f"{name} failed {when}: {type(cause).__name__}: {first_line(cause)}")


def plain(text: str) -> str:
    """Without terminal colour codes (Ray colours its tracebacks)."""
    return _ANSI.sub("", text)


def first_line(error: BaseException) -> str:
    lines = plain(str(error)).strip().splitlines()
    return lines[0][:300] if lines else "(no message)"
