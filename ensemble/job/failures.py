"""A run that ends early, described for people: what happened in one paragraph, what was kept, and
the command that continues it. Pure functions of the error and the run directory (tested without Ray).

Exit codes: 0 done, 1 a failure during the run, 2 bad input (before anything starts),
130 interrupted (Ctrl-C, SIGINT), 143 stopped (SIGTERM).
"""

from __future__ import annotations

import errno
import shlex
import shutil
from pathlib import Path
from typing import Optional

import ray.exceptions

from ensemble.errors import MemberFailed, Terminated, command_line, first_line, received_sigterm
from ensemble.storage import is_uri
from workers.layout import CONFIG_JSON, REPORT_JSON

EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 130, 143


class NeedsNewRun(RuntimeError):
    """A failure that resuming would repeat (the run diverged at its own train.lr, which --resume keeps):
    its message says what to change in a new run, and no resume command is offered."""


def diverged(what: str, lr: float) -> NeedsNewRun:
    return NeedsNewRun(f"{what} diverged (non-finite loss) at train.lr={lr:g}. --resume keeps the run's train.lr and "
                       f"would diverge again: start a new run with a lower rate, e.g. --set train.lr={lr / 10:g} "
                       "(or set train.grad_clip)")
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def describe(error: BaseException, run_location: Optional[str] = None) -> tuple[int, str]:
    """The exit code and one paragraph naming what went wrong (`run_location`: where the run writes)."""
    cause = error.cause if isinstance(error, MemberFailed) else error
    if isinstance(error, Terminated) or (isinstance(error, KeyboardInterrupt) and received_sigterm()):
        return EXIT_TERMINATED, ("The run was stopped by SIGTERM (a scheduler pre-empting it, Kubernetes stopping "
                                 "the pod, or `kill`); its actors were stopped.")
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "The run was interrupted (Ctrl-C); its actors were stopped."
    if isinstance(cause, OSError) and cause.errno in DISK_ERRNOS:
        where = f" by {error.name}" if isinstance(error, MemberFailed) else ""
        return EXIT_FAILURE, disk_problem(cause, where, run_location)
    if isinstance(error, NeedsNewRun):
        return EXIT_FAILURE, f"The run failed: {error}."
    if isinstance(error, MemberFailed):
        return EXIT_FAILURE, (f"{error}. This is the autoencoder's own code failing (or its data); fix it, or set "
                              "ENSEMBLE_DEBUG=1 to see the member's traceback.")
    if isinstance(error, ray.exceptions.OutOfDiskError):
        return EXIT_FAILURE, f"Ray's node ran out of disk: {first_line(error)}. Free some space and resume."
    if isinstance(error, (ray.exceptions.RaySystemError, ray.exceptions.NodeDiedError, ray.exceptions.RpcError,
                          ray.exceptions.LocalRayletDiedError, ray.exceptions.ActorUnavailableError,
                          ConnectionError)):
        return EXIT_FAILURE, (f"Ray's node, its GCS or the connection to the cluster was lost during the run "
                              f"({type(error).__name__}: {first_line(error)}).")
    return EXIT_FAILURE, f"The run failed: {type(error).__name__}: {first_line(error)}"


def disk_problem(error: OSError, where: str = "", run_location: Optional[str] = None) -> str:
    """Which path could not be written, why, and how much room is left there."""
    path = error.filename or run_location or "the run directory"
    reasons: dict[Optional[int], str] = {
        errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
        errno.EROFS: "the file system is read-only", errno.EFBIG: "the file grew past the size limit"}
    reason = reasons.get(error.errno, "permission was denied")
    free = free_space(path)
    room = f" ({free / 2**20:.1f} MiB free there)" if free is not None else ""
    return (f"Could not write {path}{where}: {reason}{room}. Free some space or choose another --output; the "
            "checkpoints already written are intact (each is renamed into place only when whole).")


def free_space(path: str | Path) -> Optional[int]:
    """Free bytes on the file system holding `path` (its nearest existing parent), or None."""
    path = Path(path)
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def next_step(run_dir: Optional[str], scheduled: bool = False) -> str:
    """What was kept and the command that continues the run (or starts it again, if nothing was saved)."""
    if run_dir is None:
        return "Nothing was written."
    command = f"ensemble run --resume {shlex.quote(run_dir)}"  # pasted into a shell: spaces, $(...) stay a path
    local = not is_uri(run_dir)
    if local and (Path(run_dir) / REPORT_JSON).is_file():
        return f"The run had finished; its results are in {run_dir}."
    if local and not (Path(run_dir) / CONFIG_JSON).is_file():
        return ("The run had not written anything yet; once the cause above is dealt with, the same command starts "
                "it afresh.")
    again = "Run the same command again (it has --resume-if-exists), or continue it with:" if scheduled \
        else "Continue it with:"
    return (f"Every checkpoint written so far is kept in {run_dir} (finished members are not trained again; the "
            f"others continue from their newest checkpoint). {again}{command_line(command)}")
