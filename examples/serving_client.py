"""Serve a trained ensemble over HTTP (`ensemble serve`, on Ray Serve) and query it with the
standard library's urllib: JSON and `.npy` bodies, health check and model card.

    python examples/serving_client.py runs/<run-name>    # serve a finished run of yours
    python examples/serving_client.py                    # train the default run first, then serve it
    python examples/serving_client.py --tiny             # a tiny run on 8 x 8 digits: a smoke test

It starts `ensemble serve RUN_DIR --port PORT` as a separate process, exactly as you would in a
shell, waits for its "Serving run ..." line, sends requests, checks the answers against
`ensemble.load(run_dir).predict`, and stops the server with Ctrl-C (SIGINT). Needs the serve extra:
pip install 'eager-ensembles[serve]'.
"""

import argparse
import io
import json
import signal
import subprocess
import sys
import urllib.request

import numpy as np
from sklearn.datasets import load_digits

import ensemble


def train_a_run(tiny: bool) -> str:
    cfg = ensemble.EnsembleConfig()
    if tiny:
        cfg = cfg.with_overrides(["members=2", "train.epochs=1", "data.name=digits", "data.train_size=150",
                                  "data.val_size=60", "data.test_size=150", "model.channels=[4, 8]",
                                  "baseline.max_epochs=1"])
    return str(ensemble.run(cfg).run_dir)


def start_server(run_dir: str, port: int) -> subprocess.Popen:
    """`ensemble serve RUN_DIR --port PORT` (here through this Python, so the same environment)."""
    server = subprocess.Popen([sys.executable, "-m", "ensemble", "serve", run_dir, "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in server.stdout:  # Ray Serve takes a few seconds to come up
        print("  server:", line.rstrip())
        if line.startswith("Serving run"):
            return server
    raise SystemExit(f"ensemble serve exited with code {server.wait()} before it was ready")


def post(url: str, body: bytes, content_type: str) -> dict:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def query(base: str, images: np.ndarray) -> list:
    """The server's three endpoints; returns the labels of the JSON request."""
    with urllib.request.urlopen(base + "/healthz", timeout=30) as response:
        print("GET /healthz ->", json.loads(response.read()))
    with urllib.request.urlopen(base + "/", timeout=30) as response:
        card = json.loads(response.read())
        print("GET / -> model card with", ", ".join(sorted(card)))

    answer = post(base + "/predict", json.dumps({"images": images.tolist()}).encode(), "application/json")
    print("POST /predict (JSON) -> labels", answer["labels"], "of classes", answer["classes"])

    npy = io.BytesIO()
    np.save(npy, images.astype(np.float32))  # a .npy body: no JSON encoding of large batches
    binary = post(base + "/predict", npy.getvalue(), "application/octet-stream")
    assert binary["labels"] == answer["labels"]
    return answer["labels"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", nargs="?", help="a finished run directory (default: train one first)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    parser.add_argument("--tiny", action="store_true", help="train a tiny run on 8 x 8 digits (a smoke test)")
    args = parser.parse_args()

    run_dir = args.run_dir or train_a_run(args.tiny)
    loaded = ensemble.load(run_dir)  # the same model in this process, to check the server's answers
    if args.run_dir is None and args.tiny:
        images = load_digits().images[:8, None]  # N x 1 x 8 x 8 in the dataset's own scale (0..16)
    else:  # whatever the run was trained on: images of its shape, in its pixel range (0..255 for MNIST)
        images = np.random.default_rng(0).uniform(0, 255, size=(8, *loaded.report.dataset.image_shape))

    server = start_server(run_dir, args.port)
    try:
        labels = query(f"http://127.0.0.1:{args.port}", images)
        expected = loaded.predict(images)
        assert labels == list(expected), (labels, expected)
        print("the served labels equal ensemble.load(run_dir).predict on the same images")
    finally:
        server.send_signal(signal.SIGINT)  # Ctrl-C: Serve and the Ray instance it started shut down
        print("  server:", server.communicate(timeout=120)[0].strip().splitlines()[-1:])


if __name__ == "__main__":
    main()
