"""How a run ends early, at the lowest floor of the driver side: a member's own code failed
(`MemberFailed`), SIGTERM arrived (`Terminated`, raised while `stop_on_sigterm` lasts, so a stopped run
ends like an interrupted one: actors stopped, checkpoints kept, one paragraph and the resume command),
and the one-paragraph text every error is printed as. No Ray import: the CLI installs the SIGTERM
handler before Ray starts, and `ensemble` exports `MemberFailed` without loading Ray."""

from __future__ import annotations

import re
import signal
import textwrap
import threading
from contextlib import contextmanager
from typing import Iterator, Optional

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class MemberFailed(RuntimeError):
    """A member's own code (its autoencoder, or the disk its actor writes to) raised while it trained.

    `ensemble.run` raises it (the command line exits 1 with its message and the resume command);
    the member's checkpoints are kept.

    Parameters
    ----------
    name : str
        The member, `member_NN` (or `baseline`).
    epoch : int or None
        The epoch it failed in; None or 0: while its actor warmed up.
    cause : BaseException
        What the member's code raised.
    remote_traceback : str
        The traceback on the actor's side, without terminal colours.

    Examples
    --------
    >>> import ensemble
    >>> failed = ensemble.MemberFailed("member_02", 3, ValueError("shapes do not match"))
    >>> print(failed)
    member_02 failed in epoch 3: ValueError: shapes do not match
    >>> failed.name, failed.epoch, type(failed.cause).__name__
    ('member_02', 3, 'ValueError')
    """

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


COMMAND_INDENT = "    "  # a line of a message that starts with it is a command to copy: printed whole, never wrapped


def paragraph(text: str) -> str:
    """A message wrapped for a terminal, paths kept whole (no breaks at hyphens); a line indented by
    COMMAND_INDENT is a command to copy and stays one line however long (a break inside a quoted path
    would put a newline in the path that a pasted command names)."""
    return "\n".join(line if line.startswith(COMMAND_INDENT)
                     else textwrap.fill(line, width=100, break_on_hyphens=False, break_long_words=False)
                     for line in text.split("\n"))


def command_line(command: str) -> str:
    """`command` on a line of its own, as `paragraph` keeps it whole."""
    return f"\n{COMMAND_INDENT}{command}"


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (pre-emption, Kubernetes stopping the pod, `kill`). It is a KeyboardInterrupt:
    no handler swallows it, every `finally` (stopping the actors) runs, and Ray's blocking calls,
    which turn only KeyboardInterrupt into an interruption, stop for it (they raise a plain
    KeyboardInterrupt in its place, so `received_sigterm` remembers which signal it was)."""


_received: list[int] = []


def received_sigterm() -> bool:
    return signal.SIGTERM in _received


def _raise_terminated(signum, frame):
    _received.append(signum)
    raise Terminated()


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM raises Terminated in the main thread while this lasts. Installed after `ray.init`,
    whose core worker otherwise answers SIGTERM with a C++ stack dump and exit 15."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


