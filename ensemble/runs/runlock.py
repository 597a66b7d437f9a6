"""One writer per run directory: a lock file naming its holder (host, pid, start time, command).

Two commands writing one run (`ensemble run --resume` started twice, a scheduler's retry beside the
first try, `ensemble select` twice) would interleave their files: a report from one, a progress.csv
missing rows of the other. So every command that writes a run directory holds its lock while it
writes. The lock is a file created with O_EXCL (atomic on local disks and NFS), so exactly one
process creates it; it is removed on every exit that runs Python's `finally` (success, an error,
Ctrl-C, SIGTERM, which `signals` turns into an exception). A process that vanished without that
(SIGKILL, a crash, a reboot) leaves the file behind: a later command on the same host sees that the
pid it names is gone, takes the lock over and says so. A holder on another host cannot be checked
from here, so its lock stands until someone removes it (the message says which file).

A lock file this program did not write as it writes one (a pid that is not a number, a start time
past any clock, a symbolic link) proves nothing about a holder: it is an InputError naming the file
and how to clear it, never taken over and never "try again", which would not help.

Decisions (`is_stale`, `holder_text`, `parse_holder`) are pure functions; the file work is
`acquire`/`release`.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from workers.errors import InputError
from workers.layout import WRITER_LOCK


@dataclass(frozen=True)
class Holder:
    """Who writes a run directory: the process, where, since when (Unix seconds), doing what."""
    host: str
    pid: int
    started: float
    command: str = ""


def current_holder() -> Holder:
    return Holder(socket.gethostname(), os.getpid(), time.time(), command_line())


def command_line() -> str:
    """This process's command, as a person would recognise it: `ensemble run ...` for the CLI (also
    `python -m ensemble`), else the program's name (`pytest`, `train.py`) and its arguments."""
    program = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    name = program.parent.name if program.name == "__main__.py" else program.name
    return " ".join([name, *sys.argv[1:]])[:200]


def holder_text(holder: Holder) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder.started))
    what = f" ({holder.command!r})" if holder.command else ""
    return f"pid {holder.pid} on host {holder.host!r}, started {when}{what}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def is_stale(holder: Holder, host: str, alive: Callable[[int], bool] = pid_alive) -> bool:
    """A lock is stale only when it is provably left over: its holder ran on this host and that
    pid is gone. Another host's pid means nothing here, so its lock is respected."""
    return holder.host == host and not alive(holder.pid)


MAX_PID = 2**22  # Linux's largest (pid_max); other systems stay below it too
LATEST_START = 4e9  # Unix seconds in the year 2096: a start time past it was not written by a clock


def parse_holder(raw: object) -> Holder:
    """The holder a lock file's JSON names, each field checked; a ValueError saying which field is wrong."""
    if not isinstance(raw, dict) or set(raw) - {"host", "pid", "started", "command"}:
        raise ValueError("it is not a JSON object of host, pid, started and command")
    host, pid, started, command = (raw.get(key) for key in ("host", "pid", "started", "command"))
    if not isinstance(host, str) or not host:
        raise ValueError(f"its host {host!r} is not a host name")
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid <= MAX_PID:
        raise ValueError(f"its pid {pid!r} is not a process id")
    if isinstance(started, bool) or not isinstance(started, (int, float)) or not 0 <= started <= LATEST_START:
        raise ValueError(f"its start time {started!r} is not a Unix time")
    if not isinstance(command, (str, type(None))):
        raise ValueError(f"its command {command!r} is not text")
    return Holder(host, pid, float(started), command or "")


def read_holder(path: Path) -> Optional[Holder]:
    """The holder a lock file names; None when it is gone. A lock this program would not have written is
    an InputError naming the file and how to clear it."""
    clear = (f"If no other command writes this run (check the processes on the machines that write it), delete "
             f"{str(path)!r}; retrying does not clear it.")
    if path.is_symlink():  # O_EXCL never creates through a link: a link is not our lock, even one to nowhere
        raise InputError(f"the lock file {str(path)!r} is a symbolic link (to {os.readlink(path)!r}), not a lock "
                         f"this program writes. {clear}")
    try:
        return parse_holder(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise InputError(f"the lock file {str(path)!r} is not a lock this program writes ({err}). {clear}") from None


def acquire(run_dir: Path, me: Holder, notice: Callable[[str], None]) -> None:
    """Create the lock file naming `me`; a stale one is taken over (with a notice), a live one is
    an InputError that names its holder."""
    path = run_dir / WRITER_LOCK
    for _ in range(3):  # a stale lock removed by a competitor between our tries: look again
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileNotFoundError:
            raise InputError(f"run directory {str(run_dir)!r} does not exist.") from None
        except FileExistsError:
            holder = read_holder(path)
            if holder is None:
                continue
            if not is_stale(holder, me.host):
                raise InputError(f"run directory {str(run_dir)!r} is being written by another command: "
                                 f"{holder_text(holder)}. One command writes a run at a time; wait for it to end "
                                 f"(or stop it). If that process is gone, delete {str(path)!r}.") from None
            notice(f"note: took over the lock of {str(run_dir)!r} left by {holder_text(holder)}, which is no "
                   "longer running.")
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(asdict(me)))
            handle.flush()
            os.fsync(handle.fileno())
        return
    raise InputError(f"could not take the lock {str(path)!r}: other commands took it and let it go three times "
                     "while this one tried; try again when they have finished.")


def release(run_dir: Path, me: Holder) -> None:
    """Remove the lock, if it is still ours (a lock taken over from us is not ours to remove)."""
    path = run_dir / WRITER_LOCK
    try:
        if read_holder(path) == me:
            path.unlink()
    except (InputError, OSError):
        pass


@contextmanager
def run_lock(run_dir: str | Path, notice: Optional[Callable[[str], None]] = None) -> Iterator[Holder]:
    """Hold the run directory's lock for the length of a `with` (the directory must exist).
    `notice`: where the line about a taken-over lock goes (default: stderr)."""
    run_dir, me = Path(run_dir), current_holder()
    acquire(run_dir, me, notice or (lambda line: print(line, file=sys.stderr, flush=True)))
    try:
        yield me
    finally:
        release(run_dir, me)
