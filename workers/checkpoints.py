"""Atomic, safe per-epoch checkpoints.

Layout: `checkpoint_000003/` holding `model.safetensors` (weights), `state.pt` (optimizer
and RNG state, loaded with `weights_only=True`) and `manifest.json` (epoch, metadata and
the SHA-256 of the other two, and its identity: the member's name, the run's id and the
architecture's parameter names and shapes). Every read checks the identity against where the
checkpoint sits (its epoch and member directory) and, when the reader knows it, the run it reads
for: a checkpoint moved or copied from elsewhere is a `CheckpointMismatch`, never silently loaded.
Manifests from before the identity was recorded get the epoch check.

A checkpoint is written under a temporary name and renamed into place, so a crash mid-write
never leaves a half checkpoint under a real name; the checksums catch truncation or corruption
that happens afterwards. The same writer installs a checkpoint that arrives as bytes from another
node (`write_checkpoint_files`), after checking it against its manifest.
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

from workers.errors import InputError, refused_global
from workers.layout import (
    CHECKPOINT_PATTERN,
    MANIFEST,
    RUN_ID,
    STATE,
    TEMP_PREFIX,
    WEIGHTS,
    checkpoint_dir,
    write_synced,
)


class CheckpointError(InputError):
    """A checkpoint that is missing, truncated, corrupted or not ours."""


class CheckpointMismatch(CheckpointError):
    """An intact checkpoint that belongs elsewhere: another epoch's, another member's or another run's."""


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


def fingerprint(weights: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    """The architecture as the weights show it: each parameter's name and shape."""
    return {name: list(tensor.shape) for name, tensor in weights.items()}


def save_checkpoint(member_dir: Path, epoch: int, weights: dict[str, torch.Tensor], state: dict[str, Any],
                    meta: dict[str, Any], run_id: Optional[str] = None) -> Path:
    """Checkpoint `epoch` of the member whose directory is `member_dir` (its name is the member's), for
    the run `run_id` (None: a run without an id, as before ids were recorded)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    files = {WEIGHTS: save_safetensors({k: v.detach().cpu().contiguous() for k, v in weights.items()}),
             STATE: buffer.getvalue()}
    manifest = {"epoch": epoch, "member": Path(member_dir).name, RUN_ID: run_id, "architecture": fingerprint(weights),
                "files": {name: _sha256_bytes(data) for name, data in files.items()}, "meta": meta}
    return write_checkpoint_files(member_dir, epoch, {**files, MANIFEST: json.dumps(manifest).encode()})


def check_identity(manifest: dict[str, Any], path: Path, run_id: Optional[str] = None) -> None:
    """The checkpoint at `path` must be the one its place names: the epoch of its directory's name, the
    member of its parent directory's name and, when `run_id` is given, that run. Fields a manifest from
    before they were recorded lacks are not checked, except the run: a run with an id wrote it in every
    checkpoint."""
    path = Path(path)
    place = CHECKPOINT_PATTERN.match(path.name)
    recorded, expected = [], []
    if place is not None and manifest.get("epoch") != int(place.group(1)):
        recorded.append(f"epoch {manifest.get('epoch')!r}")
        expected.append(f"epoch {int(place.group(1))}")
    if "member" in manifest and manifest["member"] != path.parent.name:
        recorded.append(f"member {manifest['member']!r}")
        expected.append(f"member {path.parent.name!r}")
    if run_id is not None and manifest.get(RUN_ID) != run_id:
        recorded.append(f"run id {manifest.get(RUN_ID)!r}")
        expected.append(f"run id {run_id!r}")
    if recorded:
        raise CheckpointMismatch(
            f"checkpoint {str(path)!r} records {', '.join(recorded)}, but it is read as {', '.join(expected)} "
            "(its directory and run): it was moved or copied from elsewhere, so its weights are not the ones this "
            "run chose. Restore the run directory as the run wrote it.")


def read_manifest(path: Path) -> dict[str, Any]:
    """A checkpoint's manifest.json, which must be a JSON object."""
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err}); it is "
                              "truncated, corrupted or not one of ours.") from None
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{str(Path(path) / MANIFEST)!r} is not a checkpoint manifest (a JSON object).")
    return manifest


def verify_identity(path: Path, run_id: Optional[str] = None) -> None:
    """`check_identity` from the manifest alone (no tensor is read): for checking many checkpoints up front."""
    check_identity(read_manifest(path), path, run_id)


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
    check_identity(manifest, checkpoint_dir(member_dir, epoch))  # another member's checkpoint is not written here
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


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu", run_id: Optional[str] = None
                    ) -> Checkpoint:
    """Check its identity (`check_identity`) and checksums, then load without unpickling arbitrary objects."""
    path = Path(path)
    manifest = read_manifest(path)
    check_identity(manifest, path, run_id)
    try:
        files = manifest["files"]
        for name in (WEIGHTS, STATE):
            if _sha256(path / name) != files[name]:
                raise CheckpointError(f"checkpoint {path} is corrupted: {name} does not match its recorded checksum.")
        weights = load_file(str(path / WEIGHTS), device=str(map_location))
        state = torch.load(path / STATE, map_location=map_location, weights_only=True)
    except CheckpointError:
        raise
    except pickle.UnpicklingError as err:  # PyTorch's text advises weights_only=False: never for a file like this
        raise CheckpointError(f"checkpoint {path} cannot be read: {STATE} is not one this program writes "
                              f"({refused_global(err)}). It is refused, not unpickled, because unpickling a file "
                              "runs its code; remove the checkpoint or restore it from the run.") from None
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as err:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err}); "
                              "it is truncated, corrupted or not one of ours.") from None
    if "architecture" in manifest and manifest["architecture"] != fingerprint(weights):
        raise CheckpointError(f"{str(path / MANIFEST)!r} records an architecture its weights do not have; the "
                              "checkpoint's files do not belong together.")
    return Checkpoint(int(manifest["epoch"]), path, weights, state, manifest.get("meta", {}))


def saved_shapes(path: Path) -> Optional[dict[str, tuple]]:
    """Each saved tensor's shape, read from the weights file's header (no tensor is loaded); None when
    the file cannot be read (the loader skips such a checkpoint for an older one)."""
    try:
        with safe_open(str(Path(path) / WEIGHTS), "pt") as weights:
            return {key: tuple(weights.get_slice(key).get_shape()) for key in weights.keys()}
    except Exception:  # safetensors raises its own error types, and OSError for a missing file
        return None


def load_weights(path: Path, map_location: str | torch.device = "cpu", run_id: Optional[str] = None
                 ) -> dict[str, torch.Tensor]:
    return load_checkpoint(path, map_location, run_id).weights


def load_latest_valid(member_dir: Path, map_location: str | torch.device = "cpu", run_id: Optional[str] = None
                      ) -> tuple[Optional[Checkpoint], list[CheckpointError]]:
    """The newest checkpoint that loads (and is this member's and run's), and the errors of the newer ones
    skipped on the way."""
    skipped: list[CheckpointError] = []
    for _, path in reversed(list_checkpoints(member_dir)):
        try:
            return load_checkpoint(path, map_location, run_id), skipped
        except CheckpointError as err:
            skipped.append(err)
    return None, skipped
