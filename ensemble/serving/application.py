"""Building and starting the serving application: three ways in, the CLI (`ensemble serve RUN_DIR`),
Python (`ensemble.serve(run_dir)` returns the deployment handle) and Ray's own tools
(`serve run ensemble.serving.application:app run_dir=...`, or a `serve deploy` config from
`ensemble serve RUN_DIR --print-config`).
"""

import logging
import os
import socket
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import ray
import yaml

from ensemble.environment import environment
from ensemble.errors import stop_on_sigterm
from ensemble.scheduling.placement import Share, infeasible_reason
from ensemble.scheduling.session import alive_node_resources, connect, starts_local, stop_local_ray
from ensemble.scheduling.warm_actors import release_actors
from ensemble.serving.ingress import PROXY, REPLICA, direct_ingress_env, ingress, replica_env
from ensemble.serving.options import (
    CPUS_PER_REPLICA,
    HOST,
    MAX_BATCH_SIZE,
    MAX_BODY_BYTES,
    PORT,
    REPLICAS,
    ServeOptions,
    serve_options,
)
from ensemble.serving.replica import Autoencoder, EnsembleModel, load_for_serving, ray_serve
from ensemble.storage import is_uri, join_uri, run_file
from workers.errors import InputError
from workers.layout import REPORT_JSON
from workers.models import trusts, untrusted

APP_NAME = "ensemble"
SERVE_LOGGER = "ray.serve"  # Ray Serve's driver-side logger
IMPORT_PATH = "ensemble.serving.application:app"


def read_report(run_dir: str):
    """The run's report, or an InputError when `run_dir` is not a finished run (read, not loaded)."""
    from ensemble.report import RunReport
    where = join_uri(run_dir, REPORT_JSON) if is_uri(run_dir) else str(Path(run_dir) / REPORT_JSON)
    text = run_file(run_dir, REPORT_JSON)
    if text is None:
        raise InputError(f"{run_dir!r} is not a finished run (no report.json); give the run directory "
                         "`ensemble run` printed at the end.")
    try:
        return RunReport.model_validate_json(text)
    except ValueError as err:
        raise InputError(f"{where!r} cannot be read as a run report: {str(err).splitlines()[0]}") from None


def replica_resources(options: ServeOptions, report) -> tuple[float, float]:
    """CPUs and GPUs per replica: a GPU share when the run trained on GPUs, unless told otherwise."""
    from ensemble.config import EnsembleConfig
    gpus = options.gpus_per_replica
    if gpus is None:
        gpus = EnsembleConfig.model_validate(report.config).resources.gpus_per_member
    return options.cpus_per_replica, gpus


def bind(options: ServeOptions, report, autoencoder: Autoencoder = None) -> "ray_serve.Application":
    """The application for `options`: its replicas, their resources and batch size."""
    cpus, gpus = replica_resources(options, report)
    # @serve.deployment made the class a Deployment (its typing leaves the class as it was); max_ongoing_requests:
    # room for a full batch computing and the next one filling
    deployment = EnsembleModel.options(  # type: ignore[attr-defined]
        num_replicas=options.replicas, max_ongoing_requests=max(8, 2 * options.max_batch_size),
        ray_actor_options={"num_cpus": cpus, "num_gpus": gpus, "runtime_env": {"env_vars": replica_env(os.environ)}})
    return deployment.bind(options.run_dir, autoencoder or options.autoencoder, options.max_batch_size,
                           options.max_body_bytes, options.trust_code)


def app(args: ServeOptions) -> "ray_serve.Application":
    """Application builder for Ray's tools: `serve run ensemble.serving:app run_dir=RUN [replicas=2 ...]`."""
    options = args if isinstance(args, ServeOptions) else serve_options(**dict(args))
    return bind(options, read_report(options.run_dir))


def checked_run(options: ServeOptions, autoencoder: Autoencoder = None):
    """Refuse what is not a finished run before anything starts: a local run is loaded once (checkpoints
    and autoencoder checked too); of a URI, only report.json is read here."""
    if is_uri(options.run_dir):
        report = read_report(options.run_dir)
        recorded = report.config.get("model", {}).get("autoencoder")
        if recorded and not (autoencoder or options.autoencoder or trusts(recorded, options.trust_code)):
            raise untrusted(recorded)  # the replicas would import it: refuse here, before anything starts
        return report
    read_report(options.run_dir)
    return load_for_serving(options.run_dir, autoencoder or options.autoencoder, options.trust_code).report


