"""Shared fixtures: one Ray instance and two tiny trained runs for the whole session.

Every test that starts Ray carries the `slow` marker (checked at collection), so
`pytest -m "not slow"` is the fast inner loop.
"""

import os

# Ray must stay on loopback on this machine and in CI (binds every node and address to 127.0.0.1).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

# Tests send Ctrl-C (SIGINT) to the commands they start. A shell that starts a command in the background
# without job control (`bash -c "... &"`, `nohup ... &`) makes it ignore SIGINT, and every process it
# starts inherits that, so `ensemble serve` would never see the test's Ctrl-C. A handler here (rather than
# the ignore) is reset to the default in each child at exec, so children take Ctrl-C as from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

from tests.tiny import THREE_EPOCHS_SAVED, TINY  # noqa: E402

# Files whose tests start a cluster of their own that other Ray processes on the machine could reach or
# collide with (`ray start --head` and `ray.cluster_utils.Cluster` record their address in /tmp/ray and take
# Ray's default agent ports): under pytest-xdist they share one worker, so two never run at once.
CLUSTER_FILES = {"test_wide_cluster.py", "test_storage.py", "test_scale_from_zero.py"}


def xdist_group_of(path) -> str:
    """The scope a test file runs in: each file stays on one worker, so its module-scoped fixtures (a
    trained run, a serving app) are made once; the cluster files share one, and run one after another."""
    return "clusters" if Path(path).name in CLUSTER_FILES else Path(path).as_posix()


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist's: without it installed, never called
def pytest_xdist_make_scheduler(config, log):
    """xdist's scope scheduling with `xdist_group_of` as the scope. (Its `--dist loadgroup` puts the group
    into each test's id, which pytest 9.2's test ids no longer take: every test became a group of its own.)"""
    from xdist.scheduler import LoadScopeScheduling

    class FileGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group_of(nodeid.split("::")[0])
    return FileGroups(config, log)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist's: without it installed, never called
def pytest_xdist_auto_num_workers(config):
    """`-n auto`: two workers on any machine. Each worker holds its own session Ray instance (2 CPUs) and
    runs; more would add Ray instances faster than they add speed on the 2-core machines CI runs on."""
    return 2


def pytest_collection_modifyitems(config, items):
    items[:] = longest_groups_first(items)
    unmarked = [item.nodeid for item in items
                if "ray_instance" in getattr(item, "fixturenames", ()) and item.get_closest_marker("slow") is None]
    if unmarked:
        raise pytest.UsageError("tests that start Ray must be marked slow: " + ", ".join(unmarked))
    gpu = [item for item in items if item.get_closest_marker("gpu") is not None]
    if gpu:
        import torch
        if not torch.cuda.is_available():
            for item in gpu:
                item.add_marker(pytest.mark.skip(reason="needs CUDA (benchmarks/device_check.sh runs it on a GPU)"))


# Seconds the heaviest files' tests took, one after another, on the 2-core CI machine (2026-12-07; the list in
# docs/development.md; test_tracker.py's without building the MLflow server's venv, which .ci/run does beside):
# only the order the groups start in depends on them, so a stale figure costs time at the end of the run, never
# a result. A file not listed is costed by its tests.
FILE_SECONDS = {
    "test_hostile_inputs.py": 221, "test_examples.py": 191, "test_real_failures.py": 145, "test_bench.py": 118,
    "test_serving.py": 106, "test_warm_actors.py": 91, "test_recovery.py": 85, "test_job_submit.py": 73,
    "test_wide_cluster.py": 65, "test_tracker.py": 60, "test_custom_ensembles.py": 58, "test_watch.py": 52,
    "test_import_rule.py": 52, "test_run_lock.py": 50, "test_sweep.py": 48, "test_cli.py": 46, "test_driver.py": 42,
    "test_storage.py": 39, "test_estimator.py": 37, "test_scale_from_zero.py": 37, "test_load.py": 23,
    "test_repeats.py": 20, "test_bench_serving.py": 19,
}
SLOW_TEST_S, FAST_TEST_S = 3.0, 0.05  # rough costs of an unlisted file's test that starts Ray, and of one that does not


def longest_groups_first(items: list) -> list:
    """The tests reordered so that the groups expected to take longest start first (each group's tests
    stay together and in file order): xdist hands the groups out in this order (`--no-loadscope-reorder`
    in addopts; its own order puts groups with many tests first, which left a few long files to run
    alone at the end)."""
    def group(item) -> str:
        return xdist_group_of(item.nodeid.split("::")[0])
    cost: dict[str, float] = {}
    first: dict[str, int] = {}
    files_counted: set = set()
    for index, item in enumerate(items):
        key = group(item)
        cost[key] = cost.get(key, 0.0) + expected_seconds(item, first_of_its_file=item.path not in files_counted)
        first.setdefault(key, index)
        files_counted.add(item.path)
    return sorted(items, key=lambda item: (-cost[group(item)], first[group(item)]))


def expected_seconds(item, first_of_its_file: bool) -> float:
    """A test's share of its group's expected seconds: a listed file's whole figure at its first test."""
    if item.path.name in FILE_SECONDS:
        return float(FILE_SECONDS[item.path.name]) if first_of_its_file else 0.0
    return SLOW_TEST_S if item.get_closest_marker("slow") else FAST_TEST_S


@pytest.fixture(autouse=True)
def ray_address_restored():
    """`--address` sets RAY_ADDRESS for the CLI's process (its driver child inherits it); tests call
    `main()` in this process, so each test hands back the RAY_ADDRESS it was given."""
    before = os.environ.get("RAY_ADDRESS")
    yield
    if before is None:
        os.environ.pop("RAY_ADDRESS", None)
    else:
        os.environ["RAY_ADDRESS"] = before


@pytest.fixture(scope="session")
def ray_instance():
    """One local Ray instance for the whole session, CPUs given explicitly."""
    import ray

    from ensemble.scheduling.session import stop_local_ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    stop_local_ray()


@pytest.fixture
def no_kept_actors(ray_instance):
    """For a test that asks the session's Ray for CPUs itself: the member actors that earlier tests' runs
    kept warm are ended first, as a user calls `ensemble.release_actors()` before other Ray work (else
    they would hold the CPUs until they expire)."""
    import ensemble
    ensemble.release_actors()


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def bucket():
    """An S3 endpoint on loopback with a bucket; credentials are dummies, and the instance
    metadata service is never asked (no traffic leaves 127.0.0.1)."""
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        from pyarrow.fs import S3FileSystem
        s3 = S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
                                     allow_bucket_creation=True)
        s3.create_dir("runs")
        yield s3, f"s3://runs/team?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    finally:
        server.kill()
        server.wait()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def ray_must_not_start(monkeypatch):
    """For "refused before Ray starts": `ray.init` fails the test. (`ray.is_initialized()` cannot tell,
    since an earlier test of the same session may hold a Ray instance.)"""
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started")
    monkeypatch.setattr(ray, "init", refuse)
