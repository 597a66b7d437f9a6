"""The thin Ray shell around `workers.training`: placement, threads, device, progress.

Only `MemberActor`'s few calls into Ray (its decorator, the GPU ids and node id Ray gives it) touch
Ray; everything it runs is plain code tested without a cluster.
"""

from __future__ import annotations

import ctypes
import os
import time
import warnings
from dataclasses import dataclass, replace
from typing import Iterator, Optional, Sequence

import numpy as np
import ray
import torch

from workers.encoding import EncodedEpochs, EncodeRequest, encode_checkpoints, epochs_to_encode, with_own_head
from workers.events import Done, EpochEnded, Shipment, Started
from workers.memory_format import CONTIGUOUS, cache_path, cached_choice, probe_key, remember_choice
from workers.models import AutoencoderFactory, builtin_description
from workers.outcome import Outcome
from workers.packed import PackMember, train_pack
from workers.sampling import bootstrap_indices
from workers.scratch import Handoff, Workdir, machine
from workers.settings import AUTO
from workers.stopping import StopRule
from workers.training import (
    Began,
    Trained,
    TrainSettings,
    apply_fast_paths,
    make_optimizer,
    resolve_memory_format,
    train_member,
    train_one_epoch,
    validation_loss,
)


@dataclass(frozen=True)
class MemberSpec:
    """Everything one member (or the baseline) needs, shipped once to its actor."""
    name: str                      # "member_00" ... or "baseline"
    directory: str                 # its directory in the driver's run directory
    factory: AutoencoderFactory
    settings: TrainSettings
    should_stop: StopRule
    bootstrap_seed: Optional[int] = None
    encoding: Optional[EncodeRequest] = None  # what to encode when it finishes (None: the driver encodes)


def torch_threads(num_cpus: float) -> int:
    """Torch threads follow the actor's CPU share, so members never oversubscribe the cores."""
    return max(1, int(num_cpus))


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse instead of handing each activation buffer back
    to the OS. A fresh worker process otherwise page-faults on every batch, which slows its epochs
    (docs/performance.md); a process that once freed a large array, like the driver, gets this from
    glibc's own heuristics. Returns whether it applied (glibc only; elsewhere nothing changes)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))


def choose_device(gpu_ids: list, cuda_available: bool) -> str:
    """Ray sets CUDA_VISIBLE_DEVICES to the actor's own GPUs, so its first GPU is always cuda:0."""
    return "cuda:0" if gpu_ids and cuda_available else "cpu"


