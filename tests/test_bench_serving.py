"""`ensemble bench --serve`: the ratio and table are pure; one tiny load on a served run checks bench.json's keys."""

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from ensemble.bench.serving import drive, parse_workloads, serve_ratio, serve_table


def row(max_images: int, batch: int, images_per_s: float, bound: float = 2000.0) -> dict:
    return {"requests": 10, "max_images": max_images, "max_batch_size": batch, "images_per_s": images_per_s,
            "requests_per_s": 1.0, "p50_ms": 1.0, "p99_ms": 2.0, "errors": 0, "load": 1.0,
            "cores": {"replica": 0.9, "proxy": 0.2, "clients": 0.1}, "memory_format": "channels_last",
            "predict_proba_images_per_s": bound}


def test_the_ratio_takes_the_widest_requests_at_the_largest_batch_size_against_predict_proba_around_it():
    rows = [row(64, 16, 1600.0), row(64, 1, 1000.0, bound=1000.0), row(1, 16, 150.0, bound=100.0)]
    ratio = serve_ratio(rows)
    assert ratio["ratio"] == pytest.approx(0.8) and ratio["met"] and "1-64" in ratio["ratio_workload"]
    assert not serve_ratio([row(64, 16, 1600.0, bound=2001.0), *rows[1:]])["met"]
    printed = serve_table({"workloads": rows, "clients": 8, "replica_cpus": 1.0, "predict_proba_images_per_s": 1700.0,
                           "predict_proba_samples": [2100.0, 1900.0, 100.0], **ratio})
    assert "0.80 (target >= 0.80: met)" in printed and "channels_last" in printed and printed.count("| 10 x 1-") == 3
    assert "100-2100 images/s" in printed and "| 1600 | 2000 |" in printed


class ZerosServer(BaseHTTPRequestHandler):
    """Answers every .npy POST with label 0 for each image, on kept-alive HTTP/1.1 connections."""
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        images = np.load(io.BytesIO(self.rfile.read(int(self.headers["Content-Length"]))))
        body = json.dumps({"labels": [0] * len(images)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # quiet
        pass


def test_the_clients_count_wrong_labels_and_refused_connections_as_errors():
    pool = np.zeros((8, 1, 4, 4), dtype=np.float32)
    expected = np.array([0, 0, 0, 0, 0, 0, 0, 1])  # a request holding the last image gets one label wrong
    work = [(0, 2), (2, 3), (4, 4), (0, 1)]
    server = ThreadingHTTPServer(("127.0.0.1", 0), ZerosServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        figures = drive(f"http://127.0.0.1:{server.server_address[1]}", work, pool, expected, clients=2)
    finally:
        server.shutdown()
        server.server_close()
    assert figures["errors"] == 1 and figures["images_per_s"] > 0 and figures["p99_ms"] >= figures["p50_ms"] > 0
    refused = drive(f"http://127.0.0.1:{server.server_address[1]}", work, pool, expected, clients=2)
    assert refused["errors"] == len(work)  # nothing listens any more: every request fails, none raises


def test_workloads_are_requests_x_most_images():
    assert parse_workloads("2000x64, 1000x1") == ((2000, 64), (1000, 1))
    for bad in ("", "20", "20x0", "axb"):
        with pytest.raises(ValueError, match="REQUESTSxMAX_IMAGES"):
            parse_workloads(bad)


@pytest.mark.slow
def test_the_serve_section_measures_each_workload_against_predict_proba(saved_run):
    from ensemble.bench.serving import measure_serving
    result = measure_serving(saved_run, workloads=((30, 8),), clients=2, bound_seconds=0.3, log=lambda _: None)
    assert result["predict_proba_images_per_s"] > 0 and result["ratio"] > 0 and result["target"] == 0.8
    assert len(result["predict_proba_samples"]) == 2  # before the workload and after it
    assert result["workloads"][0]["predict_proba_images_per_s"] == pytest.approx(
        sum(result["predict_proba_samples"]) / 2)
    shapes = [(r["requests"], r["max_images"], r["max_batch_size"]) for r in result["workloads"]]
    assert shapes == [(30, 8, 16)]
    for r in result["workloads"]:
        assert r["errors"] == 0 and r["images_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0
        assert r["memory_format"] in ("contiguous", "channels_last")
        assert r["ingress"] in ("replica", "proxy")  # the process found listening on the port
        assert set(r["cores"]) == {"replica", "proxy", "clients"}
