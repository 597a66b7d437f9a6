"""Processes a test starts (the `ensemble` command, a script) that join the session's Ray instance
(`ray_instance` in tests/conftest.py) through RAY_ADDRESS instead of starting one of their own: where
Ray's start is not what a test checks, it costs 5-10 s a process on a 2-core machine."""

import os
from pathlib import Path


def session_address(ray) -> str:
    """The GCS address of the Ray instance this process is connected to (`ray_instance`)."""
    return ray.get_runtime_context().gcs_address


def joining_env(ray) -> dict[str, str]:
    """Environment variables for a child process that joins this process's Ray instance. The member
    actors this process's runs kept warm are ended first, as a user frees them before other Ray work
    (`ensemble.release_actors`): the child cannot take them, and they would hold the CPUs its own actors
    wait for until they expire."""
    import ensemble
    ensemble.release_actors()
    return {"RAY_ADDRESS": session_address(ray)}


def joining_environ(ray) -> dict[str, str]:
    """This process's environment, plus RAY_ADDRESS of its Ray instance: for subprocess.run(env=...)."""
    return {**os.environ, **joining_env(ray)}



def alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie, exited but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split(") ")[-1].startswith("Z"))