def as_tensor(array: np.ndarray, device: str) -> torch.Tensor:
    """Zero-copy view of the object store's read-only array on CPU; one copy onto a GPU."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only buffer: training never writes to it
        tensor = torch.from_numpy(array)
    return tensor.to(device) if device != "cpu" else tensor


# CPUs and GPUs are set per member with .options(num_cpus=..., num_gpus=...); a second thread
# answers `use_threads` while `train` runs
@ray.remote(max_concurrency=2)  # type: ignore[call-overload]  # Ray's overloads omit this actor option
class MemberActor:
    def __init__(self, num_cpus: float):
        self.num_cpus = num_cpus
        self.threads_wanted = torch_threads(num_cpus)
        torch.set_num_threads(self.threads_wanted)
        keep_freed_memory()
        self.device = choose_device(ray.get_gpu_ids(), torch.cuda.is_available())
        self._data: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # the shared images on this device
        self._data_key, self.device_copies = None, 0
        self._formats: dict[str, str] = {}  # a model's probe key -> the memory format "auto" chose here

    def rest(self) -> None:
        """Between runs, when the pool keeps this actor warm for the next one: the run's data is let go
        (its object-store block unpinned, its device copy freed), the threads go back to the actor's own
        share (the pool may have lent it more), and the copy count starts again, as in a new actor."""
        self._data, self._data_key, self.device_copies = None, None, 0
        if self.device != "cpu":
            torch.cuda.empty_cache()
        self.threads_wanted = torch_threads(self.num_cpus)
        torch.set_num_threads(self.threads_wanted)

    def placement(self) -> dict:
        return {"device": self.device, "threads": torch.get_num_threads(), "gpu_ids": ray.get_gpu_ids(),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid(),
                "node_id": ray.get_runtime_context().get_node_id(),
                "device_copies": self.device_copies}

    def warm_up(self, spec: MemberSpec, data: dict, threads: Optional[int] = None) -> dict:
        """One training step and one evaluation of `spec`'s model on one batch, thrown away: PyTorch's
        one-time costs (kernel choice for these shapes, the first allocations) are
        paid when the actor starts, not in a member's first epoch. `threads`: torch threads to train with
        from now on (the baseline on a group of members' actors: their CPUs together). Returns the
        placement."""
        if threads is not None:
            self.threads_wanted = max(1, int(threads))
            self._follow_threads()
        settings = replace(self._settings(spec, data), compile=False)  # compiling a throwaway model costs time
        batch = self._on_device(data)[0][:settings.batch_size]  # the one copy of the data, made now
        model, (batch,) = apply_fast_paths(spec.factory().to(self.device), (batch,), settings)
        generator = torch.Generator(device=self.device).manual_seed(0)
        train_one_epoch(model, make_optimizer(model, settings), batch, settings, generator)
        validation_loss(model, batch, settings.batch_size, settings.precision)
        return self.placement()

    def train(self, spec: MemberSpec, data: dict, handoff: Handoff) -> Iterator[Shipment]:
        """A Ray generator: `Started`, one `EpochEnded` per finished epoch as it happens, then `Done`.
        Off the driver's machine each shipment also carries the files the driver must write.
        An actor trains several members one after another; nothing carries over between them
        (the seed is set and the model, optimizer and generator are built afresh)."""
        workdir = self._workdir(spec, handoff)
        train_x, val_x = self._member_data(spec, data)
        settings = self._settings(spec, data)
        torch.manual_seed(spec.settings.seed)
        model = spec.factory().to(self.device)
        steps = train_member(model, train_x, val_x, settings, spec.should_stop, workdir.path)
        yield from self._shipments([spec], [workdir], ((0, step) for step in steps), data, [settings.memory_format])

    def train_pack(self, specs: Sequence[MemberSpec], data: dict, handoffs: Sequence[Handoff]) -> Iterator[Shipment]:
        """`train` for several members as one batched computation (`workers.packed`): each member's own
        events, in the order they happen; a member that stops leaves the pack and the others go on."""
        workdirs = [self._workdir(spec, handoff) for spec, handoff in zip(specs, handoffs, strict=True)]
        members = []
        for spec, workdir in zip(specs, workdirs, strict=True):
            torch.manual_seed(spec.settings.seed)  # each member's own initialisation, as alone
            settings = spec.settings  # "auto" packs in the default format (vmap's grouped convolutions)
            settings = replace(settings, memory_format=CONTIGUOUS) if settings.memory_format == AUTO else settings
            members.append(PackMember(spec.factory().to(self.device), self._member_data(spec, data)[0],
                                      settings, spec.should_stop, workdir.path))
        steps = train_pack(members, self._on_device(data)[1])
        yield from self._shipments(specs, workdirs, steps, data, [m.settings.memory_format for m in members])

    def _settings(self, spec: MemberSpec, data: dict) -> TrainSettings:
        """The spec's settings with "auto" memory format resolved: probed on its model and one batch of
        the run's data the first time this actor meets that model, the choice kept for the next ones."""
        if spec.settings.memory_format != AUTO:
            return spec.settings
        if builtin_description(spec.factory) is None:  # a custom model's code runs in its own epochs only
            return replace(spec.settings, memory_format=CONTIGUOUS)
        batch = self._on_device(data)[0][:spec.settings.batch_size]
        key = probe_key(repr(spec.factory), batch.shape, self.device, torch.get_num_threads(),
                        f"{spec.settings.optimizer} {spec.settings.precision}")
        if key not in self._formats:
            self._formats[key] = cached_choice(cache_path(), key) or self._probe(spec, batch, key)
        return replace(spec.settings, memory_format=self._formats[key])

    def _probe(self, spec: MemberSpec, batch: torch.Tensor, key: str) -> str:
        """Measure both formats on the spec's model (`resolve_memory_format`) and remember the choice for
        this machine's later actors."""
        torch.manual_seed(spec.settings.seed)
        chosen = resolve_memory_format(spec.settings, spec.factory().to(self.device), batch).memory_format
        remember_choice(cache_path(), key, chosen)
        return chosen

    def _shipments(self, specs: Sequence[MemberSpec], workdirs: Sequence[Workdir], steps,
                   data: dict, formats: Sequence[str]) -> Iterator[Shipment]:
        """Each (member index, training step) as the event the driver gets, with its node's new files."""
        self._follow_threads()  # this thread's count, which an earlier run's lent CPUs may have raised
        placements = [{**self.placement(), "directory": str(workdir.path), "memory_format": memory_format}
                      for workdir, memory_format in zip(workdirs, formats, strict=True)]
        for index, step in steps:
            ran_with = torch.get_num_threads()
            self._follow_threads()  # before the next epoch: the pool may have lent this member idle CPUs
            name, workdir = specs[index].name, workdirs[index]
            match step:
                case Began(resumed_from, skipped):
                    yield Shipment(Started(name, time.time(), placements[index], resumed_from, skipped))
                case Trained(record, decision):
                    yield Shipment(EpochEnded(name, time.time(), record, decision, ran_with), workdir.news())
                case Outcome():
                    # before close() frees the disk; in the format the member trained in
                    features = self._encode(specs[index], workdir, step, data, formats[index])
                    files = workdir.news()
                    workdir.close()
                    yield Shipment(Done(name, time.time(), step), files, features)

    def _encode(self, spec: MemberSpec, workdir: Workdir, outcome: Outcome, data: dict,
                memory_format: str) -> EncodedEpochs:
        """The finished member's features for the combiner, from its own checkpoints on this node's disk.
        Best effort: anything that fails here is left to the driver, which encodes the member itself and
        reports a bad checkpoint in its own words, as before."""
        if spec.encoding is None or "head_rows" not in data:
            return {}
        rows = torch.as_tensor(data["head_rows"], device=self.device)  # the training images the combiner fits on
        splits = {"train": self._on_device(data)[0][rows], "test": as_tensor(data["test_x"], self.device)}
        try:
            encoded = encode_checkpoints(spec.factory, workdir.path, epochs_to_encode(spec.encoding, outcome.history),
                                         splits, self.device, memory_format)
        except Exception:  # noqa: BLE001 (the driver redoes it and raises the real error if it still fails)
            return {}
        try:
            return with_own_head(encoded, spec.encoding, outcome.history, data.get("head_y"))
        except Exception:  # noqa: BLE001 (the features stand; the driver fits the head itself)
            return encoded

    def _workdir(self, spec: MemberSpec, handoff: Handoff) -> Workdir:
        return Workdir(spec.directory, handoff, machine(ray.get_runtime_context().get_node_id()))
    def use_threads(self, threads: int) -> None:
        """From the pool, while `train` runs: CPUs its idle actors hold are lent to this member; the
        training thread applies it between epochs (torch's thread count belongs to that thread)."""
        self.threads_wanted = max(1, int(threads))

    def _follow_threads(self) -> None:
        if torch.get_num_threads() != self.threads_wanted:
            torch.set_num_threads(self.threads_wanted)

    def _member_data(self, spec: MemberSpec, data: dict) -> tuple[torch.Tensor, torch.Tensor]:
        train_x, val_x = self._on_device(data)
        if spec.bootstrap_seed is not None:  # bagging: this member's own sample of the training split
            train_x = train_x[bootstrap_indices(len(train_x), spec.bootstrap_seed).to(self.device)]
        return train_x, val_x

    def _on_device(self, data: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The shared images on this actor's device, copied once per actor (not once per member it
        trains): on a GPU the copy is kept for the next member on the same data."""
        key = data.get("key")
        if self._data is None or key is None or key != self._data_key:
            self._data = None  # other data's copy (a kept actor's earlier run) is freed before the new one is made
            self._data = (as_tensor(data["train_x"], self.device), as_tensor(data["val_x"], self.device))
            self._data_key = key
            self.device_copies += self.device != "cpu"
        return self._data
