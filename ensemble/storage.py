"""Run directories on cloud or shared storage: `output` may be a URI (`s3://`, `gs://`, or any
other filesystem pyarrow knows), as Ray Train's `storage_path` may.

The run is staged in a local directory on the driver, exactly like a local run, and mirrored
to the URI as it goes: after every event from a member (so each epoch's checkpoint is on the
store as soon as the driver hears of it) and at the end. Object stores have no rename, so a
checkpoint's manifest is uploaded after its other files: on the store a checkpoint without
a manifest is incomplete, and the loader skips it as it skips a truncated one. `--resume`
of a URI downloads the run into a fresh staging directory first.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import urlsplit, urlunsplit

from workers.errors import InputError
from workers.layout import MANIFEST

log = logging.getLogger(__name__)


def is_uri(output: str | Path) -> bool:
    return "://" in str(output)


def join_uri(uri: str, name: str) -> str:
    """`uri`/`name`, keeping a query string (s3://b/runs?endpoint_override=...) at the end."""
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{name}"))


def split_uri(uri: str) -> tuple[str, str]:
    """The parent URI and the last name of `uri` (the inverse of `join_uri`)."""
    parts = urlsplit(uri)
    parent, name = parts.path.rstrip("/").rsplit("/", 1)
    return urlunsplit(parts._replace(path=parent)), name


def _filesystem(uri: str):
    try:
        import pyarrow.fs  # only runs that write to a URI need pyarrow loaded (the `cloud` extra)
    except ImportError:
        raise InputError(f"the URI {uri!r} needs pyarrow, which is not installed; install the cloud extra: "
                         "pip install 'eager-ensembles[cloud]'.") from None
    try:
        return pyarrow.fs.FileSystem.from_uri(uri)
    except (OSError, ValueError) as err:  # pyarrow: unknown scheme, bad URI, missing credentials
        raise InputError(f"cannot open the output URI {uri!r}: {err}. Use a local path, or a URI pyarrow "
                         "supports (s3://bucket/path, gs://bucket/path) with credentials in the environment.") from None


def read_text(uri: str) -> str | None:
    """The text of one file at `uri`, or None if there is none."""
    filesystem, path = _filesystem(uri)
    try:
        with filesystem.open_input_stream(path) as stream:
            return stream.read().decode()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise InputError(f"cannot read {uri}: {err}.") from None


def run_file(run_dir: str | Path, name: str) -> str | None:
    """The text of a file in a run directory, local or at a URI; None if it is not there."""
    if is_uri(run_dir):
        return read_text(join_uri(str(run_dir), name))
    path = Path(run_dir) / name
    return path.read_text() if path.is_file() else None


def occupied(where: str) -> InputError:
    return InputError(f"run directory {where!r} already exists and is not empty; choose another --name (or "
                      "--output), or move the old run away. Nothing was changed.")


class Mirror:
    """A local staging run directory and its copy at `uri`; `push()` uploads what changed.
    Without `local`, a new staging directory is made once the URI has opened."""

    def __init__(self, uri: str, local: Path | None = None):
        self.uri = uri
        self.filesystem, self.root = _filesystem(self.uri)
        self.local = Path(local) if local is not None else staging_dir(split_uri(uri)[1])
        self._sent: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns) last uploaded
        self._pending: set[str] = set()  # paths given to push() and not uploaded yet
        self.failure: str | None = None

    def exists_with_files(self) -> bool:
        import pyarrow.fs
        try:
            return bool(self.filesystem.get_file_info(pyarrow.fs.FileSelector(self.root, allow_not_found=True)))
        except OSError as err:
            raise InputError(f"cannot read the output URI {self.uri!r}: {err}.") from None

    def pull(self) -> None:
        """Download the whole run into the (empty) staging directory."""
        import pyarrow.fs
        if not self.exists_with_files():
            raise InputError(f"there is no run at {self.uri!r}.")
        self.local.mkdir(parents=True, exist_ok=True)
        try:
            pyarrow.fs.copy_files(self.root, str(self.local), source_filesystem=self.filesystem,
                                  destination_filesystem=pyarrow.fs.LocalFileSystem())
        except OSError as err:
            raise InputError(f"cannot download the run at {self.uri!r}: {err}.") from None
        self._sent = dict(self._local_files())  # already on the store: not uploaded again

    def _local_files(self):
        """(relative path, (size, mtime_ns)) of every file but temporaries (dot names). Actors
        create and remove temporaries while this walks: os.walk skips what vanished."""
        for folder, subfolders, files in os.walk(self.local):
            subfolders[:] = [name for name in subfolders if not name.startswith(".")]
            for name in files:
                if name.startswith("."):
                    continue
                path = Path(folder) / name
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                yield path.relative_to(self.local).as_posix(), (stat.st_size, stat.st_mtime_ns)

    def push(self, paths: Iterable[str] | None = None, final: bool = False) -> None:
        """Upload `paths` (relative to the run directory; a directory means its files), the ones an
        event produced, plus whatever an earlier push could not send; with no `paths`, every new or
        changed file (a walk of the whole tree: the final push and the analysis commands). Manifests
        go last. A failed upload while training is reported once and retried at the next push; a
        failed final push is an error that says where the complete local copy is."""
        if paths is None:
            candidates = {relative for relative, key in self._local_files() if self._sent.get(relative) != key}
            self._pending.clear()
        else:
            self._pending.update(paths)
            candidates = set(self._expand(self._pending))
        try:
            for relative in sorted(candidates, key=lambda name: (name.endswith(MANIFEST), name)):
                self._upload(relative)
            self._pending -= {p for p in self._pending if (self.local / p).exists()}  # the rest arrives later
            if self.failure is not None:
                log.warning("upload to %s works again; the store has caught up.", self.uri)
                self.failure = None
        except OSError as err:
            if final:
                raise RuntimeError(f"could not upload the run to {self.uri} ({err}); the complete run is in "
                                   f"{self.local}: copy it there by hand.") from None
            if self.failure is None:
                log.warning("upload to %s failed (%s); retrying after the next epoch. Everything is kept in %s.",
                            self.uri, err, self.local)
            self.failure = str(err)

    def _expand(self, paths: Iterable[str]) -> Iterator[str]:
        """The files behind `paths`: a file itself, a directory's files (no temporaries); a path
        not there yet is skipped (it stays pending: a remote member's first checkpoint comes with
        its first epoch)."""
        for relative in paths:
            path = self.local / relative
            if path.is_dir():
                yield from (f"{relative}/{child.name}" for child in path.iterdir()
                            if child.is_file() and not child.name.startswith("."))
            elif path.is_file():
                yield relative

    def _upload(self, relative: str) -> None:
        """One file, unless the store already has these bytes (same size and modification time)."""
        try:
            stat = (self.local / relative).stat()
            source = open(self.local / relative, "rb")
        except FileNotFoundError:  # replaced by an actor as we looked: the next push sends it
            return
        key = (stat.st_size, stat.st_mtime_ns)
        with source:
            if self._sent.get(relative) == key:
                return
            destination = f"{self.root}/{relative}"
            self.filesystem.create_dir(destination.rsplit("/", 1)[0], recursive=True)
            with self.filesystem.open_output_stream(destination) as target:
                shutil.copyfileobj(source, target)
        self._sent[relative] = key


