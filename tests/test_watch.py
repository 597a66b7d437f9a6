"""Watching a run end to end: the callback protocol with a tracker, TensorBoard and CSV logs,
member names in Ray's timeline and dashboard, and the console output's size."""

import io
import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import ensemble
from ensemble.config import build_config
from ensemble.observers.progress import Watch
from tests.boards import scalars
from tests.tiny import TINY
from workers.events import EpochEnded

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
FIVE = TINY + ["members=5"]


def docs_block(marker: str) -> str:
    """The Python example on the docs' "Watching a run" page that contains `marker`: the test runs what
    users copy."""
    page = (ROOT / "docs" / "guide" / "watching.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    return next(block for block in blocks if marker in block)


class FakeTracker:
    """The user's side of the protocol: MLflow's `log_metric` and `set_tag`, kept in memory."""

    def __init__(self):
        self.metrics, self.tags = {}, {}

    def log_metric(self, key, value, step=None):
        self.metrics.setdefault(key, []).append((step, value))

    def set_tag(self, key, value):
        self.tags[key] = value


@pytest.fixture(scope="module")
def five_members(ray_instance, tmp_path_factory):
    """A tiny run of 5 members and the baseline, its events forwarded to a tracker by the docs'
    example while the epoch-line view writes to a buffer."""
    namespace = {}
    exec(docs_block("class TrackerForwarder"), namespace)
    tracker, out = FakeTracker(), io.StringIO()
    events = []

    def on_event(event):
        events.append(event)
        namespace["TrackerForwarder"](tracker)(event)
    output = tmp_path_factory.mktemp("watch")
    result = ensemble.run(build_config({}, FIVE + [f"output={output}", "name=five"]), on_event=on_event,
                          progress=Watch(view="lines", stream=out))
    return result, events, tracker, out.getvalue()


def test_the_documented_forwarder_sends_every_epoch_to_the_tracker(five_members):
    result, events, tracker, _ = five_members
    names = [f"member_{i:02d}" for i in range(5)] + ["baseline"]
    for name in names:
        epochs = [e.record for e in events if isinstance(e, EpochEnded) and e.name == name]
        assert tracker.metrics[f"{name}.val_loss"] == [(r.epoch, r.val_loss) for r in epochs]
        assert tracker.tags[f"{name}.stopped"] == (result.report.baseline.stop_reason if name == "baseline"
                                                   else result.report.members[int(name[-2:])].stop_reason)


def test_tensorboard_lists_every_member_and_the_baseline_and_each_has_progress_csv(five_members):
    result, _, _, _ = five_members
    runs = scalars(result.run_dir)
    assert sorted(runs) == sorted([f"member_{i:02d}" for i in range(5)] + ["baseline"])
    for side in result.report.members + [result.report.baseline]:
        assert [step for step, _ in runs[side.name]["loss/val"]] == [h.epoch for h in side.history]
        rows = (result.run_dir / side.name / "progress.csv").read_text().splitlines()
        assert rows[0] == "epoch,train_loss,val_loss,seconds,elapsed" and len(rows) == 1 + side.epochs_trained


def test_the_epoch_lines_grow_with_member_epochs_and_fit_120_columns(five_members):
    result, events, _, text = five_members
    lines = text.splitlines()
    member_epochs = sum(isinstance(e, EpochEnded) for e in events)
    assert sum(" epoch " in line for line in lines) == member_epochs
    assert len(lines) <= member_epochs + 30 and max(map(len, lines)) <= 120


def test_each_members_work_carries_its_name_in_the_ray_timeline(five_members, ray_instance):
    categories = {event.get("cat") for event in ray_instance.timeline()}
    assert {"task::member_00", "task::member_04", "task::baseline"} <= categories


def exported_gauges(port: int, run: str, final_epochs: dict[str, int], seconds: float = 60) -> dict:
    """(gauge, member) -> value of this run's gauges, as Prometheus scrapes them from the node's metrics
    agent. It exports every few seconds, a scrape may hold an earlier epoch's values, so this polls
    until every member's epoch gauge shows its last epoch (or the time is up: the test then says which)."""
    from prometheus_client.parser import text_string_to_metric_families
    deadline, found = time.monotonic() + seconds, {}
    while time.monotonic() < deadline:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        found = {(sample.name, sample.labels["member"]): sample.value
                 for family in text_string_to_metric_families(text) for sample in family.samples
                 if sample.name.startswith("ray_ensemble_member_") and sample.labels.get("run") == run}
        if {member: found.get(("ray_ensemble_member_epoch", member)) for member in final_epochs} == final_epochs:
            return found
        time.sleep(1)
    return found


def test_each_members_latest_epoch_reaches_rays_metrics_for_prometheus(five_members, ray_instance):
    result, events, _, _ = five_members
    port = next(n["MetricsExportPort"] for n in ray_instance.nodes() if n["Alive"])
    sides = result.report.members + [result.report.baseline]
    gauges = exported_gauges(port, "five", {side.name: side.epochs_trained for side in sides})
    for side in sides:
        last = [e.record for e in events if isinstance(e, EpochEnded) and e.name == side.name][-1]
        assert gauges[("ray_ensemble_member_epoch", side.name)] == last.epoch == side.epochs_trained
        assert gauges[("ray_ensemble_member_val_loss", side.name)] == pytest.approx(last.val_loss)
        assert gauges[("ray_ensemble_member_epoch_seconds", side.name)] == pytest.approx(last.seconds)


def get(url: str, token: str):
    """GET a dashboard endpoint as its web page does once given the cluster's token."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200
        return json.loads(answer.read())


def test_dashboard_answers_on_loopback_while_the_run_trains_and_names_the_members(tmp_path):
    sets = TINY + ["members=2", "train.epochs=4", "eager.rule=none", "baseline.max_epochs=6"]
    command = [sys.executable, "-m", "ensemble", "run", "--dashboard", "--output", str(tmp_path), "--name", "dash"]
    token = secrets.token_hex(32)  # the local instance's token, chosen here instead of ~/.ray's
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    process = subprocess.Popen(command + [a for s in sets for a in ("--set", s)], cwd=ROOT, text=True, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen, url, names = [], None, set()
    try:
        for line in process.stdout:
            seen.append(line.rstrip("\n"))
            if line.startswith("Ray dashboard: "):
                url = line.split(": ", 1)[1].split()[0]
                assert url.startswith("http://127.0.0.1:")
                assert "ray_version" in get(f"{url}/api/version", token)
            if url and " epoch " in line and not names:  # the members are training now
                names = task_names(url, token)
                assert process.poll() is None
        assert process.wait(timeout=300) == 0, "\n".join(seen)
    finally:
        if process.poll() is None:
            process.kill()
    assert url and {"member_00", "member_01"} <= names
    member_epochs = sum(" epoch " in line for line in seen)
    # a line per epoch and a few others until the summary (whose length follows the report, not the epochs)
    before_summary = seen[:next(i for i, line in enumerate(seen) if line.startswith("|"))]
    prose = [line for line in seen if not line.startswith("|")]  # the summary's tables are as wide as report.md's
    assert len(before_summary) <= member_epochs + 10 and max(map(len, prose)) <= 120, "\n".join(seen)


def task_names(url: str, token: str, seconds: float = 30) -> set:
    """The task names the dashboard lists (task events reach it a moment after they happen)."""
    deadline, names = time.time() + seconds, set()
    while not {"member_00", "member_01"} <= names and time.time() < deadline:
        names = {task["name"] for task in get(f"{url}/api/v0/tasks?limit=1000&detail=false", token)["data"]
                 ["result"]["result"]}
        time.sleep(0.5)
    return names
