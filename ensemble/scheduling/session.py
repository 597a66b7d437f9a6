"""The Ray session a run works in, and what the cluster offers. With `pool.py` and
`workers/actor.py`, the only code that calls Ray."""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import ray
import torch

from ensemble.data import Splits
from ensemble.errors import stop_on_sigterm
from ensemble.scheduling import warm_actors
from ensemble.scheduling.address import check_address
from ensemble.scheduling.autoscaling import Autoscaler, NodeType, can_launch


@dataclass(frozen=True)
class Session:
    started: bool                  # whether this process started Ray (and stops it at the end)
    dashboard_url: Optional[str]   # Ray's dashboard, when one runs


def connect(num_cpus: int | None = None, log_to_driver: bool = False, dashboard: bool = False) -> Session:
    """Connect to RAY_ADDRESS (or an already initialised Ray), else start a local instance with
    `num_cpus` (all local CPUs by default). `log_to_driver`: every actor's output reaches this console
    (`--verbose`; otherwise Ray's own start-up messages are left out too, errors excepted).
    `dashboard`: a local instance starts Ray's dashboard, bound to 127.0.0.1."""
    level = logging.INFO if log_to_driver else logging.ERROR
    if ray.is_initialized():
        return Session(False, _dashboard_url(None))
    if os.environ.get("RAY_ADDRESS"):
        check_address(os.environ["RAY_ADDRESS"])  # bounded: ray.init would retry for minutes
        context = ray.init(log_to_driver=log_to_driver, logging_level=level)
        return Session(False, _dashboard_url(context))
    context = ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), log_to_driver=log_to_driver,
                       logging_level=level, include_dashboard=dashboard, dashboard_host="127.0.0.1")  # loopback
    return Session(True, _dashboard_url(context) if dashboard else None)


def starts_local() -> bool:
    """Whether `connect` would start a local instance: Ray is not initialised and RAY_ADDRESS is not set."""
    return not ray.is_initialized() and not os.environ.get("RAY_ADDRESS")


def shared_session() -> None:
    """Ray for the rest of this process: joined or started now (see `connect`) and left running, so
    that the next runs (an estimator's fits in a cross-validation) do not start it again. Ray stops
    a local instance it started when the process exits."""
    if not ray.is_initialized() and connect().started:
        atexit.register(_kill_local_monitor)  # runs before Ray's own exit hook, registered when ray was imported


@contextmanager
def ray_session(num_cpus: int | None = None, log_to_driver: bool = False, dashboard: bool = False) -> Iterator[Session]:
    """Ray for the length of a `with` (see `connect`); shut down afterwards only if this started it.
    SIGTERM meanwhile stops the run like Ctrl-C (see `signals`)."""
    opened_before = ray.is_initialized()  # by the estimator, the user's ray.init, a --repeats loop: it outlives this
    session = connect(num_cpus, log_to_driver, dashboard)
    started = session.started
    try:
        # only a session that outlives the run keeps the actors it leaves idle for the next run
        with stop_on_sigterm(), warm_actors.run_scope(run_opened_ray=not opened_before):
            yield session
    finally:
        if started:
            stop_local_ray()


def stop_local_ray() -> None:
    """`ray.shutdown()` of the local instance this process started, without Ray's one-second wait for its
    autoscaler monitor (see `_kill_local_monitor`)."""
    _kill_local_monitor()
    ray.shutdown()


def _kill_local_monitor() -> None:
    """Kill the autoscaler monitor of the local instance this process started. Ray stops the GCS first,
    and the monitor's SIGTERM handler then reports to the dead GCS and hangs until Ray kills it a second
    later (shutdown 1.14-1.36 s against 0.14-0.37 s; docs/performance.md). A local instance's monitor holds
    nothing (its node provider is read-only), and a driver that joined a cluster started no processes."""
    node = getattr(ray._private.worker, "_global_node", None)  # Ray's own handle on the processes it started
    kill_monitor = getattr(node, "kill_monitor", None)
    if kill_monitor is not None:
        try:
            kill_monitor(check_alive=False)
        except Exception:  # noqa: BLE001 (a shortcut only: Ray's shutdown stops it as it always has)
            pass


