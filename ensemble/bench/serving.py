"""`ensemble bench --serve`: load on `ensemble serve`, against `predict_proba` in one process.

For each workload it starts the server as `ensemble.serve` does (one replica of 1 CPU, on 127.0.0.1; its
own Ray, where the replica answers HTTP itself: `ensemble.serving.ingress`), warms it up, then 8 client
threads (kept-alive connections of the standard library's `http.client`) send the requests (2,000 of 1 to
64 images each, then 1,000 of one image; seeded, .npy bodies) as fast as answers come back. Every answer
is checked against `ensemble.load(run).predict` on the same images: a wrong label counts as an error, like
a non-200 status. The figure that counts is the ratio of the served images/s with 1-64-image requests to
`predict_proba`'s own images/s (one process, one torch thread: the replica's CPU; its encoders in the
replica's memory format; 512 images a call), measured just before and just after that workload, since the
machine's speed drifts over a bench: target at least 0.80. Clients and server share the machine, and the
clients' CPU slows the replica's (on a small VM a busy second vCPU can halve the first's speed), so they
are kept lean; the cores each role used and the load average after each measurement show how much other
work ran. `benchmarks/serve_load.py` runs this module alone on any run.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import statistics
import threading
import time
import urllib.parse
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

POOL = 4096  # distinct images the requests are cut from
TARGET = 0.80  # served images/s with 1-64-image requests / predict_proba's images/s
WORKLOADS = ((2000, 64), (1000, 1))  # (requests, most images a request carries)
RATIO_WORKLOAD = 64  # the workload whose images/s the ratio takes
ROLES = {"ray::ServeReplica": "replica", "ray::ProxyActor": "proxy"}  # Serve's processes by their titles


def parse_workloads(text: str) -> tuple[tuple[int, int], ...]:
    """'2000x64,1000x1' -> ((2000, 64), (1000, 1)): requests x the most images each carries."""
    try:
        workloads = tuple(tuple(int(n) for n in part.split("x")) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not REQUESTSxMAX_IMAGES[,...] (e.g. 2000x64,1000x1)") from None
    if not workloads or any(len(w) != 2 or min(w) < 1 for w in workloads):
        raise ValueError(f"{text!r} is not REQUESTSxMAX_IMAGES[,...] with whole numbers of at least 1")
    return tuple((requests, images) for requests, images in workloads)  # pairs: checked above


def workload(loaded, requests_count: int, max_images: int, seed: int = 0):
    """The requests (pool offset, image count), the image pool and the labels predict() gives it."""
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
        connection = None
        while True:
            with lock:
                index = next(next_request, None)
            if index is None:
                return
            offset, size = work[index]
            started = time.perf_counter()
            try:
                connection = connection or http.client.HTTPConnection(*address(url), timeout=120)
                status, answer = post_npy(connection, bodies[index])
                ok = status == 200 and json.loads(answer)["labels"] == expected[offset:offset + size].tolist()
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                connection, ok = None, False  # a new connection for the next request
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


def address(url: str) -> tuple[str, int]:
    """(host, port) of an http:// URL."""
    parts = urllib.parse.urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def post_npy(connection: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes]:
    """POST /predict with a .npy body on a kept-alive connection: (status, the answer's bytes). The
    standard library's client, not `requests`: the clients share the machine with the replica, and
    `requests` took 0.20 of a core for this load against 0.06 (docs/performance.md)."""
    connection.request("POST", "/predict", body=body, headers={"Content-Type": "application/octet-stream"})
    answer = connection.getresponse()
    return answer.status, answer.read()


def cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by the replica, the HTTP proxy and these clients (this process)."""
    import psutil
    used = {"replica": 0.0, "proxy": 0.0, "clients": 0.0}
    for process in psutil.process_iter(["cmdline", "pid"]):
        try:
            role = "clients" if process.info["pid"] == os.getpid() else _role((process.info["cmdline"] or [""])[0])
            if role:
                times = process.cpu_times()
                used[role] += times.user + times.system
        except psutil.Error:
            continue
    return used


def measure(run_dir: Path, batch_size: int, port: int, work, pool, expected, clients: int,
            replica_cpus: float) -> dict:
    """One workload against a fresh server, started as `ensemble.serve` starts it (its own Ray, unless one
    runs already); the figures, the cores each role used, the load average, which process answered HTTP
    and the memory format the replica chose (GET /)."""
    import ray
    import requests

    import ensemble
    from ensemble.serving.application import stop_serving
    joined = ray.is_initialized()
    ensemble.serve(run_dir, port=port, max_batch_size=batch_size, cpus_per_replica=replica_cpus)
    url = f"http://127.0.0.1:{port}"
    try:
        drive(url, work[:100], pool, expected, clients)  # warm-up: first calls, thread pools, allocator
        before = cpu_seconds()
        figures = drive(url, work, pool, expected, clients)
        figures["cores"] = {role: (spent - before[role]) / figures["seconds"] for role, spent in cpu_seconds().items()}
        figures["load"] = os.getloadavg()[0]  # other work on the machine shows here
        figures["ingress"] = listening_role(port)
        figures["memory_format"] = requests.get(f"{url}/", timeout=30).json().get("memory_format")
    finally:
        stop_serving(started_ray=not joined)
    return figures


def listening_role(port: int) -> str:
    """Which of Serve's processes listens on `port`: the replica (direct ingress) or the proxy."""
    import psutil
    for process in psutil.process_iter(["cmdline"]):
        role = _role((process.info["cmdline"] or [""])[0])
        try:
            if role and any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in process.net_connections()):
                return role
        except psutil.Error:
            continue
    return "unknown"


