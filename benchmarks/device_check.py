"""The device check of issue 14: the GPU path measured on one GPU, in one command under 8 minutes.

Run on a machine with one GPU (and 16 cores): `bash benchmarks/device_check.sh OUT`, which runs the
`gpu` tests and then this script; it writes OUT/device_check.json and OUT/device_check.md.
`python -m benchmarks.device_check --quick --output DIR` is the CPU smoke run of the same code
(tiny sizes, CUDA parts skipped) that the test suite runs.

What it measures, each side by side in this one run, as wall seconds and as ratios:
1. one member's epoch on the GPU: fp32, bf16, channels_last, compile (compile time apart), against
   the same member on the CPU (one thread, a member's share; and every core);
2. N members on one GPU, N in {1, 5, 20}, a fixed number of epochs: one after another in one
   process, packed in one process (`workers.packed`), and as Ray actors sharing the GPU
   (`resources.gpus_per_member = 1/N`), each against one member alone, with the GPU memory used;
3. the default `ensemble run` with `resources.gpus_per_member=0.2` end to end, against the same
   run on this machine's CPU limited to 2 cores (`ray.init(num_cpus=2)`), the target being >= 5x;
4. CPU scaling past 2 cores: 16 members on 16 one-CPU actors against the same 16 one after another.
Figures measured so far are in docs/performance.md (none yet on a GPU: no session had
one when this was written).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import ray
import torch

from ensemble.bench.machine import machine_header
from ensemble.builders import member_factory, member_seed, train_settings
from ensemble.config import build_config
from ensemble.data import load_splits
from ensemble.scheduling.placement import Share
from ensemble.scheduling.pool import MemberPool
from ensemble.scheduling.session import share_data
from workers.actor import MemberSpec
from workers.layout import member_name, write_atomic
from workers.packed import PackMember, train_pack
from workers.stopping import EagerStop
from workers.training import TrainSettings, train_member


class GpuMemory:
    """Peak GPU memory in use (all processes, as nvidia-smi reports it) while a `with` block runs."""

    def __init__(self):
        self.peak_mib, self._stop = 0, threading.Event()

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            try:
                used = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                      capture_output=True, text=True, timeout=5).stdout.split()
                self.peak_mib = max(self.peak_mib, int(used[0]))
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                return


def timed(function) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    function()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started


def member_epochs(splits, config, device: str, settings: TrainSettings, epochs: int, directory: Path) -> float:
    """Seconds for one member's `epochs` epochs (checkpoints included) on `device`, after a warm-up epoch."""
    torch.manual_seed(settings.seed)
    model = member_factory(config, splits.image_shape)().to(device)
    train_x, val_x = splits.train_x.to(device), splits.val_x.to(device)
    warm = EagerStop(rule="fixed", epoch=1, max_epochs=1)
    list(train_member(model, train_x, val_x, settings, warm, directory / "warm"))  # kernels, allocator, imports
    rule = EagerStop(rule="fixed", epoch=epochs, max_epochs=epochs)
    return timed(lambda: list(train_member(model, train_x, val_x, settings, rule, directory / "timed")))


def one_member(splits, config, epochs: int, scratch: Path, cuda: bool) -> list[dict]:
    """Section 1: one member's epoch, each fast path on the GPU and the CPU for comparison."""
    base = train_settings(config, member_seed(config.seed, 0))
    rows = []
    for threads in (1, os.cpu_count()):
        torch.set_num_threads(threads)
        seconds = member_epochs(splits, config, "cpu", base, epochs, scratch / f"cpu-{threads}")
        rows.append({"device": f"cpu, {threads} thread(s)", "epoch_s": seconds / epochs})
    torch.set_num_threads(os.cpu_count())
    plain = {"memory_format": "contiguous"}
    for name, changes in (("fp32", plain), ("bf16", {**plain, "precision": "bf16"}),
                          ("channels_last", {"memory_format": "channels_last"}),
                          ("compile", {**plain, "compile": True})):
        if not cuda:
            break
        settings = TrainSettings(**{**base.__dict__, **changes})
        started = time.perf_counter()
        seconds = member_epochs(splits, config, "cuda", settings, epochs, scratch / f"gpu-{name}")
        total = time.perf_counter() - started
        rows.append({"device": f"cuda {name}", "epoch_s": seconds / epochs, "first_epoch_and_setup_s": total - seconds})
    cpu = rows[0]["epoch_s"]
    for row in rows:
        row["speedup_vs_one_cpu_thread"] = cpu / row["epoch_s"]
    return rows