def check_fits(cpus: float, gpus: float) -> None:
    """Ray would wait forever for a replica no node can hold: say so instead."""
    problem = infeasible_reason(alive_node_resources(), Share(cpus, gpus), "a serving replica")
    if problem:
        raise InputError(f"{problem} (Serving: --cpus-per-replica, or --gpus-per-replica, by default the run's "
                         "resources.gpus_per_member; 0 serves on CPUs.)")


def deploy(options: ServeOptions, report, host: str, port: int, autoencoder: Autoencoder = None,
           route: str = PROXY):
    """Serve's HTTP on `host`:`port`: its proxy's, or with `route` REPLICA the replica's own, Serve's proxy
    then on a free port of `host` (`ensemble.serving.ingress`)."""
    check_fits(*replica_resources(options, report))
    application = bind(options, report, autoencoder)
    proxy_port = free_port(host) if route == REPLICA else port
    # Serve logs that the application "is ready at" its proxy's address: with the replica answering, not the one
    # to use, so its INFO lines are left out then (warnings and errors still show)
    with quieter(SERVE_LOGGER if route == REPLICA else None):
        ray_serve.start(http_options={"host": host, "port": proxy_port})  # binds where host says, nowhere else
        try:
            handle = ray_serve.run(application, name=APP_NAME, route_prefix="/")
        except RuntimeError as err:  # Serve says only that the deployment failed; the replica says why
            raise RuntimeError(f"{err} The replicas' error: {replica_error()}") from None
    if route == REPLICA:
        wait_for_answer(host, port)
    return handle


@contextmanager
def quieter(name: Optional[str]) -> Iterator[None]:
    """The logger `name` at WARNING for the `with` (None: no change), at its own level after."""
    if name is None:
        yield
        return
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def wait_for_answer(host: str, port: int, seconds: float = 30.0) -> None:
    """Return once GET /healthz answers at `host`:`port`, or raise: a Ray whose direct ingress took other
    settings than 2.60's would leave the port closed, and a server that says it serves must answer."""
    url = f"http://{_reachable(host)}:{port}/healthz"
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the replica did not answer at {url} within {seconds:g} s (Ray Serve's direct "
                               "ingress); set ENSEMBLE_SERVE_INGRESS=proxy to serve through Ray Serve's HTTP proxy.")
        time.sleep(0.1)


def _reachable(host: str) -> str:
    """An address that reaches a server listening on `host` from this machine."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)


def replica_error() -> str:
    """The last line of each failed deployment's message: the exception its replicas raised."""
    application = ray_serve.status().applications.get(APP_NAME)
    lines = [d.message.strip().splitlines()[-1] for d in (application.deployments.values() if application else [])
             if d.message.strip()]
    return "; ".join(lines) or "none reported; see the serve logs in Ray's session directory."


def serve(run_dir: Union[str, Path], *, host: str = HOST, port: int = PORT, replicas: int = REPLICAS,
          max_batch_size: int = MAX_BATCH_SIZE, max_body_bytes: int = MAX_BODY_BYTES,
          cpus_per_replica: float = CPUS_PER_REPLICA, gpus_per_replica: Optional[float] = None,
          autoencoder: Autoencoder = None, trust_code: bool = False):
    """Serve a finished run over HTTP on Ray Serve and return the deployment handle (also callable:
    `handle.classify.remote(images).result()`). Uses the initialised Ray, else RAY_ADDRESS, else starts
    a local Ray that lives until `ray.shutdown()`, where one replica answers HTTP itself
    (`ensemble.serving.ingress`); `ray.serve.shutdown()` stops serving. `trust_code`: import the
    autoencoder module the run recorded (also allowed when this process imported it already).

    Parameters
    ----------
    run_dir : str or Path
        A finished run's directory or URI (it holds report.json).
    host, port : str, int
        Where `POST /predict`, `GET /healthz` and `GET /` answer.
    replicas : int
        Serve replicas, each holding the frozen encoders and the combiner.
    max_batch_size : int
        Requests batched together by one replica.
    max_body_bytes : int
        Larger request bodies get HTTP 413.
    cpus_per_replica, gpus_per_replica : float, float or None
        Each replica's resources; None GPUs: a GPU share when the run trained on GPUs.
    autoencoder : class, str or None
        The members' autoencoder class (or `module:QualName`) when the run names a custom one.
    trust_code : bool
        Import the module the run records without being passed the class.

    Returns
    -------
    ray.serve.handle.DeploymentHandle
        The application's handle.

    Raises
    ------
    InputError
        `run_dir` is not a finished run, an option is out of range, or its module is not trusted.

    Examples
    --------
    >>> import ensemble
    >>> handle = ensemble.serve("runs/exp1", port=8000)                     # doctest: +SKIP
    >>> handle.classify.remote(images).result()["labels"]                   # doctest: +SKIP
    [7, 2, 1]
    >>> try:
    ...     ensemble.serve("no-such-run")
    ... except ensemble.InputError as err:
    ...     print(str(err).split(";")[0])
    '...no-such-run' is not a finished run (no report.json)
    """
    options = serve_options(run_dir=str(run_dir), replicas=replicas, max_batch_size=max_batch_size,
                            max_body_bytes=max_body_bytes, cpus_per_replica=cpus_per_replica,
                            gpus_per_replica=gpus_per_replica,
                            autoencoder=autoencoder if isinstance(autoencoder, str) else None, trust_code=trust_code)
    report = checked_run(options, autoencoder)
    recorded = report.config.get("model", {}).get("autoencoder")
    if recorded and trusts(recorded, trust_code):  # the caller's process vouches: so do its replicas
        options = options.model_copy(update={"trust_code": True})
    _, route = connect_for_serving(options, host, port)
    release_actors()  # member actors kept warm by an earlier run would hold the CPUs/GPUs the replicas need
    return deploy(options, report, host, port, autoencoder, route)


