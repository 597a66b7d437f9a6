"""Every script in examples/ runs end to end, as a user runs it (`python examples/x.py --tiny` or
`bash examples/submit_job.sh --tiny`, from a directory of its own), at tiny settings, so the
examples cannot rot. Each starts its own Ray instance (or head) in a subprocess, hence `slow`; the
assertions check what the example claims to produce, not only its exit code."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ports import free_ports

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TESTED = {"custom_autoencoder.py", "sklearn_pipeline.py", "tracker_callback.py", "serving_client.py",
          "submit_job.sh", "paper_grid.sh"}


def run_example(tmp_path: Path, name: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """The example from a fresh directory, with this interpreter's environment first on PATH (for
    `python` and `ray` in the shell example), on a local Ray of its own (no RAY_ADDRESS)."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"],
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("RAY_ADDRESS", None)
    command = ["bash"] if name.endswith(".sh") else [sys.executable]
    done = subprocess.run([*command, str(EXAMPLES / name), *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done


def only_run(tmp_path: Path) -> Path:
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if (p / "report.json").is_file()]
    return run_dir


def test_every_example_has_its_test():
    assert {p.name for p in EXAMPLES.iterdir() if p.suffix in (".py", ".sh")} == TESTED


@pytest.mark.slow
def test_custom_autoencoder_on_your_own_arrays(tmp_path):
    done = run_example(tmp_path, "custom_autoencoder.py", "--tiny")
    run_dir = only_run(tmp_path)
    report = json.loads((run_dir / "report.json").read_text())
    dataset = report["dataset"]
    assert len(report["members"]) == 2 and dataset["image_shape"] == [1, 8, 8]
    assert dataset["source"].startswith("custom dataset (300 images") and dataset["num_classes"] == 10
    assert json.loads((run_dir / "config.json").read_text())["model"]["autoencoder"] == "__main__:SmallAE"
    assert re.search(r"ensemble test accuracy 0\.\d+ .* baseline 0\.\d+", done.stdout)


@pytest.mark.slow
def test_sklearn_pipeline_cross_validates_and_extracts_features(tmp_path):
    done = run_example(tmp_path, "sklearn_pipeline.py", "--tiny")
    cv = re.search(r"cross-validated accuracy: (0\.\d+) \+- \d\.\d+ over 2 folds", done.stdout)
    held_out = re.search(r"held-out accuracy: (0\.\d+)", done.stdout)
    assert cv and held_out, done.stdout
    assert float(cv.group(1)) > 0.3 and float(held_out.group(1)) > 0.3  # ten classes: chance is 0.1


@pytest.mark.slow
def test_tracker_callback_logs_every_member_epoch(tmp_path):
    run_example(tmp_path, "tracker_callback.py", "--tiny")
    entries = [json.loads(line) for line in (tmp_path / "tracker.jsonl").read_text().splitlines()]
    losses = {(e["key"], e["step"]) for e in entries if e["kind"] == "metric" and e["key"].endswith("val_loss")}
    report = json.loads((only_run(tmp_path) / "report.json").read_text())
    for member in report["members"]:
        assert {(f"member_{member['index']:02d}.val_loss", h["epoch"]) for h in member["history"]} <= losses
    stopped = {e["key"] for e in entries if e["kind"] == "tag" and e["key"].endswith(".stopped")}
    assert {"member_00.stopped", "member_01.stopped"} <= stopped


@pytest.mark.slow
def test_serving_client_gets_the_loaded_runs_labels_over_http(tmp_path):
    pytest.importorskip("fastapi", reason="needs the serve extra")
    (port,) = free_ports(1)
    done = run_example(tmp_path, "serving_client.py", "--tiny", "--port", str(port))
    assert "GET /healthz -> {'status': 'ok'}" in done.stdout
    assert "the served labels equal ensemble.load(run_dir).predict on the same images" in done.stdout
    assert "Serving run " in done.stdout and f"127.0.0.1:{port}" in done.stdout


@pytest.mark.slow
def test_submit_job_runs_the_main_job_on_a_local_head_and_stops_it(tmp_path):
    if shutil.which("ray", path=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]) is None:
        pytest.skip("the `ray` command is not installed")
    done = run_example(tmp_path, "submit_job.sh", "--tiny", "--name", "job")
    assert "token authentication on" in done.stdout and "succeeded" in done.stdout
    assert done.stdout.rstrip().endswith("stopped the Ray head")
    report = json.loads((tmp_path / "runs" / "job" / "report.json").read_text())
    assert len(report["members"]) == 2 and report["ensemble"]["test_accuracy"] is not None
    address = re.search(r"started a Ray head at (http://127\.0\.0\.1:\d+)", done.stdout).group(1)
    gone = subprocess.run([shutil.which("ray", path=str(Path(sys.executable).parent)), "job", "list", "--address",
                           address], capture_output=True, text=True, timeout=60)
    assert gone.returncode != 0, "the head the example started is still up"


@pytest.mark.slow
def test_paper_grid_sweeps_data_sizes_and_members(tmp_path):
    done = run_example(tmp_path, "paper_grid.sh", "--tiny")
    sweep_dir = tmp_path / "runs" / "paper-grid"
    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert [cell["settings"] for cell in record["cells"]] == [{"data.train_size": 100, "members": 1},
                                                              {"data.train_size": 100, "members": 2}]
    assert all(cell["status"] == "done" and cell["summary"]["comparison"]["outcome"] for cell in record["cells"])
    assert (sweep_dir / "sweep.png").stat().st_size > 0 and "| done |" in (sweep_dir / "sweep.md").read_text()
    assert done.stdout.count("[sweep] c0") == 2 and "Sweep directory:" in done.stdout