def member_specs(splits, config, count: int, epochs: int, scratch: Path) -> list[MemberSpec]:
    factory, rule = member_factory(config, splits.image_shape), EagerStop(rule="fixed", epoch=epochs, max_epochs=epochs)
    return [MemberSpec(member_name(i), str(scratch / member_name(i)), factory,
                       train_settings(config, member_seed(config.seed, i)), rule) for i in range(count)]


def one_after_another(specs: list[MemberSpec], splits, device: str) -> float:
    train_x, val_x = splits.train_x.to(device), splits.val_x.to(device)

    def train_all():
        for spec in specs:
            torch.manual_seed(spec.settings.seed)
            list(train_member(spec.factory().to(device), train_x, val_x, spec.settings, spec.should_stop,
                              Path(spec.directory)))
    return timed(train_all)


def packed(specs: list[MemberSpec], splits, device: str) -> float:
    train_x, val_x = splits.train_x.to(device), splits.val_x.to(device)

    def train_all():
        members = []
        for spec in specs:
            torch.manual_seed(spec.settings.seed)
            members.append(PackMember(spec.factory().to(device), train_x, spec.settings, spec.should_stop,
                                      Path(spec.directory)))
        list(train_pack(members, val_x))
    return timed(train_all)


def as_actors(specs: list[MemberSpec], splits, gpus: float) -> float:
    """Each member an actor of the pool; `gpus` each (1/N: all share the one GPU)."""
    cpus = max(0.25, min(1.0, (os.cpu_count() or 1) / len(specs)))
    data_ref = share_data(splits)
    started = time.perf_counter()
    MemberPool(Share(cpus, gpus), data_ref, lambda event: None, lend_idle_cpus=False).train(specs)
    return time.perf_counter() - started


def members_on_one_device(splits, config, counts, epochs: int, scratch: Path, cuda: bool) -> list[dict]:
    """Section 2: N members on one GPU (or, with --quick, the CPU), three ways, against one member alone."""
    device, rows = ("cuda" if cuda else "cpu"), []
    for count in counts:
        for way in ("one after another", "packed", "Ray actors"):
            specs = member_specs(splits, config, count, epochs, scratch / f"{way.replace(' ', '-')}-{count}")
            with GpuMemory() as memory:
                if way == "one after another":
                    seconds = one_after_another(specs, splits, device)
                elif way == "packed":
                    seconds = packed(specs, splits, device)
                else:
                    seconds = as_actors(specs, splits, 1.0 / count if cuda else 0.0)
            rows.append({"members": count, "way": way, "seconds": seconds, "gpu_memory_mib": memory.peak_mib})
    alone = {row["way"]: row["seconds"] for row in rows if row["members"] == counts[0]}
    for row in rows:
        row["ratio_to_one_member"] = row["seconds"] / alone[row["way"]]
    return rows


def default_runs(scratch: Path, cuda: bool, quick: bool) -> dict:
    """Section 3: the default run on the GPU (gpus_per_member=0.2) and on 2 CPU cores, end to end."""
    import ensemble
    small = ["data.name=digits", "data.train_size=300", "data.val_size=100", "train.epochs=1",
             "baseline.max_epochs=1", "members=2"] if quick else []
    result = {}
    for name, gpus, cpus in (("gpu", 1, os.cpu_count()), ("cpu-2-cores", 0, 2)):
        if name == "gpu" and not cuda:
            continue
        ray.init(address="local", num_cpus=cpus, num_gpus=gpus, include_dashboard=False, log_to_driver=False)
        try:
            sets = small + [f"output={scratch}", f"name=default-{name}"] + (
                ["resources.gpus_per_member=0.2"] if gpus else [])
            started = time.perf_counter()
            report = ensemble.run(build_config({}, sets), on_event=lambda event: None).report
            result[name] = {"wall_s": time.perf_counter() - started, "ensemble_accuracy": report.ensemble.test_accuracy,
                            "baseline_accuracy": report.baseline.test_accuracy}
        finally:
            ray.shutdown()
    if "gpu" in result:
        result["gpu_speedup"] = result["cpu-2-cores"]["wall_s"] / result["gpu"]["wall_s"]
    return result