def _dashboard_url(context) -> Optional[str]:
    if context is None:  # already initialised (a run inside `--repeats`, or a user's own ray.init)
        url = ray._private.worker.get_dashboard_url()
    else:
        url = getattr(context, "dashboard_url", None)
    if not url:
        return None
    return url if "://" in url else f"http://{url}"


def alive_node_resources() -> list[dict]:
    """Each live node's resources (CPU, GPU, memory, ...), as Ray reports them."""
    return [node["Resources"] for node in ray.nodes() if node.get("Alive")]


def started_on(actor) -> Optional[str]:
    """The node an actor's process runs on once Ray has placed it; None while it waits for resources
    (or when Ray's actor table cannot say: callers then treat it as waiting)."""
    try:
        record = ray._private.state.actors(actor._actor_id.hex())  # the GCS's table: no dashboard needed
    except Exception:  # noqa: BLE001 (a private API: any failure means "not known to be placed")
        return None
    return (record.get("Address") or {}).get("NodeID") if record.get("Pid") else None


def free_resources() -> dict[str, float]:
    """The cluster's resources not held by anything now (Ray's own accounting)."""
    return {kind: float(amount) for kind, amount in ray.available_resources().items()}


def share_data(splits: Splits) -> ray.ObjectRef:
    """The autoencoders' training images (unlabelled ones included), the validation and test images, and
    which training rows the combiner fits on with their labels, put into the object store once; every
    member actor reads them zero-copy (the test images, head rows and labels only when its member
    finishes, to encode them and fit the member's own head)."""
    return ray.put(shared_arrays(splits))


def shared_arrays(splits: Splits) -> dict:
    """What `share_data` puts: the arrays by name, and a key naming this data."""
    key = uuid.uuid4().hex  # lets an actor keep one device copy for every member it trains on this data
    head_rows = np.arange(len(splits.train_x)) if splits.labelled is None else splits.labelled.numpy()
    return {"key": key, "train_x": splits.autoencoder_x.numpy(), "val_x": splits.val_x.numpy(),
            "test_x": splits.test_x.numpy(), "head_rows": head_rows, "head_y": splits.labelled_y.numpy()}


def stored_splits(splits: Splits, data_ref: ray.ObjectRef) -> Splits:
    """`splits` with its images read zero-copy from the object store's copy that `share_data` put: `ray.put`
    wrote that copy through the driver's own memory, so it counts in the driver's resident memory too, and
    a driver that keeps its own tensors holds the images twice. Read-only views (nothing writes into a
    run's images once they are shared); they stay valid after the session ends."""
    shared = ray.get(data_ref)
    with warnings.catch_warnings():  # torch warns that writing into a read-only array's tensor is undefined
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        autoencoder_x, val_x, test_x = (torch.from_numpy(shared[name]) for name in ("train_x", "val_x", "test_x"))
    rows = len(splits.train_x)  # the unlabelled images follow the labelled ones (`Splits.autoencoder_x`)
    return replace(splits, train_x=autoencoder_x[:rows], val_x=val_x, test_x=test_x,
                   unlabelled_x=None if splits.unlabelled_x is None else autoencoder_x[rows:])


def driver_node_id() -> str:
    return ray.get_runtime_context().get_node_id()


RAY_MARKER = re.compile(r"^:(actor_name|task_name|job_id):")  # lines Ray writes into worker logs for itself


def worker_log_tail(placement: dict, lines: int = 12) -> tuple[str, ...]:
    """The last lines an actor's process wrote to stderr (its warnings and errors): from its
    worker log in this machine's Ray session when it ran here, else through Ray's state API
    (which needs the dashboard, as on a cluster). Empty when neither can be read."""
    pid, node_id = placement.get("pid"), placement.get("node_id")
    if pid is None:
        return ()
    text = None
    node = getattr(ray._private.worker, "_global_node", None)  # Ray's internal API: this driver's own session
    if node is not None and node_id == driver_node_id():
        found = sorted(Path(node.get_logs_dir_path()).glob(f"worker-*-{pid}.err"))
        text = found[-1].read_text(errors="replace") if found else None
    if text is None:
        try:
            from ray.util.state import get_log
            text = "".join(get_log(node_id=node_id, pid=pid, suffix="err", tail=lines * 4, timeout=5))
        except Exception:  # no dashboard, or the node is gone with its logs
            return ()
    kept = [line.rstrip() for line in text.splitlines() if line.strip() and not RAY_MARKER.match(line)]
    return tuple(kept[-lines:])


