"""What data a run used, recorded truthfully: a content fingerprint of the images and labels
(`data_record`, in report.json's `dataset`), and, for in-memory arrays, the splits drawn, saved in
the run directory (`save_splits` / `read_splits`) so analysis in a fresh process needs no data.

Two runs on the same data carry the same sha256, whatever the data's name: the hash covers the
images' bytes as loaded (dataset's own pixel scale, N x C x H x W, C-contiguous) and the labels'
values, so it changes when any pixel or label does.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ensemble.data.normalizer import Normalizer
from ensemble.data.sources import Source
from workers.errors import InputError, without_unpickling_advice
from workers.layout import SPLITS, write_atomic


def data_record(source: Source, name: str) -> dict:
    """name, shape (every image, N x C x H x W), dtype, images per class (by label value) and the
    sha256 of the content."""
    parts = [source.pool] + ([source.test] if source.test is not None else [])
    digest = hashlib.sha256()
    for part in parts:
        digest.update(_bytes(part.x))
        digest.update(np.ascontiguousarray(part.y.numpy(), dtype="<i8").tobytes())
    labels = torch.cat([part.y for part in parts])
    counts = torch.bincount(labels, minlength=len(source.classes)).tolist()
    values = source.label_values or tuple(range(len(source.classes)))
    return {"name": name, "shape": [len(labels), *source.pool.x.shape[1:]],
            "dtype": str(source.pool.x.dtype).removeprefix("torch."),
            "class_counts": {str(value): count for value, count in zip(values, counts, strict=True)},
            "sha256": digest.hexdigest()}


def _bytes(images: torch.Tensor) -> bytes:
    return images.contiguous().numpy().tobytes()


def save_splits(run_dir: Path, splits) -> None:
    """The normalised splits, classes, label values and data record as one .npz (no pickle)."""
    arrays = {f"{side}_{axis}": getattr(splits, f"{side}_{axis}").numpy()
              for side in ("train", "val", "test") for axis in ("x", "y")}
    for key in ("unlabelled_x", "labelled"):  # few labels: images without labels, the combiner's subset
        if getattr(splits, key, None) is not None:
            arrays[key] = getattr(splits, key).numpy()
    meta = {"source": splits.source, "classes": list(splits.classes), "label_values": list(splits.label_values),
            "normalizer": splits.normalizer.to_json(), "record": splits.record}
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array(json.dumps(meta)), **arrays)
    write_atomic(Path(run_dir) / SPLITS, buffer.getvalue())


def read_splits(run_dir: Path, data=None) -> Optional[dict]:
    """The fields of `Splits` saved in `run_dir`, or None when the run saved none."""
    path = Path(run_dir) / SPLITS
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            tensors = {key: torch.from_numpy(archive[key].copy()) for key in archive.files if key != "meta"}
        normalizer = Normalizer.from_json(meta["normalizer"])  # a scale of 0 or NaN names this file too
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"{str(path)!r} cannot be read ({type(err).__name__}: {without_unpickling_advice(err)}); "
                         "pass the data again (dataset=...).") from None
    return dict(tensors, num_classes=len(meta["classes"]), source=meta["source"],
                normalizer=normalizer, classes=tuple(meta["classes"]),
                label_values=tuple(meta["label_values"]), data=data, record=meta["record"])