def cpu_scaling(splits, config, count: int, epochs: int, scratch: Path) -> dict:
    """Section 4: `count` members on `count` one-CPU actors against the same members one after another."""
    torch.set_num_threads(1)
    sequential = one_after_another(member_specs(splits, config, count, epochs, scratch / "seq"), splits, "cpu")
    torch.set_num_threads(os.cpu_count())
    parallel = as_actors(member_specs(splits, config, count, epochs, scratch / "par"), splits, 0.0)
    return {"members": count, "one_after_another_s": sequential, "parallel_s": parallel,
            "speedup": sequential / parallel, "cores": os.cpu_count()}


def table(result: dict) -> str:
    lines = [f"Machine: {result['machine']}", "", "| one member | seconds per epoch | x one CPU thread |",
             "|---|---|---|"]
    lines += [f"| {r['device']} | {r['epoch_s']:.3f} | {r.get('speedup_vs_one_cpu_thread', 1.0):.1f}x |"
              for r in result["one_member"]]
    lines += ["", f"| members on one {result['device']} | way | seconds ({result['epochs']} epochs) | x one member "
                  "alone | GPU memory MiB |", "|---|---|---|---|---|"]
    lines += [f"| {r['members']} | {r['way']} | {r['seconds']:.2f} | {r['ratio_to_one_member']:.2f}x | "
              f"{r['gpu_memory_mib']} |" for r in result["members_on_one_device"]]
    d, s = result["default_runs"], result["cpu_scaling"]
    if "gpu_speedup" in d:
        lines += ["", f"Default run end to end: GPU (gpus_per_member=0.2) {d['gpu']['wall_s']:.1f} s, 2 CPU cores "
                      f"{d['cpu-2-cores']['wall_s']:.1f} s: {d['gpu_speedup']:.1f}x (target >= 5x: "
                      f"{'met' if d['gpu_speedup'] >= 5 else 'MISSED'})"]
    lines += [f"CPU scaling: {s['members']} members on {s['cores']} cores, {s['parallel_s']:.1f} s as one-CPU actors "
              f"against {s['one_after_another_s']:.1f} s one after another: {s['speedup']:.1f}x"]
    return "\n".join(lines)


def main(output: Path, quick: bool) -> dict:
    cuda = torch.cuda.is_available() and not quick
    config = build_config({}, ["data.name=digits", "data.train_size=300", "data.val_size=100"] if quick else [])
    splits, scratch, epochs = load_splits(config.data, config.seed), output / "scratch", 1 if quick else 2
    counts, scaling = ((1, 2), 2) if quick else ((1, 5, 20), 16)
    print(f"device check: {machine_header()}", flush=True)
    result = {"machine": machine_header(), "device": "GPU" if cuda else "CPU", "epochs": epochs,
              "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__}
    result["one_member"] = one_member(splits, config, epochs, scratch / "one", cuda)
    print("one member done", flush=True)
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        result["members_on_one_device"] = members_on_one_device(splits, config, counts, epochs, scratch / "n", cuda)
        print("members on one device done", flush=True)
        result["cpu_scaling"] = cpu_scaling(splits, config, scaling, epochs, scratch / "scaling")
    finally:
        ray.shutdown()
    result["default_runs"] = default_runs(scratch / "runs", cuda, quick)
    write_atomic(output / "device_check.json", json.dumps(result, indent=2))
    write_atomic(output / "device_check.md", table(result) + "\n")
    print(table(result))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("device-check"))
    parser.add_argument("--quick", action="store_true", help="the CPU smoke run: tiny sizes, CUDA parts skipped")
    args = parser.parse_args()
    main(args.output, args.quick)
