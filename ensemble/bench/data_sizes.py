"""`ensemble bench --data-sizes 3000,12000,48000`: how each part of a run's cost grows with the data.

The paper's large regime (48,000 training and 12,000 validation MNIST images) cannot be downloaded
here, so the bench writes its own stand-in: mnist-5k's 5,000 digits, each copy shifted by up to
2 pixels, as an `.npz` (accuracies on it mean nothing: shifted copies of one digit sit on both sides
of the split). Per size, one run of 2 members and the baseline, one epoch each, validation a quarter
of the training size, 1,000 test images: seconds per 1,000 training images for a member's epoch and
the baseline's, the evaluation's features and fit, the baseline's head's fit, the ensemble's tail after
its last member, the driver's and the actors' peak memory and the object store's use. Flat is the
target: seconds per 1,000 images within 1.2x from the smallest size to the largest. `--set data.name=npz --set
data.root=FILE.npz` runs the sizes on other images instead (CIFAR-10's shape: docs/guide/paper-regime.md).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import psutil

from ensemble.bench.tail import PeakMemory
from workers.layout import write_atomic

SIZE_SETTINGS = ["members=2", "train.epochs=1", "eager.rule=fixed", "eager.epoch=1", "baseline.max_epochs=1",
                 "data.test_size=1000"]
TEST_IMAGES = 1000
FLAT_WITHIN = 1.2  # seconds per 1,000 images, largest size against smallest
MIB = 2 ** 20


def shifted_digits(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` 28x28 uint8 digits: mnist-5k's images in turn, each copy after the first rolled by a
    random shift of up to 2 pixels in each direction (the original 5,000 come first, unshifted)."""
    from ensemble.data.sources import mnist_5k_arrays
    x, y = mnist_5k_arrays()
    x = x.reshape(-1, 28, 28)
    rng = np.random.default_rng(seed)
    picks = np.arange(count) % len(x)
    images = x[picks].copy()
    for row in range(len(x), count):
        images[row] = np.roll(images[row], tuple(rng.integers(-2, 3, size=2)), axis=(0, 1))
    return images, y[picks].astype(np.int64)


def write_stand_in(path: Path, count: int, seed: int = 0) -> Path:
    """The stand-in data set as an .npz of `x` and `y` (what data.name=npz reads)."""
    images, labels = shifted_digits(count, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=images, y=labels)
    return path


class ProcessPeaks(PeakMemory):
    """The driver's peak resident memory (RSS, `PeakMemory`), and that of each process `watch`ed (the
    actors) and the object store's peak use, sampled in the same thread (the store once a second)."""

    def __init__(self, interval: float = 0.1):
        super().__init__(interval)
        self.actor_peaks: dict[int, int] = {}
        self.store_peak: Optional[int] = None
        self._ticks = 0

    def watch(self, pid: int) -> None:
        self.actor_peaks.setdefault(pid, 0)

    def tick(self) -> None:
        super().tick()
        for pid in list(self.actor_peaks):
            try:
                self.actor_peaks[pid] = max(self.actor_peaks[pid], psutil.Process(pid).memory_info().rss)
            except psutil.Error:
                continue
        self._ticks += 1
        if self._ticks % 10 == 0:  # the store's figure is a call to the raylet: once a second is enough
            used = object_store_bytes()
            if used is not None:
                self.store_peak = max(self.store_peak or 0, used)


def object_store_bytes() -> Optional[int]:
    """Bytes the local Ray cluster's object store holds now (what `ray memory --stats-only` prints);
    None without a Ray session. Ray has no public call for it: this is the one `ray memory` uses."""
    try:
        import ray
        from ray._private.internal_api import get_memory_info_reply, get_state_from_address
        if not ray.is_initialized():
            return None
        reply = get_memory_info_reply(get_state_from_address(ray.get_runtime_context().gcs_address))
        return int(reply.store_stats.object_store_bytes_used)
    except Exception:  # noqa: BLE001 (a measurement aid: without it the entry says null)
        return None