def _role(command: str):
    return next((role for prefix, role in ROLES.items() if command.startswith(prefix)), None)


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """PyTorch on one thread for the `with`, as in a replica of one CPU; as before afterwards."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def compute_bound(loaded, pool: np.ndarray, images: int = 512, seconds: float = 3.0) -> float:
    """Images/s of predict_proba in one process, one torch thread (the replica's CPU), no HTTP, its encoders
    in the layout they are in (`replica_layout` lays them out as a replica does)."""
    with one_torch_thread():
        loaded.predict_proba(pool[:images])
        started, calls = time.perf_counter(), 0
        while time.perf_counter() - started < seconds:
            loaded.predict_proba(pool[:images])
            calls += 1
        return images * calls / (time.perf_counter() - started)


def replica_layout(loaded) -> str:
    """Lays the encoders out as a replica lays them out (`in_fastest_format`, measured on one thread, where
    `ensemble.load` keeps the layout the members trained in), once for all of the bench's measurements."""
    from ensemble.serving.replica import in_fastest_format
    with one_torch_thread():
        return in_fastest_format(loaded)


def measure_serving(run_dir: Path, workloads: Sequence[tuple[int, int]] = WORKLOADS, clients: int = 8,
                    batch_sizes: Sequence[int] = (16,), port: int | None = None, replica_cpus: float = 1.0,
                    bound_seconds: float = 3.0, log=print) -> dict:
    """bench.json's `serve`: predict_proba's images/s, each workload x batch size served, and the ratio.
    `port`: where each server listens (None: a free one each time, as a stopped server's connections hold
    its port for a minute)."""
    import ensemble
    from ensemble.serving.application import free_port
    loaded = ensemble.load(run_dir)
    own_pool = workload(loaded, 1, 1)[1]
    layout = replica_layout(loaded)
    # measured again after each workload: the machine's speed drifts over a bench, so each workload is set
    # against the mean of the measurements just before and just after it
    bounds = [compute_bound(loaded, own_pool, seconds=bound_seconds)]
    rows = []
    for count, max_images in workloads:
        work, pool, expected = workload(loaded, count, max_images)
        for batch_size in batch_sizes:
            figures = measure(run_dir, batch_size, port or free_port(), work, pool, expected, clients, replica_cpus)
            bounds.append(compute_bound(loaded, own_pool, seconds=bound_seconds))
            rows.append({"requests": count, "max_images": max_images, "max_batch_size": batch_size, **figures,
                         "predict_proba_images_per_s": statistics.mean(bounds[-2:])})
            log(f"  serve {count} x 1-{max_images} images, batch {batch_size}: {figures['images_per_s']:.0f} "
                f"images/s, p99 {figures['p99_ms']:.0f} ms, {figures['errors']} errors, HTTP by the "
                f"{figures['ingress']}; predict_proba around it {rows[-1]['predict_proba_images_per_s']:.0f}")
    return {"run_dir": str(run_dir), "clients": clients, "replica_cpus": replica_cpus,
            "predict_proba_images_per_s": statistics.mean(bounds), "predict_proba_samples": bounds,
            "predict_proba_memory_format": layout, "workloads": rows, **serve_ratio(rows)}


def bench_run(output: Path, log=print) -> Path:
    """The run the bench serves when told none: its default run when it made one, else the default
    configuration without the baseline (serving needs only the ensemble), trained once and kept."""
    for name in ("bench-default", "bench-serve"):
        if (output / name / "report.json").is_file():
            return output / name
    import ensemble
    from ensemble.config import build_config
    log("  training the default ensemble to serve (no baseline)...")
    ensemble.run(build_config({}, [f"output={output}", "name=bench-serve", "baseline.enabled=false"]),
                 on_event=lambda event: None)
    return output / "bench-serve"


def serve_ratio(rows: Sequence[dict]) -> dict:
    """Served images/s with 1-64-image requests (the widest workload at its largest batch size; the median
    when repeated) against predict_proba's images/s measured around that workload, and whether it meets
    the target."""
    widest = max(row["max_images"] for row in rows)
    batch = max(row["max_batch_size"] for row in rows if row["max_images"] == widest)
    ratio = statistics.median(row["images_per_s"] / row["predict_proba_images_per_s"] for row in rows
                              if row["max_images"] == widest and row["max_batch_size"] == batch)
    return {"ratio": ratio, "ratio_workload": f"1-{widest} images a request, max batch size {batch}",
            "target": TARGET, "met": ratio >= TARGET}


def serve_table(result: dict) -> str:
    """The section as the bench prints it."""
    rows = result["workloads"]
    formats = sorted({str(row.get("memory_format")) for row in rows})
    ingresses = sorted({str(row.get("ingress")) for row in rows})  # bench.json files before it had none: "None"
    samples = result.get("predict_proba_samples") or [result["predict_proba_images_per_s"]]
    lines = [f"Serving: {result['clients']} concurrent clients, .npy bodies, 1 replica of {result['replica_cpus']:g} "
             f"CPU on 127.0.0.1 (encoders in {', '.join(formats)}; HTTP answered by the {', '.join(ingresses)}); "
             f"predict_proba alone (one process, 1 thread, 512 images a call, encoders in "
             f"{result.get('predict_proba_memory_format', 'contiguous')}), measured before and after each workload: "
             f"{min(samples):.0f}-{max(samples):.0f} images/s", "",
             "| requests x images each | max batch size | images/s | predict_proba around it | requests/s | p50 ms | "
             "p99 ms | errors | cores used: replica, proxy, clients | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cores, bound = r["cores"], r.get("predict_proba_images_per_s", result["predict_proba_images_per_s"])
        lines.append(f"| {r['requests']} x 1-{r['max_images']} | {r['max_batch_size']} | {r['images_per_s']:.0f} | "
                     f"{bound:.0f} | {r['requests_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                     f"{r['errors']} | {cores['replica']:.2f}, {cores['proxy']:.2f}, {cores['clients']:.2f} | "
                     f"{r['load']:.1f} |")
    lines.append(f"Served / predict_proba images/s ({result['ratio_workload']}): {result['ratio']:.2f} "
                 f"(target >= {result['target']:.2f}: {'met' if result['met'] else 'MISSED'})")
    return "\n".join(lines)
