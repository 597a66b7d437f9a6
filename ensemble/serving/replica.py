"""The Ray Serve deployment: one replica holds the run, as `ensemble.load` rebuilds it (frozen encoders,
combiner, normalisation), and answers every request queued meanwhile with one forward pass
(`@serve.batch`). What to make of a request body is decided in `ensemble.serving.requests` (pure
functions); the Ray Serve lines are here and in `application.py`.
"""

import shutil
from typing import Any, Callable, Union

import numpy as np
import ray

from ensemble.serving.options import MAX_BATCH_SIZE
from ensemble.serving.requests import (
    RequestError,
    body_format,
    check_declared_length,
    checked_images,
    error_body,
    images_from_body,
    isolated_answers,
    labels_from_probabilities,
    model_card,
    prediction_body,
    too_large,
)
from ensemble.storage import is_uri
from workers.errors import InputError

try:  # Ray Serve and its web stack are an extra, so training installs stay lean
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from ray import serve as ray_serve
except ImportError as err:
    raise InputError(f"serving needs Ray Serve, which is not installed ({err}); install the `serve` extra: "
                     "pip install 'eager-ensembles[serve]' (in a checkout: pip install -e '.[serve]').") from None

PROBE_IMAGES = 32  # the memory-format probe's batch: the middle of the 1-64-image requests `bench --serve` sends
# How long a batch waits for more requests once the first has arrived: none. The pass runs inline, so the
# requests that arrive while it computes are queued and make the next batch; a wait only idles the
# replica (5 ms: 0.88 of its core busy against 0.93 without, in all 12 alternated pairs; docs/performance.md).
BATCH_WAIT_SECONDS = 0.0
Autoencoder = Union[None, str, Callable[[], Any]]  # as ensemble.load takes it, or "module:name"


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to pass `limit` (header, or bytes streamed)."""
    check_declared_length(request.headers.get("content-length"), limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large(limit)
    return bytes(body)


def load_for_serving(run_dir: str, autoencoder: Autoencoder = None, trust_code: bool = False):
    """The run as `ensemble.load` rebuilds it (a URI is downloaded), on this replica's GPU when Ray gave it
    one. A downloaded copy is removed once loaded: predict() then needs only memory."""
    from ensemble.result import load  # only on a replica: it imports torch and scikit-learn
    result = load(run_dir, autoencoder=resolve_autoencoder(autoencoder), trust_code=trust_code)
    if is_uri(run_dir):
        shutil.rmtree(result.run_dir.parent, ignore_errors=True)
    if ray.is_initialized() and ray.get_gpu_ids():  # CUDA_VISIBLE_DEVICES holds only our GPU(s)
        for autoencoder_module in result.autoencoders:
            autoencoder_module.to("cuda")
    return result


def resolve_autoencoder(autoencoder: Autoencoder):
    """A factory as given, or the one a "module:name" string names (config files cannot hold a class)."""
    if autoencoder is None or callable(autoencoder):
        return autoencoder
    from workers.imports import resolve_here
    return resolve_here(str(autoencoder))  # found as every command finds it


def in_fastest_format(result) -> str:
    """Lay the encoders out in the memory format they answer fastest in on this replica's machine (the
    run's `train.memory_format` when it names one; `auto`: measured, `workers.encoding`), and say which.
    As in training, `auto` measures the built-in CAE only: a custom autoencoder keeps PyTorch's layout."""
    import torch  # only on a replica, as in load_for_serving

    from workers.encoding import fastest_encoding_format
    from workers.memory_format import CONTIGUOUS, in_memory_format
    from workers.settings import AUTO
    requested = result.report.config.get("train", {}).get("memory_format", AUTO)
    if requested == AUTO and result.report.config.get("model", {}).get("autoencoder"):
        requested = CONTIGUOUS
    batch = torch.randn(PROBE_IMAGES, *result.report.dataset.image_shape, generator=torch.Generator().manual_seed(0))
    chosen = fastest_encoding_format(result.autoencoders, batch, requested)
    for encoder in result.autoencoders:
        in_memory_format(encoder, chosen)
    return chosen


def answered(answer):
    """A request's (labels, probabilities), or the exception its images alone raised (a 500 for it alone)."""
    if isinstance(answer, BaseException):
        raise answer
    return answer


# Ray Serve pickles the class as it is decorated: everything it calls is defined above it.
api = FastAPI(title="eager-ensembles", docs_url=None, redoc_url=None, openapi_url=None)


@ray_serve.deployment(name="EnsembleModel")  # replicas and resources are set per application in `bind`
@ray_serve.ingress(api)
class EnsembleModel:
    def __init__(self, run_dir: str, autoencoder: Autoencoder, max_batch_size: int, max_body_bytes: int,
                 trust_code: bool = False):
        self.result = load_for_serving(run_dir, autoencoder, trust_code)
        self.image_shape = tuple(self.result.report.dataset.image_shape)
        self.max_body_bytes = max_body_bytes
        self.memory_format = in_fastest_format(self.result)
        self.card = {**model_card(self.result.report), "memory_format": self.memory_format}
        self._predict_batch.set_max_batch_size(max_batch_size)  # type: ignore[attr-defined]  # added by @serve.batch

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
        answer = await self._predict_batch(images)
        if isinstance(answer, RequestError):  # its own images' features overflowed: its error alone
            return JSONResponse(error_body(answer), status_code=answer.status)
        labels, probabilities = answered(answer)
        return JSONResponse(prediction_body(labels, self.result.classes, probabilities))

    async def classify(self, images) -> dict:
        """For a DeploymentHandle: `handle.classify.remote(images).result()` is POST /predict's answer."""
        try:
            batch = checked_images(np.asarray(images), self.image_shape)
        except RequestError as err:
            raise InputError(str(err)) from None
        answer = await self._predict_batch(batch)
        if isinstance(answer, RequestError):
            raise InputError(str(answer))
        labels, probabilities = answered(answer)
        return prediction_body(labels, self.result.classes, probabilities)

    @ray_serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_SECONDS)  # set in __init__
    async def _predict_batch(self, batches: list) -> list:
        # One forward pass for every request queued meanwhile, on this event loop: requests arriving while
        # it computes wait for the next batch. Measured (benchmarks/serve_load.py, 1 CPU a replica): a
        # worker thread here competed for the GIL, and gave batches of 1.7 requests at 1,600 images/s of
        # compute; inline, 4.3 requests at 2,400 images/s, for the same end-to-end throughput.
        # A request whose images fail the pass gets its own error; the others their answers.
        return isolated_answers(batches, self._labels_and_probabilities)

    def _labels_and_probabilities(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probabilities = self.result.predict_proba(images)
        labels, near_tie = labels_from_probabilities(probabilities, self.result.classes)
        if near_tie.any():  # rounding could split a near-tie differently from predict(): ask it
            labels[near_tie] = self.result.predict(images[near_tie])
        return labels, probabilities


