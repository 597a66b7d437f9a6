"""Experiment trackers: the MLflow tracker writes one MLflow run per ensemble run with a nested run
per member and the baseline, per-epoch metrics, the config as params and the report as artifacts.

The fast tests drive the real MLflow client against its local file store with the typed events a
run sends (no Ray); the slow test runs `ensemble run --tracker mlflow` and reads the store back."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ensemble.config import build_config
from ensemble.observers.tracking import NoTracker, chained, epoch_metrics, flat_params, open_tracker, tracked
from tests.ports import free_ports
from workers.errors import InputError
from workers.events import Done, EpochEnded, Lost, Started
from workers.history import EpochRecord
from workers.outcome import Outcome
from workers.stopping import Decision

mlflow = pytest.importorskip("mlflow")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(tmp_path, monkeypatch):
    """MLflow's local file store in tmp_path (MLflow 3 asks for an explicit opt-in to it)."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    return mlflow.MlflowClient(f"file:{tmp_path / 'mlruns'}")


@pytest.fixture
def no_mlflow_settings(monkeypatch):
    """What a new user has: no tracking URI, no file-store opt-in (set and removed, so both are restored)."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def epochs(name, losses, start=100.0):
    return [EpochEnded(name, start + i, EpochRecord(i + 1, train, val, 0.5 + i), Decision(False, "running"))
            for i, (train, val) in enumerate(losses)]


def runs_by_name(client):
    return {run.info.run_name: run for run in client.search_runs(["0"])}


def test_flat_params_and_epoch_metrics_are_plain():
    assert flat_params({"members": 3, "train": {"lr": 0.01, "grad_clip": None}, "model": {"channels": [6, 16]},
                        "name": "r"}) == {"members": "3", "train.lr": "0.01", "train.grad_clip": "null",
                                          "model.channels": "[6, 16]", "name": "r"}
    nan = EpochEnded("m", 1.0, EpochRecord(1, float("nan"), 0.2, 1.5), Decision(True, "diverged", True))
    assert epoch_metrics(nan) == {"val_loss": 0.2, "epoch_seconds": 1.5}  # a NaN loss is left out


def test_unknown_trackers_are_input_errors_naming_the_allowed_ones():
    with pytest.raises(InputError, match=r"tracker='wandb' is not a tracker; allowed: 'mlflow'"):
        open_tracker("wandb")
    assert isinstance(open_tracker(None), NoTracker)
    assert chained(None, NoTracker()) is None
    seen = []
    both = chained(seen.append, lambda e: seen.append(("again", e)))
    both("x")
    assert seen == ["x", ("again", "x")]


def test_events_make_nested_member_runs_with_per_epoch_metrics(store, tmp_path):
    config = build_config({}, ["members=2", "name=tracked", "train.lr=0.01"])
    tracker = open_tracker("mlflow")
    tracker.start(config)
    done = Outcome([], "plateau: gain 1% < 20%", False, 2.0)
    for event in [Started("member_00", 99.0, {}), Started("member_01", 99.0, {}),
                  *epochs("member_00", [(0.5, 0.4), (0.3, 0.35)]), *epochs("member_01", [(0.6, 0.5)]),
                  Done("member_00", 103.0, done), Lost("member_01", 104.0, "restarts used up"),
                  Started("baseline", 105.0, {}), *epochs("baseline", [(0.4, 0.3)]), Done("baseline", 107.0, done)]:
        tracker(event)
    runs = runs_by_name(store)
    assert set(runs) == {"tracked", "member_00", "member_01", "baseline"}
    parent = runs["tracked"].info.run_id
    assert all(runs[n].data.tags["mlflow.parentRunId"] == parent for n in ("member_00", "member_01", "baseline"))
    assert runs["tracked"].data.params["members"] == "2" and runs["tracked"].data.params["train.lr"] == "0.01"
    val = store.get_metric_history(runs["member_00"].info.run_id, "val_loss")
    assert [(m.step, m.value) for m in sorted(val, key=lambda m: m.step)] == [(1, 0.4), (2, 0.35)]
    assert len(store.get_metric_history(runs["member_00"].info.run_id, "epoch_seconds")) == 2
    assert runs["member_00"].info.status == "FINISHED" and runs["member_01"].info.status == "FAILED"
    assert runs["member_00"].data.tags["stop_reason"].startswith("plateau")
    assert runs["tracked"].info.status == "RUNNING"  # until finish() or fail()


def test_a_failed_run_closes_every_open_mlflow_run(store):
    config = build_config({}, ["members=1", "name=broken"])
    with pytest.raises(RuntimeError, match="boom"):
        with tracked(open_tracker("mlflow"), config) as tracker:
            tracker(Started("member_00", 1.0, {}))
            raise RuntimeError("boom")
    assert {run.info.run_name: run.info.status for run in store.search_runs(["0"])} == {
        "broken": "FAILED", "member_00": "FAILED"}


def test_with_no_settings_the_run_logs_to_a_file_store_under_the_output(no_mlflow_settings, tmp_path):
    config = build_config({}, ["members=1", "name=first-try", f"output={tmp_path / 'runs'}"])
    tracker = open_tracker("mlflow")
    tracker.start(config)
    store = (tmp_path / "runs" / "mlruns").as_uri()
    assert tracker.location.startswith(f"MLflow: run {tracker.parent} logged to {store}; to view it")
    assert tracker.location.endswith(f"MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri {store}")
    assert [run.info.run_name for run in mlflow.MlflowClient(store).search_runs(["0"])] == ["first-try"]


@pytest.mark.parametrize("uri, says", [
    ("ftp://somewhere/mlruns", "tracker 'mlflow' cannot log to ftp://somewhere/mlruns: "),
    ("http://127.0.0.1:{port}", "tracker 'mlflow' cannot log to http://127.0.0.1:{port}: ")])
def test_a_store_that_cannot_work_is_an_input_error_with_the_fix(uri, says, no_mlflow_settings, tmp_path,
                                                                 monkeypatch):
    port = free_ports(1)[0]  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri.format(port=port))
    config = build_config({}, ["members=1", "name=nowhere", f"output={tmp_path}"])
    tracker = open_tracker("mlflow")
    started = time.perf_counter()
    with pytest.raises(InputError) as raised:
        tracker.start(config)
    assert time.perf_counter() - started < 30  # no minutes of retries before the answer
    message = str(raised.value)
    assert message.startswith(says.format(port=port)) and "Set MLFLOW_TRACKING_URI to a tracking server" in message
    assert "\n" not in message and not (tmp_path / "mlruns").exists()


def test_a_tracker_failing_mid_run_is_one_warning_and_never_fails_the_run(store, caplog):
    config = build_config({}, ["members=1", "name=flaky"])
    tracker = open_tracker("mlflow")
    tracker.start(config)
    tracker(Started("member_00", 1.0, {}))

    def gone(*args, **kwargs):
        raise ConnectionError("the MLflow server went away; see https://mlflow.org/docs/latest/ for more")
    tracker.client.log_batch = gone
    with caplog.at_level("WARNING"):
        for event in epochs("member_00", [(0.5, 0.4), (0.3, 0.35)]):
            tracker(event)  # the first failure warns; the rest are skipped
        tracker.fail(RuntimeError("later"))
    warned = [r.getMessage() for r in caplog.records if "the tracker failed" in r.getMessage()]
    assert len(warned) == 1 and "see https://mlflow.org/docs/latest/ for more)" in warned[0]


@pytest.mark.slow
def test_ensemble_run_tracker_mlflow_works_with_no_settings(tmp_path, no_mlflow_settings, monkeypatch):
    """A new user's first try: the extra installed, no MLflow variable set."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "ensemble", "run", "--tracker", "mlflow", "--quiet", "--name", "tiny",
               "--output", str(tmp_path / "runs"), "--set", "members=2", "--set", "train.epochs=2",
               "--set", "eager.rule=none", "--set", "data.name=digits", "--set", "data.train_size=200",
               "--set", "data.val_size=100", "--set", "data.test_size=100", "--set", "baseline.max_epochs=1",
               "--set", "model.channels=[4]", "--set", "resources.cpus_per_member=1"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    store_uri = (tmp_path / "runs" / "mlruns").as_uri()
    assert f"logged to {store_uri}; to view it" in done.stdout
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for the client below
    client = mlflow.MlflowClient(store_uri)
    runs = {run.info.run_name: run for run in client.search_runs(["0"])}
    assert set(runs) == {"tiny", "member_00", "member_01", "baseline"}
    parent = runs["tiny"]
    assert parent.info.status == "FINISHED" and parent.data.params["members"] == "2"
    report = json.loads((tmp_path / "runs" / "tiny" / "report.json").read_text())
    assert parent.data.metrics["ensemble_test_accuracy"] == pytest.approx(report["ensemble"]["test_accuracy"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report.json", "report.md", "config.json"} <= artifacts and any(a.endswith(".png") for a in artifacts)
    for name, trained in [("member_00", 2), ("member_01", 2), ("baseline", 1)]:
        run = runs[name]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id and run.info.status == "FINISHED"
        for metric in ("train_loss", "val_loss", "epoch_seconds"):
            history = client.get_metric_history(run.info.run_id, metric)
            assert sorted(m.step for m in history) == list(range(1, trained + 1)), (name, metric)
        saved = [json.loads(line) for line in (tmp_path / "runs" / "tiny" / name / "history.jsonl").open()]
        logged = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_loss")}
        assert logged == pytest.approx({row["epoch"]: row["val_loss"] for row in saved})


def test_params_name_only_what_ran():
    from ensemble.observers.tracking import params_that_ran
    custom = build_config({}, ["model.autoencoder=tests.tiny:TinyAE", "eager.rule=fixed", "eager.epoch=2"])
    params = flat_params(params_that_ran(custom))
    assert params["eager.epoch"] == "2" and params["model.autoencoder"] == "tests.tiny:TinyAE"
    assert not {"eager.threshold", "eager.min_epochs", "eager.budget_seconds", "model.channels",
                "model.kernel_size", "model.activation", "model.pooling"} & set(params)
    alone = flat_params(params_that_ran(build_config({}, ["baseline.enabled=false", "eager.rule=none"])))
    assert [k for k in alone if k.startswith(("baseline.", "eager."))] == ["eager.rule", "baseline.enabled"]
    assert alone["model.channels"] == "[6, 16]"  # the built-in CAE's settings took part


@pytest.mark.slow
def test_ensemble_run_logs_a_custom_ensemble_to_a_real_mlflow_server(tmp_path, no_mlflow_settings):
    """As teams use MLflow: `mlflow server` (sqlite backend) on 127.0.0.1, the run logged over HTTP from the
    folder holding the user's class, read back with MLflow's client."""
    from tests.mlflow_server import mlflow_server
    from tests.user_folder import ensemble_command, user_folder
    folder = user_folder(tmp_path)
    (tmp_path / "server").mkdir()
    with mlflow_server(tmp_path / "server") as uri:
        done = ensemble_command(
            folder, "run", "--tracker", "mlflow", "--quiet", "--name", "custom", "--output", "runs",
            *[arg for key in ["model.autoencoder=mymods:AE", "members=2", "train.epochs=2", "eager.rule=none",
                              "data.name=digits", "data.train_size=150", "data.val_size=60", "data.test_size=150",
                              "baseline.max_epochs=1", "resources.cpus_per_member=1"] for arg in ("--set", key)],
            env={"MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "team"})  # a team's setup: nothing else
        assert done.returncode == 0, done.stderr
        client = mlflow.MlflowClient(uri)
        experiment = client.get_experiment_by_name("team")
        runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
        parents = [run for run in runs.values() if "mlflow.parentRunId" not in run.data.tags]
        assert [run.info.run_name for run in parents] == ["custom"] and set(runs) == {
            "custom", "member_00", "member_01", "baseline"}
        parent = parents[0]
        assert parent.info.status == "FINISHED"
        assert f"MLflow: run {parent.info.run_id} at {uri}/#/experiments/{experiment.experiment_id}/runs/" \
               f"{parent.info.run_id}" in done.stdout
        run_dir = folder / "runs" / "custom"
        report = json.loads((run_dir / "report.json").read_text())
        params = parent.data.params
        assert params["model.autoencoder"] == "mymods:AE" and params["members"] == "2"
        assert not {"model.channels", "model.kernel_size", "model.activation", "model.pooling"} & set(params)
        assert not {"eager.epoch", "eager.threshold", "eager.budget_seconds"} & set(params)  # rule none ran
        assert float(params["baseline.width"]) == pytest.approx(report["baseline"]["architecture"]["width"])
        assert float(params["baseline.width"]) == pytest.approx(2 ** 0.5)  # the default, sqrt(members), built
        artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
        assert {"report.json", "report.md", "config.json"} <= artifacts and any(a.endswith(".png") for a in artifacts)
        for name, trained in [("member_00", 2), ("member_01", 2), ("baseline", 1)]:
            run = runs[name]
            assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id and run.info.status == "FINISHED"
            saved = [json.loads(line) for line in (run_dir / name / "history.jsonl").open()]
            for metric in ("train_loss", "val_loss"):
                logged = {m.step: m.value for m in client.get_metric_history(run.info.run_id, metric)}
                assert logged == pytest.approx({row["epoch"]: row[metric] for row in saved}), (name, metric)
                assert sorted(logged) == list(range(1, trained + 1))
