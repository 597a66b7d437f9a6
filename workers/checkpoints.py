"""Atomic, safe per-epoch checkpoints.

Layout: `checkpoint_000003/` holding `model.safetensors` (weights), `state.pt` (optimizer
and RNG state, loaded with `weights_only=True`) and `manifest.json` (epoch, metadata and
the SHA-256 of the other two). A checkpoint is written under a temporary name and renamed
into place, so a crash mid-write never leaves a half checkpoint under a real name; the
checksums catch truncation or corruption that happens afterwards. The same writer installs a
checkpoint that arrives as bytes from another node (`write_checkpoint_files`), after checking
it against its manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors

from workers.errors import InputError
from workers.layout import CHECKPOINT_PATTERN, MANIFEST, STATE, TEMP_PREFIX, WEIGHTS, checkpoint_dir, write_synced


class CheckpointError(InputError):
    """A checkpoint that is missing, truncated, corrupted or not ours."""


@dataclass(frozen=True)
class Checkpoint:
    epoch: int
    path: Path
    weights: dict[str, torch.Tensor]
    state: dict[str, Any]
    meta: dict[str, Any]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_checkpoint(member_dir: Path, epoch: int, weights: dict[str, torch.Tensor], state: dict[str, Any],
                    meta: dict[str, Any]) -> Path:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    files = {WEIGHTS: save_safetensors({k: v.detach().cpu().contiguous() for k, v in weights.items()}),
             STATE: buffer.getvalue()}
    manifest = {"epoch": epoch, "files": {name: _sha256_bytes(data) for name, data in files.items()}, "meta": meta}
    return write_checkpoint_files(member_dir, epoch, {**files, MANIFEST: json.dumps(manifest).encode()})


def checkpoint_files(path: Path) -> dict[str, bytes]:
    """A checkpoint directory's files as bytes, to ship it to another node."""
    return {name: (Path(path) / name).read_bytes() for name in (WEIGHTS, STATE, MANIFEST)}


def write_checkpoint_files(member_dir: Path, epoch: int, files: dict[str, bytes]) -> Path:
    """Write checkpoint `epoch` from its files' bytes (saved here or received from another node):
    the manifest's checksums are verified first, then the files go to a temporary directory that
    is renamed into place, so a reader never sees half a checkpoint."""
    try:
        manifest = json.loads(files[MANIFEST])
        intact = int(manifest["epoch"]) == epoch and set(files) == {WEIGHTS, STATE, MANIFEST} and all(
            _sha256_bytes(files[name]) == manifest["files"][name] for name in (WEIGHTS, STATE))
    except (KeyError, TypeError, ValueError):
        intact = False
    if not intact:
        raise CheckpointError(f"checkpoint {epoch} for {member_dir} does not match its manifest; not written.")
    member_dir = Path(member_dir)
    member_dir.mkdir(parents=True, exist_ok=True)
    tmp = member_dir / f"{TEMP_PREFIX}-{epoch:06d}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for name, data in files.items():
            write_synced(tmp / name, data)
        final = checkpoint_dir(member_dir, epoch)
        if final.exists():  # re-running an epoch after a crash: swap the old one out, then drop it
            stale = member_dir / f"{TEMP_PREFIX}-stale-{uuid.uuid4().hex[:8]}"
            os.rename(final, stale)
            os.rename(tmp, final)
            shutil.rmtree(stale, ignore_errors=True)
        else:
            os.rename(tmp, final)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sweep_temporaries(member_dir: Path) -> list[Path]:
    """Remove what a crash mid-write left behind; returns what was removed."""
    member_dir = Path(member_dir)
    swept = [p for p in member_dir.glob(f"{TEMP_PREFIX}-*")] if member_dir.exists() else []
    for path in swept:
        shutil.rmtree(path, ignore_errors=True)
    return swept


def list_checkpoints(member_dir: Path) -> list[tuple[int, Path]]:
    member_dir = Path(member_dir)
    if not member_dir.exists():
        return []
    found = [(int(m.group(1)), p) for p in member_dir.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return sorted(found)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Verify checksums, then load without unpickling arbitrary objects."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files = manifest["files"]
        for name in (WEIGHTS, STATE):
            if _sha256(path / name) != files[name]:
                raise CheckpointError(f"checkpoint {path} is corrupted: {name} does not match its recorded checksum.")
        weights = load_file(str(path / WEIGHTS), device=str(map_location))
        state = torch.load(path / STATE, map_location=map_location, weights_only=True)
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, pickle.UnpicklingError, SafetensorError) as err:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err}); "
                              "it is truncated, corrupted or not one of ours.") from None
    return Checkpoint(int(manifest["epoch"]), path, weights, state, manifest.get("meta", {}))


def saved_shapes(path: Path) -> Optional[dict[str, tuple]]:
    """Each saved tensor's shape, read from the weights file's header (no tensor is loaded); None when
    the file cannot be read (the loader skips such a checkpoint for an older one)."""
    try:
        with safe_open(str(Path(path) / WEIGHTS), "pt") as weights:
            return {key: tuple(weights.get_slice(key).get_shape()) for key in weights.keys()}
    except Exception:  # safetensors raises its own error types, and OSError for a missing file
        return None


def load_weights(path: Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    return load_checkpoint(path, map_location).weights


def load_latest_valid(member_dir: Path, map_location: str | torch.device = "cpu"
                      ) -> tuple[Optional[Checkpoint], list[CheckpointError]]:
    """The newest checkpoint that loads, and the errors of the newer ones skipped on the way."""
    skipped: list[CheckpointError] = []
    for _, path in reversed(list_checkpoints(member_dir)):
        try:
            return load_checkpoint(path, map_location), skipped
        except CheckpointError as err:
            skipped.append(err)
    return None, skipped