def staging_dir(name: str) -> Path:
    """A new local directory for a run mirrored to a URI; kept after the run (the local copy)."""
    return Path(tempfile.mkdtemp(prefix="ensemble-staging-")) / name


def open_mirror(output: str, name: str, resume: bool) -> Mirror:
    """The mirror of run `name` under the URI `output`: a new run must not exist there yet; a
    resumed one is downloaded."""
    mirror = Mirror(join_uri(output, name))
    if resume:
        mirror.pull()
    elif mirror.exists_with_files():
        raise occupied(mirror.uri)
    else:
        mirror.local.mkdir(parents=True)
    return mirror


def download(uri: str) -> Path:
    """A local copy of the run at `uri`, in a new staging directory, to read; nothing is left
    behind when the download fails."""
    mirror = Mirror(uri)
    try:
        mirror.pull()
    except BaseException:
        shutil.rmtree(mirror.local.parent, ignore_errors=True)
        raise
    return mirror.local


@contextmanager
def local_copy(run_dir: str | Path) -> Iterator[Path]:
    """A finished run to read and add to (`ensemble select`, `ensemble curves`): the directory
    itself when local; for a URI a downloaded copy, whose new files go back up on success."""
    if not is_uri(run_dir):
        yield Path(run_dir)
        return
    mirror = Mirror(str(run_dir))
    mirror.pull()
    yield mirror.local
    mirror.push(final=True)
