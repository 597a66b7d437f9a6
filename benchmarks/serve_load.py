"""Load on `ensemble serve`: what batching requests across clients buys.

Usage:
    ensemble run --name serve-bench --set baseline.enabled=false      # any finished run will do
    python benchmarks/serve_load.py runs/serve-bench [--workloads 2000x64,1000x1] [--clients 8] [--batch-sizes 16,1]

For each workload and --max-batch-size it starts the server (`ensemble.serve`, one replica of
1 CPU, on 127.0.0.1), warms it up, then 8 client threads (keep-alive `requests` sessions) send
the requests (2,000 of 1 to 64 images each, then 1,000 of one image; seeded, .npy bodies) as
fast as answers come back. Every answer is checked against `ensemble.load(run).predict` on the
same images: a wrong label counts as an error, like a non-200 status. Clients and server share
the machine; the load average after each measurement shows how much other work did too.

Measured on Intel(R) Xeon(R) Processor, 2 cores (KVM), 24 GiB, no GPU; torch 2.14.1, Ray 2.60.0,
Python 3.11.7; the default mnist-5k run (5 members, 28x28, stack combiner); one run of this script,
with another job's training on the same 2 cores (load average 5-6):
    predict_proba alone (one process, 1 thread, 512 images a call): 2443 images/s
    | requests x images | max batch | images/s | requests/s | p50 ms | p99 ms | errors | vs batch 1 |
    | 2000 x 1-64       | 16        | 1552     | 48.3       | 157.3  | 306.2  | 0      | 1.10x      |
    | 2000 x 1-64       | 1         | 1405     | 43.7       | 178.3  | 281.7  | 0      | 1.00x      |
    | 1000 x 1          | 16        | 157      | 157.1      | 47.2   | 95.2   | 0      | 1.43x      |
    | 1000 x 1          | 1         | 110      | 110.0      | 65.4   | 113.1  | 0      | 1.00x      |
    CPU cores used (replica, proxy, clients): 0.76, 0.23, 0.06 for 1-64 images batched; 0.66, 0.53, 0.14
    for single images batched.
Reading: with 1-64 images a request (32 on average) the replica's one CPU is the limit and each
request already brings a batch, so batching across clients adds 10%. Single-image requests are
dominated by per-request costs (Ray Serve's HTTP proxy spends about 3.5 ms of CPU on each), and
batching them buys 1.4x. The figures move by 10-20% from run to run on this shared machine.
"""

import argparse
import io
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import ray
import requests

import ensemble
from ensemble.bench.machine import machine_header

POOL = 4096  # distinct images the requests are cut from


def workload(run_dir: Path, requests_count: int, max_images: int, seed: int = 0):
    """The requests (pool offset, image count), the image pool and the labels predict() gives it."""
    loaded = ensemble.load(run_dir)
    rng = np.random.default_rng(seed)
    shape = tuple(loaded.report.dataset.image_shape)
    # Random pixels in the run's own scale (the normalisation's shift .. shift + scale): throughput does
    # not depend on what the images show, and every answer can still be checked against predict().
    low, span = np.array(loaded.normalizer.shift), np.array(loaded.normalizer.scale)
    pool = (low.reshape(1, -1, 1, 1) + span.reshape(1, -1, 1, 1) * rng.random((POOL, *shape))).astype(np.float32)
    expected = loaded.predict(pool)
    sizes = rng.integers(1, max_images + 1, requests_count)
    offsets = rng.integers(0, POOL - max_images, requests_count)
    return list(zip(offsets.tolist(), sizes.tolist(), strict=True)), pool, expected


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def drive(url: str, work, pool, expected, clients: int) -> dict:
    """`clients` threads take requests off one shared list until it is empty; returns the figures."""
    bodies = [npy(pool[offset:offset + size]) for offset, size in work]  # encoded before the clock starts
    latencies, errors, next_request, lock = [], [], iter(range(len(work))), threading.Lock()

    def client() -> None:
        session = requests.Session()
        while True:
            with lock:
                index = next(next_request, None)
            if index is None:
                return
            offset, size = work[index]
            started = time.perf_counter()
            try:
                answer = session.post(f"{url}/predict", data=bodies[index], timeout=120,
                                      headers={"Content-Type": "application/octet-stream"})
                ok = answer.status_code == 200 and answer.json()["labels"] == expected[offset:offset + size].tolist()
            except requests.RequestException:
                ok = False
            with lock:
                latencies.append(time.perf_counter() - started)
                if not ok:
                    errors.append(index)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    images = sum(size for _, size in work)
    return {"seconds": wall, "images_per_s": images / wall, "requests_per_s": len(work) / wall,
            "p50_ms": 1000 * float(np.percentile(latencies, 50)), "p99_ms": 1000 * float(np.percentile(latencies, 99)),
            "errors": len(errors)}


def cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by the replica, the HTTP proxy and these clients (this process)."""
    roles = {"ray::ServeReplica": "replica", "ray::ProxyActor": "proxy"}
    used = {"replica": 0.0, "proxy": 0.0, "clients": 0.0}
    for process in psutil.process_iter(["cmdline", "pid"]):
        try:
            name = (process.info["cmdline"] or [""])[0]
            role = "clients" if process.info["pid"] == os.getpid() else next(
                (r for prefix, r in roles.items() if name.startswith(prefix)), None)
            if role:
                times = process.cpu_times()
                used[role] += times.user + times.system
        except psutil.Error:
            continue
    return used


def measure(run_dir: Path, batch_size: int, port: int, work, pool, expected, clients: int) -> dict:
    from ray import serve
    ensemble.serve(run_dir, port=port, max_batch_size=batch_size, cpus_per_replica=1.0)
    url = f"http://127.0.0.1:{port}"
    drive(url, work[:100], pool, expected, clients)  # warm-up: first calls, thread pools, allocator
    before = cpu_seconds()
    figures = drive(url, work, pool, expected, clients)
    figures["cores"] = {role: (spent - before[role]) / figures["seconds"] for role, spent in cpu_seconds().items()}
    figures["load"] = os.getloadavg()[0]  # other work on the machine shows here
    serve.delete("ensemble")
    return figures


def compute_bound(run_dir: Path, pool: np.ndarray, images: int = 512) -> float:
    """Images/s of predict_proba in one process, one torch thread (the replica's CPU), no HTTP."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    loaded = ensemble.load(run_dir)
    loaded.predict_proba(pool[:images])
    started, calls = time.perf_counter(), 0
    while time.perf_counter() - started < 3:
        loaded.predict_proba(pool[:images])
        calls += 1
    torch.set_num_threads(threads)
    return images * calls / (time.perf_counter() - started)


def table(results: dict) -> list[str]:
    header = ("| requests x images each | max batch size | images/s | requests/s | p50 ms | p99 ms | errors | "
              "images/s vs batch size 1 | cores used: replica, proxy, clients | load avg |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|"]
    for (name, batch_size), r in results.items():
        unbatched = results.get((name, 1), r)
        cores = r["cores"]
        lines.append(f"| {name} | {batch_size} | {r['images_per_s']:.0f} | {r['requests_per_s']:.1f} | "
                     f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | "
                     f"{r['images_per_s'] / unbatched['images_per_s']:.2f}x | "
                     f"{cores['replica']:.2f}, {cores['proxy']:.2f}, {cores['clients']:.2f} | {r['load']:.1f} |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--workloads", default="2000x64,1000x1",
                        help="REQUESTSxMAX_IMAGES, comma-separated: each request carries 1..MAX_IMAGES images")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batch-sizes", default="16,1", help="--max-batch-size values to compare")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    workloads = [tuple(int(n) for n in w.split("x")) for w in args.workloads.split(",")]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    _, pool, _ = workload(args.run_dir, 1, 1)
    bound = compute_bound(args.run_dir, pool)
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    results = {}
    for count, max_images in workloads:
        work, pool, expected = workload(args.run_dir, count, max_images)
        for batch_size in batch_sizes:
            name = f"{count} x 1-{max_images}" if max_images > 1 else f"{count} x 1"
            results[name, batch_size] = measure(args.run_dir, batch_size, args.port, work, pool, expected,
                                                args.clients)
    ray.shutdown()
    print(f"Machine: {machine_header()}")
    print(f"{args.clients} concurrent clients, .npy bodies, 1 replica of 1 CPU, on 127.0.0.1; "
          f"predict_proba alone (one process, 1 thread, 512 images a call): {bound:.0f} images/s")
    print("\n".join(table(results)))
    return 1 if any(r["errors"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