# --- the autoscaler, as far as Ray 2.60 shows it (read by `autoscaling.capacity`) ---

def cluster_autoscaler() -> Optional[Autoscaler]:
    """The cluster's autoscaler, or None when it has none: its node types from the cluster config
    Ray publishes in the GCS (newer autoscalers report it), else from the autoscaling config its
    monitor process on this machine was started with (`ray up`'s head, a fake multi-node
    cluster); its pending launches from the status it writes every round."""
    report = _autoscaler_report()
    if report is not None and not can_launch(report):
        report = None  # the read-only monitor every cluster has
    types = _published_node_types()
    if types is None:
        types = _monitor_node_types()
    if report is None and types is None:
        return None
    return Autoscaler(tuple(types) if types is not None else None, dict(report.get("pending_launches") or {})
                      if report else {})


def _autoscaler_report() -> Optional[dict]:
    """The autoscaler's last round, as `ray status` reads it: autoscaler v1 writes it to the GCS
    KV store (a monitor without an autoscaler writes none); v2 answers the GCS's cluster status."""
    from ray.experimental.internal_kv import _internal_kv_get  # Ray's internal KV (no public API holds it)
    try:
        raw = _internal_kv_get("__autoscaling_status")
        report = json.loads(raw).get("autoscaler_report") if raw else None
        if report is not None:
            return report
        from ray.autoscaler.v2.sdk import get_cluster_status
        from ray.autoscaler.v2.utils import is_autoscaler_v2
        if not is_autoscaler_v2(fetch_from_server=True):
            return None
        status = get_cluster_status(ray.get_runtime_context().gcs_address)
        return {"active_nodes": {n.ray_node_type_name: 1 for n in status.active_nodes + status.idle_nodes},
                "pending_launches": {r.ray_node_type_name: r.count for r in status.pending_launches}}
    except Exception:  # an older or newer Ray that keeps these elsewhere: no autoscaler seen
        return None


def _published_node_types() -> Optional[list[NodeType]]:
    import ray._private.state  # Ray's internal API, as Ray Data reads it to size its own requests
    try:
        config = ray._private.state.state.get_cluster_config()
    except Exception:
        return None
    if config is None or not config.node_group_configs:
        return None
    return [NodeType(g.name, dict(g.resources), g.max_count) for g in config.node_group_configs]


def _monitor_node_types() -> Optional[list[NodeType]]:
    """Node types from the `--autoscaling-config` of this cluster's monitor, when it runs on this
    machine (found by its `--gcs-address`, as Ray finds its own processes). None when it does not,
    or when a worker type leaves its resources to be detected at launch."""
    try:
        import psutil  # the bench extra; without it no monitor is found, and the run waits as for KubeRay
    except ImportError:
        return None
    import yaml
    gcs = ray.get_runtime_context().gcs_address
    for process in psutil.process_iter(["cmdline"]):
        args = process.info.get("cmdline") or []
        config = [a.split("=", 1)[1] for a in args if a.startswith("--autoscaling-config=")]
        if config and f"--gcs-address={gcs}" in args:
            try:
                raw = yaml.safe_load(Path(os.path.expanduser(config[0])).read_text())
            except (OSError, yaml.YAMLError):
                return None
            workers = {name: t for name, t in (raw.get("available_node_types") or {}).items()
                       if name != raw.get("head_node_type")}
            if any("resources" not in t for t in workers.values()):
                return None
            return [NodeType(name, dict(t["resources"]), int(t.get("max_workers", -1))) for name, t in workers.items()]
    return None
