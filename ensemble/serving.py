"""`ensemble serve`: a finished run behind HTTP on Ray Serve.

    POST /predict   {"images": [...]} or a .npy body -> {"labels", "classes", "probabilities"}
    GET  /healthz   {"status": "ok"}
    GET  /          the model card from report.json

Each replica loads the run once, as `ensemble.load` rebuilds it (frozen encoders, combiner,
normalisation), and answers every request queued meanwhile with one forward pass
(`@serve.batch`). What to make of a request body is decided in `ensemble.serving_requests`
(pure functions); this module holds the Ray Serve lines. Three ways in: the CLI
(`ensemble serve RUN_DIR`), Python (`ensemble.serve(run_dir)` returns the deployment handle)
and Ray's own tools (`serve run ensemble.serving:app run_dir=...`, or a `serve deploy` config
from `ensemble serve RUN_DIR --print-config`).
"""

import importlib
import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import ray
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ensemble.errors import InputError
from ensemble.serving_requests import (MiB, RequestError, body_format, check_declared_length, checked_images,
                                       error_body, images_from_body, labels_from_probabilities, model_card,
                                       prediction_body, too_large)
from ensemble.storage import Mirror, is_uri, join_uri, read_text

try:  # Ray Serve and its web stack are an extra, so training installs stay lean
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from ray import serve as ray_serve
except ImportError as err:
    raise InputError(f"serving needs Ray Serve, which is not installed ({err}); install the `serve` extra: "
                     "pip install 'eager-ensembles[serve]' (in a checkout: pip install -e '.[serve]').") from None

APP_NAME = "ensemble"
IMPORT_PATH = "ensemble.serving:app"
BATCH_WAIT_SECONDS = 0.005  # how long a batch waits for more requests once the first has arrived
Autoencoder = Union[None, str, Callable[[], Any]]  # as ensemble.load takes it, or "module:name"