def measure_size(train_images: int, data_file: Path, output: Path, extra: Sequence[str] = ()) -> dict:
    """One run on `train_images` of the stand-in data; its costs per 1,000 images and its memory."""
    import ensemble
    from ensemble.config import build_config
    from workers.events import Started

    val_images = max(train_images // 4, 10)
    name = f"size-{train_images}-{time.strftime('%Y%m%d-%H%M%S')}"
    config = build_config({}, [*SIZE_SETTINGS, "data.name=npz", f"data.root={data_file}",
                               f"data.train_size={train_images}", f"data.val_size={val_images}", *extra,
                               f"output={output}", f"name={name}"])
    with ProcessPeaks() as peaks:
        started = time.perf_counter()
        report = ensemble.run(config, on_event=lambda e: peaks.watch(e.placement["pid"])
                              if isinstance(e, Started) else None).report
        wall = time.perf_counter() - started
    return size_entry(report, train_images, val_images, wall, peaks)


def size_entry(report, train_images: int, val_images: int, wall: float, peaks: ProcessPeaks) -> dict:
    """bench.json's entry for one size, from the run's report and the sampled peaks."""
    def per_1000(seconds: float) -> float:
        return seconds / train_images * 1000

    member_epoch = statistics.mean(r.seconds for m in report.members for r in m.history)
    baseline_epoch = statistics.mean(r.seconds for r in report.baseline.history) if report.baseline else None
    ens = report.ensemble
    tail = ens.wall_seconds - ens.train_wall_seconds
    return {
        "train_images": train_images, "val_images": val_images, "test_images": TEST_IMAGES,
        "member_epoch_seconds": member_epoch, "member_seconds_per_1000_images": per_1000(member_epoch),
        "baseline_epoch_seconds": baseline_epoch,
        "baseline_seconds_per_1000_images": None if baseline_epoch is None else per_1000(baseline_epoch),
        "feature_seconds": ens.feature_seconds, "fit_seconds": ens.fit_seconds, "head_tolerance": ens.head_tolerance,
        "baseline_combiner_seconds": report.baseline.combiner_seconds if report.baseline else None,
        "tail_seconds": tail, "members_train_wall_seconds": ens.train_wall_seconds,
        "tail_share_of_member_training": tail / ens.train_wall_seconds,
        "run_wall_seconds": wall,
        "image_shape": list(report.dataset.image_shape),
        "dataset_float32_mib": round((train_images + val_images) * math.prod(report.dataset.image_shape) * 4 / MIB, 1),
        "driver_start_rss_mib": round(peaks.start_rss / MIB, 1),
        "driver_peak_rss_mib": round(peaks.peak / MIB, 1),
        # the run's own rise above what its process held before it started
        "driver_rise_mib": round((peaks.peak - peaks.start_rss) / MIB, 1),
        "actor_peak_rss_mib": [round(v / MIB, 1) for v in peaks.actor_peaks.values()],
        "object_store_peak_mib": None if peaks.store_peak is None else round(peaks.store_peak / MIB, 1),
        "test_accuracy_stand_in": ens.test_accuracy,
    }


def flatness(rows: Sequence[dict]) -> dict:
    """Largest size against smallest: seconds per 1,000 images for members and baseline (target within
    1.2x), the tail's share of the members' training at the largest, the driver's growth in memory
    against the growth of the data's own float32 size, both as peaks (each size in a fresh process) and as each
    run's rise above its own start (the figure that compares older entries fairly, whose sizes shared a process)."""
    small, large = rows[0], rows[-1]

    def ratio(key: str) -> Optional[float]:
        return None if small[key] is None or large[key] is None else large[key] / small[key]
    return {"from": small["train_images"], "to": large["train_images"],
            "member_per_1000_ratio": ratio("member_seconds_per_1000_images"),
            "baseline_per_1000_ratio": ratio("baseline_seconds_per_1000_images"),
            "target_ratio": FLAT_WITHIN,
            "tail_share_at_largest": large["tail_share_of_member_training"],
            "driver_growth_mib": large["driver_peak_rss_mib"] - small["driver_peak_rss_mib"],
            "driver_rise_growth_mib": None if "driver_rise_mib" not in small
            else large["driver_rise_mib"] - small["driver_rise_mib"],
            "data_growth_mib": large["dataset_float32_mib"] - small["dataset_float32_mib"]}


def data_sizes_table(rows: Sequence[dict]) -> str:
    lines = ["Cost against data size (stand-in: mnist-5k shifted by up to 2 px; 2 members and the baseline, "
             "1 epoch each):", "",
             "| train images | member s/1k img | baseline s/1k img | features (s) | fit (s) | baseline's head (s) "
             "| tail (s) | tail share | driver peak (MiB) | actor peaks (MiB) | object store peak (MiB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = r["baseline_seconds_per_1000_images"]
        base_head = r.get("baseline_combiner_seconds")  # older entries lack it
        lines.append(f"| {r['train_images']:,} | {r['member_seconds_per_1000_images']:.2f} | "
                     f"{'-' if base is None else f'{base:.2f}'} | {r['feature_seconds']:.1f} | "
                     f"{r['fit_seconds']:.1f} | {'-' if base_head is None else f'{base_head:.1f}'} | "
                     f"{r['tail_seconds']:.1f} | {r['tail_share_of_member_training']:.0%} | "
                     f"{r['driver_peak_rss_mib']:.0f} | {', '.join(f'{v:.0f}' for v in r['actor_peak_rss_mib'])} | "
                     f"{r['object_store_peak_mib']} |")
    if len(rows) > 1:
        f = flatness(rows)
        lines.append(f"From {f['from']:,} to {f['to']:,} images: member s/1k {f['member_per_1000_ratio']:.2f}x "
                     f"(target <= {FLAT_WITHIN}x), driver memory +{f['driver_growth_mib']:.0f} MiB for "
                     f"+{f['data_growth_mib']:.0f} MiB of float32 images"
                     + ("" if f["driver_rise_growth_mib"] is None else
                        f" (each run's own rise above its start: {f['driver_rise_growth_mib']:+.0f} MiB)"))
    return "\n".join(lines)


def measure_data_sizes(sizes: Sequence[int], output: Path, extra: Sequence[str] = (), log=print) -> list[dict]:
    """One run per size, smallest first, each in a fresh process (as a user runs one size per command: a
    size's driver peak then holds nothing an earlier size left behind), on one stand-in file big enough
    for the largest; the entries so far are in `output`/data_sizes.json after each size (a long run
    stopped early keeps them)."""
    sizes = sorted(sizes)
    largest = sizes[-1]
    data_file = write_stand_in(output / "stand-in.npz", largest + max(largest // 4, 10) + TEST_IMAGES + 100)
    rows = []
    for size in sizes:
        rows.append(in_a_fresh_process(measure_size, size, data_file, output / "runs", tuple(extra)))
        write_atomic(output / "data_sizes.json", json.dumps(rows, indent=2))  # each size kept as it finishes
        log(f"  {size:,} training images: member {rows[-1]['member_seconds_per_1000_images']:.2f} s per 1,000 "
            f"images, run {rows[-1]['run_wall_seconds']:.0f} s", flush=True)
    return rows


def in_a_fresh_process(function, *args):
    """`function(*args)` in a new interpreter (spawned, not forked: nothing of this process's memory,
    imports or Ray comes along); its exception is raised here."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()
