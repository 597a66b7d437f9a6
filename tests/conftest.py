"""Shared fixtures: one Ray instance and two tiny trained runs for the whole session.

Every test that starts Ray carries the `slow` marker (checked at collection), so
`pytest -m "not slow"` is the fast inner loop.
"""

import os

# Ray must stay on loopback on this machine and in CI (binds every node and address to 127.0.0.1).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pytest  # noqa: E402

from tests.tiny import THREE_EPOCHS_SAVED, TINY  # noqa: E402


def pytest_collection_modifyitems(config, items):
    unmarked = [item.nodeid for item in items
                if "ray_instance" in getattr(item, "fixturenames", ()) and item.get_closest_marker("slow") is None]
    if unmarked:
        raise pytest.UsageError("tests that start Ray must be marked slow: " + ", ".join(unmarked))


@pytest.fixture(scope="session")
def ray_instance():
    """One local Ray instance for the whole session, CPUs given explicitly."""
    import ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_run(ray_instance, tmp_path_factory):
    """A finished tiny run (2 members, 1 epoch each, baseline 2 epochs) and every event it sent."""
    import ensemble
    from ensemble.config import build_config
    output = tmp_path_factory.mktemp("runs")
    events = []
    result = ensemble.run(build_config({}, TINY + [f"output={output}", "name=tiny"]), on_event=events.append)
    return result, events


@pytest.fixture(scope="session")
def saved_run(ray_instance, tmp_path_factory):
    """A finished tiny run whose members all trained three epochs, so analysis has epochs to choose from."""
    import ensemble
    from ensemble.config import build_config
    output = tmp_path_factory.mktemp("analysis")
    ensemble.run(build_config({}, THREE_EPOCHS_SAVED + [f"output={output}", "name=saved"]), on_event=lambda e: None)
    return output / "saved"
