"""SIGTERM as an exception, so a stopped run ends like an interrupted one: actors stopped, checkpoints
kept, one paragraph and the resume command. No Ray import: the CLI installs it before Ray starts."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


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


