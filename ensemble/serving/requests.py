"""What `ensemble serve` decides about a request, as pure functions (no Ray, no HTTP server):
a request body -> a checked image batch, or a RequestError that says what is wrong; the
probabilities -> the JSON answer; report.json -> the model card.

A bad request must never reach the batch: `@serve.batch` runs one forward pass over many
clients' images, so one malformed batch member would fail everyone's request. What only the
model can find (finite pixels whose features overflow to inf) is isolated after the fact: a
failed batch is answered again one request at a time (`isolated_answers`).
"""

from __future__ import annotations

import io
import json
import math
from functools import lru_cache
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from ensemble.serving.options import MiB

JSON_TYPE = "application/json"
NPY_TYPE = "application/octet-stream"
TIE_TOLERANCE = 1e-6  # top-two probability gap below which the label is taken from predict() itself


class RequestError(ValueError):
    """A request the server refuses: `status` is the HTTP status, the message one line for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def body_format(content_type: Optional[str]) -> str:
    """'json' or 'npy' from a Content-Type header (parameters such as charset ignored)."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media == JSON_TYPE:
        return "json"
    if media == NPY_TYPE:
        return "npy"
    raise RequestError(400, f"unsupported Content-Type {media or '(none)'!r}: send {JSON_TYPE} with "
                            f'{{"images": [...]}} or {NPY_TYPE} with a .npy array.')


def check_declared_length(content_length: Optional[str], limit: int) -> None:
    """Refuse a body whose Content-Length already says it is over `limit` bytes, before reading it."""
    if content_length is not None and content_length.strip().isdigit() and int(content_length) > limit:
        raise too_large(limit)


def too_large(limit: int) -> RequestError:
    return RequestError(413, f"request body over the server's limit of {limit} bytes ({limit / MiB:g} MiB); "
                             "send fewer images per request.")


def images_from_body(body: bytes, kind: str, image_shape: Sequence[int]) -> np.ndarray:
    """The checked float32 N x C x H x W batch from a JSON or .npy body."""
    array = _json_images(body) if kind == "json" else _npy_images(body)
    return checked_images(array, tuple(image_shape))


def _json_images(body: bytes) -> np.ndarray:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(400, f"malformed JSON body: {err}.") from None
    except RecursionError:  # a body nested thousands of levels deep: the client's error, not a 500
        raise RequestError(400, "the JSON body is nested too deeply; images are at most 4 levels deep "
                                "(N x C x H x W).") from None
    if not isinstance(payload, dict) or "images" not in payload:
        raise RequestError(400, 'the JSON body must be an object with an "images" key: {"images": [...]}.')
    try:
        array = np.asarray(payload["images"])
    except ValueError:  # numpy: a ragged nested list
        raise RequestError(400, '"images" is a ragged nested list; every image must have the same shape.') from None
    if array.size and array.dtype.kind not in "iuf":  # strings, booleans, nulls, objects
        raise RequestError(400, f'"images" must hold numbers only (found {_kind_name(array.dtype)}).')
    return array


def _npy_images(body: bytes) -> np.ndarray:
    """Read a .npy body without np.load: the header's shape is checked against the bytes that
    follow before anything is allocated, and object (pickled) arrays are refused."""
    shape, fortran_order, dtype, offset = _npy_header(body[:_header_end(body)])
    if dtype.kind not in "iuf":
        raise RequestError(400, f"the .npy array must hold numbers (int or float); its dtype is {dtype}.")
    count = math.prod(shape)
    data = len(body) - offset
    if data != count * dtype.itemsize:
        raise RequestError(400, f"the .npy header announces shape {shape} ({count * dtype.itemsize} bytes of data) "
                                f"but the body holds {data} bytes after it.")
    array = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
    return array.reshape(shape, order="F" if fortran_order else "C")


def _header_end(body: bytes) -> int:
    """Where a .npy body's header ends (its length field says; version 1 has 2 bytes of it, later ones 4),
    or the body's length when it is too short to say: the header parser then reports what is wrong."""
    if body[:6] != b"\x93NUMPY" or len(body) < 12:
        return len(body)
    if body[6] == 1:
        return 10 + int.from_bytes(body[8:10], "little")
    return 12 + int.from_bytes(body[8:12], "little")


