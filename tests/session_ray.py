"""Processes a test starts (the `ensemble` command, a script) that join the session's Ray instance
(`ray_instance` in tests/conftest.py) through RAY_ADDRESS instead of starting one of their own: where
Ray's start is not what a test checks, it costs 5-10 s a process on a 2-core machine."""

import os


def session_address(ray) -> str:
    """The GCS address of the Ray instance this process is connected to (`ray_instance`)."""
    return ray.get_runtime_context().gcs_address


def joining_env(ray) -> dict[str, str]:
    """Environment variables for a child process that joins this process's Ray instance."""
    return {"RAY_ADDRESS": session_address(ray)}


def joining_environ(ray) -> dict[str, str]:
    """This process's environment, plus RAY_ADDRESS of its Ray instance: for subprocess.run(env=...)."""
    return {**os.environ, **joining_env(ray)}


def as_for_users(environ: dict[str, str]) -> dict[str, str]:
    """`environ` without the suite's own opt-out of keeping idle actors (`ENSEMBLE_ACTOR_IDLE_S=0`, set by
    tests/conftest.py for its shared Ray): for a child process that owns its Ray, as a user's does."""
    from ensemble.scheduling.warm_actors import IDLE_VARIABLE
    return {key: value for key, value in environ.items() if key != IDLE_VARIABLE}