def connect_for_serving(options: ServeOptions, host: str, port: int) -> tuple[bool, str]:
    """Ray for serving (`connect`), started with the replica answering HTTP itself where `ingress` says so;
    whether this started Ray, and the ingress. A started Ray needs `port` free: refused before Ray starts
    where the replica takes it, after where Serve's proxy does (`check_port`)."""
    route = ingress(starts_local(), options.replicas, os.environ)
    if route == REPLICA:
        check_port(host, port)
    with environment(direct_ingress_env(port) if route == REPLICA else {}):
        started = connect().started
    return started, route


def check_port(host: str, port: int) -> None:
    if not port_free(host, port):
        # Ray Serve binds without SO_REUSEADDR: the connections a stopped server closed hold its port for a minute
        raise InputError(f"port {port} on {host} is in use (a server stopped in the last minute may still hold "
                         "it); choose another --port.")


# --- the command line ----------------------------------------------------------------------

def deploy_config(options: ServeOptions, host: str, port: int) -> str:
    """A `serve deploy` config (YAML) that runs the same application on a running cluster."""
    config = {"proxy_location": "EveryNode", "http_options": {"host": host, "port": port},
              "applications": [{"name": APP_NAME, "route_prefix": "/", "import_path": IMPORT_PATH,
                                "args": options.model_dump(exclude_none=True)}]}
    return ("# Ray Serve config: `serve deploy serve.yaml` (from a shell with the cluster's RAY_AUTH_TOKEN).\n"
            "# Every node needs eager-ensembles[serve] installed and run_dir readable (shared disk or a URI).\n"
            + yaml.safe_dump(config, sort_keys=False))


def free_port(host: str = HOST) -> int:
    """A port nothing listens on at `host` now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def serve_until_stopped(options: ServeOptions, host: str, port: int, on_ready: Callable[[str], None]) -> None:
    """The CLI's server: checks, starts, reports the URL, and on Ctrl-C (or SIGTERM, as `ray job stop`
    and container runtimes send) removes what it started: the application, or Serve and Ray."""
    report = checked_run(options)  # before Ray starts: a bad run directory is exit 2 with nothing started
    started = False
    try:
        with stop_on_sigterm():  # SIGTERM arrives as a KeyboardInterrupt, like Ctrl-C
            started, route = connect_for_serving(options, host, port)
        # again once Ray is up: ray.init installs its own SIGTERM handler, which aborted the server (SIGABRT)
        # and left Ray's agents running
        with stop_on_sigterm():
            if started and route == PROXY:
                check_port(host, port)
            deploy(options, report, host, port, route=route)
            on_ready(f"Serving run {report.name!r} at http://{host}:{port}/ (POST /predict, GET /healthz, "
                     "GET /); Ctrl-C stops it.")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        on_ready("Stopping...")
    finally:
        stop_serving(started)


def stop_serving(started_ray: bool) -> None:
    """Stop what serving started: the local Ray this process started, with Serve's controller, proxy and
    replicas in it, or only the application on a Ray that was running already (a cluster's Serve stays
    for other applications). Not `ray.serve.shutdown()` first: its controller ends itself inside the call
    it answers, so Ray printed that call's failure ("graceful_shutdown failed ... killed by ray.kill") on
    every stop, and the stop took longer, with nothing more left behind (docs/performance.md, 2026-12-07, late)."""
    if not ray.is_initialized():
        return
    if started_ray:
        stop_local_ray()
    else:
        ray_serve.delete(APP_NAME)