@lru_cache(maxsize=64)
def _npy_header(header: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, Fortran order, dtype, data offset) of a .npy header. numpy parses the header's dict with
    `ast.literal_eval`, a cost paid on every request; clients repeat the same few shapes, so parses are
    kept (its figure: docs/performance.md, "serving per request")."""
    stream = io.BytesIO(header)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(stream)
    except (ValueError, TypeError, OSError, EOFError, SyntaxError) as err:
        raise RequestError(400, f"the body is not a .npy array ({err}).") from None
    return shape, fortran_order, dtype, stream.tell()


def _kind_name(dtype: np.dtype) -> str:
    return {"U": "strings", "S": "strings", "b": "booleans", "O": "nulls or mixed values"}.get(dtype.kind, str(dtype))


def checked_images(array: np.ndarray, expected: tuple[int, ...]) -> np.ndarray:
    """N x C x H x W (or N x H x W for one channel) with N >= 1 and finite pixels, as float32."""
    channels, height, width = expected
    sent = " x ".join(map(str, array.shape)) or "a single number"
    if array.ndim >= 1 and array.shape[0] == 0:
        raise RequestError(400, "empty batch: send at least one image.")
    if array.ndim == 3 and channels == 1:
        array = array[:, np.newaxis]  # N x H x W: one channel, as predict() accepts it
    if array.ndim == 4 and array.shape[2:] == (height, width) and array.shape[1] != channels:
        raise RequestError(400, f"wrong channel count: the images have {array.shape[1]} channel(s), "
                                f"this model takes {channels}.")
    if array.ndim != 4 or array.shape[1:] != expected:
        accepted = f"N x {channels} x {height} x {width}" + (f" or N x {height} x {width}" if channels == 1 else "")
        raise RequestError(400, f"wrong image shape: expected {accepted}, got {sent}.")
    with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused just below
        images = array.astype(np.float32)
    bad = ~np.isfinite(images)
    if bad.any():
        first = int(np.flatnonzero(bad.reshape(len(images), -1).any(axis=1))[0])
        raise RequestError(400, f"{int(bad.sum())} pixel(s) are NaN or inf (the first in image {first}); "
                                "send finite values in the dataset's pixel scale.")
    return images


Answer = Union[tuple[np.ndarray, np.ndarray], RequestError, Exception]  # one request's (labels, probabilities)
NON_FINITE = ("the model's features or probabilities for these images are NaN or inf (pixels far outside the "
              "dataset's scale overflow the encoders); send images in the dataset's pixel scale.")


def isolated_answers(batches: Sequence[np.ndarray],
                     predict: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> list[Answer]:
    """Each request's answer from one `predict` pass over all of them; when that pass fails or gives NaN or
    inf probabilities, each request is answered alone, so only the request at fault gets an error: its 400
    when its images alone give non-finite values (NaN or inf probabilities, or the ValueError that numpy,
    scikit-learn and the combiner raise on inf features), else the exception (a 500 for it alone)."""
    try:
        labels, probabilities = _finite(predict(np.concatenate(batches)))
    except Exception:  # noqa: BLE001 -- whatever one request caused, the others must still be answered
        return [_answer_alone(images, predict) for images in batches]
    ends = np.cumsum([len(images) for images in batches])[:-1]
    return list(zip(np.split(labels, ends), np.split(probabilities, ends), strict=True))


def _answer_alone(images: np.ndarray, predict) -> Answer:
    try:
        return _finite(predict(images))
    except ValueError:  # RequestError included: the images' own values
        return RequestError(400, NON_FINITE)
    except Exception as err:  # noqa: BLE001 -- returned, so it reaches this request's reply only
        return err


def _finite(answer: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if not np.isfinite(answer[1]).all():
        raise RequestError(400, NON_FINITE)
    return answer


def labels_from_probabilities(probabilities: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's most probable class label, and which rows are near-ties: there the label must come
    from predict() itself, so the server's answer equals `RunResult.predict` row for row."""
    order = np.sort(probabilities, axis=1)
    near_tie = (order[:, -1] - order[:, -2] <= TIE_TOLERANCE) if probabilities.shape[1] > 1 else \
        np.zeros(len(probabilities), dtype=bool)
    return classes[np.argmax(probabilities, axis=1)], near_tie


def prediction_body(labels: np.ndarray, classes: np.ndarray, probabilities: np.ndarray) -> dict[str, Any]:
    """The JSON answer: labels as the dataset gives them, the class order of the probability columns."""
    return {"labels": labels.tolist(), "classes": classes.tolist(), "probabilities": probabilities.tolist()}


def error_body(err: RequestError) -> dict[str, str]:
    return {"error": str(err)}


def model_card(report) -> dict[str, Any]:
    """What `GET /` shows: enough for a user to know what they are calling and how good it is. The
    run is named, not located: its directory's path on the server is none of a client's business."""
    ensemble, dataset = report.ensemble, report.dataset
    return {
        "model": f"eager ensemble {report.name!r}", "run": report.name,
        "dataset": {"source": dataset.source, "image_shape": dataset.image_shape,
                    "classes": dataset.classes, "labels": dataset.labels, "test_images": dataset.test},
        "members": len(ensemble.members_used), "combiner": report.config.get("combiner", {}).get("kind"),
        "test_accuracy": ensemble.test_accuracy,
        "untrained_encoders_test_accuracy": ensemble.untrained_test_accuracy,
        "baseline_test_accuracy": report.baseline.test_accuracy if report.baseline else None,
        "verdict": report.verdict,
        "usage": f"POST /predict with {JSON_TYPE} {{\"images\": [...]}} (N x C x H x W or N x H x W in the "
                 f"dataset's pixel scale) or {NPY_TYPE} with a .npy array",
    }
