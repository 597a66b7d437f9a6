"""progress.csv and TensorBoard scalars from the events, and the mirror uploading only what an
event produced (no Ray: the events are made here, the store is a local directory)."""

import csv

import pytest
import torch

from ensemble.observers.logs import RunLogs, event_files, progress_text, read_progress
from ensemble.storage import Mirror
from tests.boards import scalars
from tests.stores import RecordingFilesystem
from workers.checkpoints import save_checkpoint
from workers.events import Done, EpochEnded, Lost, Started
from workers.history import EpochRecord, write_history
from workers.layout import HISTORY, OUTCOME
from workers.outcome import Outcome
from workers.stopping import CONTINUE

T0 = 1_000.0


def epochs(logs, name, first, last, start=T0):
    for k in range(first, last + 1):
        logs(EpochEnded(name, start + k, EpochRecord(k, 10.0 / k, 9.0 / k, 0.5), CONTINUE))


def test_every_member_and_the_baseline_get_progress_csv_and_one_tensorboard_run(tmp_path):
    pytest.importorskip("tensorboard")
    logs = RunLogs(tmp_path, started=T0)
    names = [f"member_{i:02d}" for i in range(5)] + ["baseline"]
    for name in names:
        logs(Started(name, T0, {}))
        written = [path for k in (1, 2) for path in
                   logs(EpochEnded(name, T0 + k, EpochRecord(k, 10.0 / k, 9.0 / k, 0.5), CONTINUE))]
        assert f"{name}/progress.csv" in written and any("events.out.tfevents" in p for p in written)
    logs.close()
    runs = scalars(tmp_path)
    assert sorted(runs) == sorted(names)
    assert runs["member_03"]["loss/val"] == [(1, 9.0), (2, 4.5)] and set(runs["baseline"]) == {
        "loss/train", "loss/val", "epoch_seconds"}
    rows = list(csv.DictReader((tmp_path / "member_03" / "progress.csv").open()))
    assert rows[1] == {"epoch": "2", "train_loss": "5.0", "val_loss": "4.5", "seconds": "0.5", "elapsed": "2.0"}


def test_a_restart_or_resume_keeps_the_epochs_up_to_its_checkpoint(tmp_path):
    logs = RunLogs(tmp_path, started=T0)
    logs(Started("member_00", T0, {}))
    epochs(logs, "member_00", 1, 3)
    logs(Started("member_00", T0 + 5, {}, resumed_from=2))  # a new actor: epoch 3 is trained again
    epochs(logs, "member_00", 3, 4, start=T0 + 5)
    logs.close()
    assert list(read_progress(tmp_path / "member_00" / "progress.csv")) == [1, 2, 3, 4]

    again = RunLogs(tmp_path, started=T0 + 100)  # `--resume` in a new driver: the file is read back
    again(Started("member_00", T0 + 100, {}, resumed_from=4))
    epochs(again, "member_00", 5, 5, start=T0 + 100)
    again.close()
    rows = read_progress(tmp_path / "member_00" / "progress.csv")
    assert list(rows) == [1, 2, 3, 4, 5] and rows[5]["elapsed"] == 5.0
    assert progress_text([]) == "epoch,train_loss,val_loss,seconds,elapsed\n"


def test_each_event_names_the_files_it_produced():
    record = EpochRecord(3, 1.0, 1.0, 0.1)
    assert event_files(Started("m", T0, {})) == ["m/checkpoint_000000"]
    assert event_files(Started("m", T0, {}, resumed_from=2)) == []
    assert event_files(EpochEnded("m", T0, record, CONTINUE)) == ["m/checkpoint_000003", f"m/{HISTORY}"]
    assert event_files(EpochEnded("m", T0, EpochRecord(4, float("nan"), 1.0, 0.1), CONTINUE)) == [f"m/{HISTORY}"]
    assert event_files(Done("m", T0, Outcome([record], "done", False, 1.0))) == [f"m/{HISTORY}", f"m/{OUTCOME}"]
    assert event_files(Lost("m", T0, "gone")) == []


def test_a_push_after_an_event_uploads_that_events_files_only(tmp_path):
    local = tmp_path / "staging" / "run"
    mirror = Mirror((tmp_path / "store" / "run").as_uri(), local)
    mirror.filesystem = RecordingFilesystem(mirror.filesystem)

    def sent():
        return [path.split("/run/", 1)[1] for path in mirror.filesystem.written]
    for epoch in (0, 1):  # epochs already on the store
        save_checkpoint(local / "member_00", epoch, {"w": torch.zeros(2)}, {}, {})
    mirror.push()
    mirror.filesystem.written.clear()

    save_checkpoint(local / "member_00", 2, {"w": torch.ones(2)}, {}, {})
    write_history(local / "member_00" / HISTORY, [EpochRecord(k, 1.0, 1.0, 0.1) for k in (1, 2)])
    (local / "member_01").mkdir()
    (local / "member_01" / "stray.txt").write_text("not this event's")
    mirror.push(event_files(EpochEnded("member_00", T0, EpochRecord(2, 1.0, 1.0, 0.1), CONTINUE)))
    assert sent() == ["member_00/checkpoint_000002/model.safetensors",
                      "member_00/checkpoint_000002/state.pt", "member_00/history.jsonl",
                      "member_00/checkpoint_000002/manifest.json"]  # manifests last

    # a member on another node: its epoch-0 checkpoint arrives with its first epoch's event
    mirror.filesystem.written.clear()
    mirror.push(event_files(Started("member_02", T0, {})))
    assert sent() == []
    save_checkpoint(local / "member_02", 0, {"w": torch.zeros(2)}, {}, {})
    mirror.push([])
    assert [p.rsplit("/", 1)[1] for p in mirror.filesystem.written] == ["model.safetensors", "state.pt",
                                                                          "manifest.json"]
    mirror.filesystem.written.clear()
    mirror.push(final=True)  # the final walk sends what no event named, and nothing twice
    assert sent() == ["member_01/stray.txt"]