class ServeOptions(BaseModel):
    """The application's arguments: `serve run ensemble.serving:app run_dir=...`, a config's `args`."""
    model_config = ConfigDict(extra="forbid")
    run_dir: str = Field(description="a finished run directory, local or a URI")
    replicas: int = Field(1, ge=1, description="replicas, each with the whole model")
    max_batch_size: int = Field(16, ge=1, description="most requests one forward pass answers")
    max_body_bytes: int = Field(32 * MiB, ge=1, description="larger request bodies get HTTP 413")
    cpus_per_replica: float = Field(1.0, gt=0)
    gpus_per_replica: Optional[float] = Field(None, ge=0, description="null: the run's resources.gpus_per_member")
    autoencoder: Optional[str] = Field(None, description="module:name of a custom run's autoencoder factory")

    @field_validator("run_dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        return value if is_uri(value) else str(Path(value).expanduser().resolve())


def serve_options(**values) -> ServeOptions:
    try:
        return ServeOptions(**values)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise InputError(f"invalid serving option(s): {problems}.") from None


# --- the replica --------------------------------------------------------------------------

async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to pass `limit` (header, or bytes streamed)."""
    check_declared_length(request.headers.get("content-length"), limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large(limit)
    return bytes(body)


def load_for_serving(run_dir: str, autoencoder: Autoencoder = None):
    """The run as `ensemble.load` rebuilds it, on this replica's GPU when Ray gave it one. A URI is
    downloaded first and the copy removed once loaded: predict() then needs only memory."""
    import ensemble
    factory = resolve_autoencoder(autoencoder)
    if not is_uri(run_dir):
        result = ensemble.load(run_dir, autoencoder=factory)
    else:
        scratch = Path(tempfile.mkdtemp(prefix="ensemble-serve-"))
        try:
            mirror = Mirror(run_dir, local=scratch / "run")
            mirror.pull()
            result = ensemble.load(mirror.local, autoencoder=factory)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    if ray.is_initialized() and ray.get_gpu_ids():  # Ray: CUDA_VISIBLE_DEVICES holds only our GPU(s)
        for autoencoder_module in result.autoencoders:
            autoencoder_module.to("cuda")
    return result


def resolve_autoencoder(autoencoder: Autoencoder):
    """A factory as given, or the one a "module:name" string names (config files cannot hold a class)."""
    if autoencoder is None or callable(autoencoder):
        return autoencoder
    module, _, name = str(autoencoder).partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise InputError(f"cannot import the autoencoder {autoencoder!r} ({err}); give it as module:name, "
                         "importable where the replicas run.") from None


# Ray Serve pickles the class as it is decorated: everything it calls is defined above it.
api = FastAPI(title="eager-ensembles", docs_url=None, redoc_url=None, openapi_url=None)


@ray_serve.deployment(name="EnsembleModel")  # Ray: replicas and resources are set per application in `bind`
@ray_serve.ingress(api)
class EnsembleModel:
    def __init__(self, run_dir: str, autoencoder: Autoencoder, max_batch_size: int, max_body_bytes: int):
        self.result = load_for_serving(run_dir, autoencoder)
        self.image_shape = tuple(self.result.report.dataset.image_shape)
        self.max_body_bytes = max_body_bytes
        self.card = model_card(self.result.report, run_dir)
        self._predict_batch.set_max_batch_size(max_batch_size)

    @api.get("/healthz")
    def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/")
    def describe(self) -> dict:
        return self.card

    @api.post("/predict")
    async def predict(self, request: Request) -> JSONResponse:
        try:
            kind = body_format(request.headers.get("content-type"))
            body = await read_body(request, self.max_body_bytes)
            images = images_from_body(body, kind, self.image_shape)
        except RequestError as err:  # refused before it joins a batch, so no other client's request fails
            return JSONResponse(error_body(err), status_code=err.status)
        labels, probabilities = await self._predict_batch(images)
        return JSONResponse(prediction_body(labels, self.result.classes, probabilities))

    async def classify(self, images) -> dict:
        """For a DeploymentHandle: `handle.classify.remote(images).result()` is POST /predict's answer."""
        try:
            batch = checked_images(np.asarray(images), self.image_shape)
        except RequestError as err:
            raise InputError(str(err)) from None
        labels, probabilities = await self._predict_batch(batch)
        return prediction_body(labels, self.result.classes, probabilities)

    @ray_serve.batch(max_batch_size=16, batch_wait_timeout_s=BATCH_WAIT_SECONDS)  # Ray: size set in __init__
    async def _predict_batch(self, batches: list) -> list:
        # One forward pass for every request queued meanwhile, on this event loop: requests arriving while
        # it computes wait for the next batch. Measured (benchmarks/serve_load.py, 1 CPU a replica): a
        # worker thread here competed for the GIL, and gave batches of 1.7 requests at 1,600 images/s of
        # compute; inline, 4.3 requests at 2,400 images/s, for the same end-to-end throughput.
        labels, probabilities = self._labels_and_probabilities(np.concatenate(batches))
        ends = np.cumsum([len(batch) for batch in batches])[:-1]
        return list(zip(np.split(labels, ends), np.split(probabilities, ends)))

    def _labels_and_probabilities(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probabilities = self.result.predict_proba(images)
        labels, near_tie = labels_from_probabilities(probabilities, self.result.classes)
        if near_tie.any():  # rounding could split a near-tie differently from predict(): ask it
            labels[near_tie] = self.result.predict(images[near_tie])
        return labels, probabilities


# --- building and starting the application ------------------------------------------------

def read_report(run_dir: str):
    """The run's report, or an InputError when `run_dir` is not a finished run (read, not loaded)."""
    from ensemble import RunReport
    where = join_uri(run_dir, "report.json") if is_uri(run_dir) else str(Path(run_dir) / "report.json")
    text = read_text(where) if is_uri(run_dir) else (Path(where).read_text() if Path(where).is_file() else None)
    if text is None:
        raise InputError(f"{run_dir!r} is not a finished run (no report.json); give the run directory "
                         "`ensemble run` printed at the end.")
    try:
        return RunReport.model_validate_json(text)
    except ValueError as err:
        raise InputError(f"{where!r} cannot be read as a run report: {str(err).splitlines()[0]}") from None


def replica_resources(options: ServeOptions, report) -> tuple[float, float]:
    """CPUs and GPUs per replica: a GPU share when the run trained on GPUs, unless told otherwise."""
    from ensemble import EnsembleConfig
    gpus = options.gpus_per_replica
    if gpus is None:
        gpus = EnsembleConfig.model_validate(report.config).resources.gpus_per_member
    return options.cpus_per_replica, gpus


def bind(options: ServeOptions, report, autoencoder: Autoencoder = None) -> "ray_serve.Application":
    """The application for `options`: its replicas, their resources and batch size."""
    cpus, gpus = replica_resources(options, report)
    deployment = EnsembleModel.options(  # Ray: room for a full batch computing and the next one filling
        num_replicas=options.replicas, max_ongoing_requests=max(8, 2 * options.max_batch_size),
        ray_actor_options={"num_cpus": cpus, "num_gpus": gpus})
    return deployment.bind(options.run_dir, autoencoder or options.autoencoder, options.max_batch_size,
                           options.max_body_bytes)


def app(args: ServeOptions) -> "ray_serve.Application":
    """Application builder for Ray's tools: `serve run ensemble.serving:app run_dir=RUN [replicas=2 ...]`."""
    options = args if isinstance(args, ServeOptions) else serve_options(**dict(args))
    return bind(options, read_report(options.run_dir))


def checked_run(options: ServeOptions, autoencoder: Autoencoder = None):
    """Refuse what is not a finished run before anything starts: a local run is loaded once (checkpoints
    and autoencoder checked too); of a URI, only report.json is read here."""
    if is_uri(options.run_dir):
        return read_report(options.run_dir)
    read_report(options.run_dir)
    return load_for_serving(options.run_dir, autoencoder or options.autoencoder).report


def connect_ray() -> bool:
    """Connect to RAY_ADDRESS or an initialised Ray, else start a local instance; True if we started it."""
    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False)
        return False
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    return True


def check_fits(cpus: float, gpus: float) -> None:
    """Ray would wait forever for a replica no node can hold: say so instead."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]  # Ray: alive nodes' totals
    if any(node.get("CPU", 0) >= cpus and node.get("GPU", 0) >= gpus for node in nodes):
        return
    largest = max(((n.get("CPU", 0), n.get("GPU", 0)) for n in nodes), default=(0, 0))
    raise InputError(f"a serving replica asks for {cpus:g} CPU and {gpus:g} GPU, but the largest node of the Ray "
                     f"cluster offers {largest[0]:g} CPU and {largest[1]:g} GPU; lower --cpus-per-replica, or "
                     "--gpus-per-replica (by default the run's resources.gpus_per_member; 0 serves on CPUs).")


def deploy(options: ServeOptions, report, host: str, port: int, autoencoder: Autoencoder = None):
    check_fits(*replica_resources(options, report))
    application = bind(options, report, autoencoder)
    ray_serve.start(http_options={"host": host, "port": port})  # Ray: binds where host says, nowhere else
    try:
        return ray_serve.run(application, name=APP_NAME, route_prefix="/")
    except RuntimeError as err:  # Serve says only that the deployment failed; the replica says why
        raise RuntimeError(f"{err} The replicas' error: {replica_error()}") from None


def replica_error() -> str:
    """The last line of each failed deployment's message: the exception its replicas raised."""
    application = ray_serve.status().applications.get(APP_NAME)
    lines = [d.message.strip().splitlines()[-1] for d in (application.deployments.values() if application else [])
             if d.message.strip()]
    return "; ".join(lines) or "none reported; see the serve logs in Ray's session directory."


def serve(run_dir: Union[str, Path], *, host: str = "127.0.0.1", port: int = 8000, replicas: int = 1,
          max_batch_size: int = 16, max_body_bytes: int = 32 * MiB, cpus_per_replica: float = 1.0,
          gpus_per_replica: Optional[float] = None, autoencoder: Autoencoder = None):
    """Serve a finished run over HTTP on Ray Serve and return the deployment handle (also callable:
    `handle.classify.remote(images).result()`). Uses the initialised Ray, else RAY_ADDRESS, else starts
    a local Ray that lives until `ray.shutdown()`; `ray.serve.shutdown()` stops serving."""
    options = serve_options(run_dir=str(run_dir), replicas=replicas, max_batch_size=max_batch_size,
                            max_body_bytes=max_body_bytes, cpus_per_replica=cpus_per_replica,
                            gpus_per_replica=gpus_per_replica,
                            autoencoder=autoencoder if isinstance(autoencoder, str) else None)
    report = checked_run(options, autoencoder)
    connect_ray()
    return deploy(options, report, host, port, autoencoder)


# --- the command line ----------------------------------------------------------------------

def deploy_config(options: ServeOptions, host: str, port: int) -> str:
    """A `serve deploy` config (YAML) that runs the same application on a running cluster."""
    config = {"proxy_location": "EveryNode", "http_options": {"host": host, "port": port},
              "applications": [{"name": APP_NAME, "route_prefix": "/", "import_path": IMPORT_PATH,
                                "args": options.model_dump(exclude_none=True)}]}
    return ("# Ray Serve config: `serve deploy serve.yaml` (from a shell with the cluster's RAY_AUTH_TOKEN).\n"
            "# Every node needs eager-ensembles[serve] installed and run_dir readable (shared disk or a URI).\n"
            + yaml.safe_dump(config, sort_keys=False))


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
    previous = signal.signal(signal.SIGTERM, _interrupt)
    started = False
    try:
        started = connect_ray()
        if started and not port_free(host, port):
            raise InputError(f"port {port} on {host} is in use; choose another --port.")
        deploy(options, report, host, port)
        on_ready(f"Serving run {report.name!r} at http://{host}:{port}/ (POST /predict, GET /healthz, "
                 "GET /); Ctrl-C stops it.")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        on_ready("Stopping...")
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop(started)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _stop(started_ray: bool) -> None:
    if not ray.is_initialized():
        return
    if started_ray:
        ray_serve.shutdown()  # Ray: Serve's controller, proxies and replicas
        ray.shutdown()  # Ray: and the local instance we started
    else:
        ray_serve.delete(APP_NAME)  # a cluster's Serve stays for other applications
