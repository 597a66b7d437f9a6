"""`ensemble run` from the command line runs its driver in a child process and watches it.

Ray ends a driver at once, with no Python cleanup, when the node's raylet or GCS dies under it
("Exiting because the Raylet IPC connection failed"); an out-of-memory kill does the same. Only a
process outside the driver can then still say what happened and how to continue. So the command
line's process starts the driver as a child, forwards SIGINT and SIGTERM to it, and passes its exit
code on. A child that handled its own failure (its paragraph is printed) marks a file first; one
that ended without marking it died abruptly, and this process prints the paragraph instead.
No Ray and no torch are imported here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

from ensemble.errors import paragraph

CHILD_ENV = "ENSEMBLE_DRIVER_MARKER"  # set in the child: where it marks a failure it reported itself
EXIT_FAILURE, EXIT_BAD_INPUT = 1, 2


def is_child() -> bool:
    return CHILD_ENV in os.environ


def mark_reported() -> None:
    """In the child: its failure is reported, the watching process need not say more."""
    if is_child():
        Path(os.environ[CHILD_ENV]).touch()


def run_driver_in_child(argv: list[str], run_location: Optional[str], scheduled: bool) -> int:
    """Run `python -m ensemble <argv>` as the driver and return its exit code; if it died without
    reporting, print why it probably did and how to continue, and return 1."""
    fd, marker = tempfile.mkstemp(prefix="ensemble-reported-")
    os.close(fd)
    os.unlink(marker)
    # its own session: a terminal's Ctrl-C reaches only this process, which forwards exactly one SIGINT
    child = subprocess.Popen([sys.executable, "-m", "ensemble", *argv], env={**os.environ, CHILD_ENV: marker},
                             start_new_session=True, preexec_fn=_end_with_parent)
    forward = {sig: signal.signal(sig, lambda signum, frame: child.send_signal(signum))
               for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = child.wait()
    finally:
        for sig, previous in forward.items():
            signal.signal(sig, previous)
    reported = os.path.exists(marker)
    if reported:
        os.unlink(marker)
    if reported or code in (0, EXIT_BAD_INPUT):
        return code
    from ensemble.job.failures import next_step  # only now: it imports Ray's exception types
    print(paragraph(f"error: {abrupt_end(code)} {next_step(run_location, scheduled)}"), file=sys.stderr, flush=True)
    return EXIT_FAILURE


def abrupt_end(code: int) -> str:
    """Why a driver that did not report its own failure ended, from its exit code."""
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
    return (f"The run's driver process {how} without finishing or reporting why. Usually Ray's own processes on "
            "this node (the raylet or the GCS) died, or the connection to the cluster was lost, and Ray ended the "
            "driver at once (its last messages are above); an out-of-memory kill looks the same.")


def _end_with_parent() -> None:
    """In the child, before it starts: SIGTERM when this process dies (Linux), so it is never orphaned."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
