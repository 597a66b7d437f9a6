"""`output` as an object-store URI: a real S3 API (moto's server) on 127.0.0.1, through pyarrow."""

import json
import os
import shutil
import tempfile

import numpy as np
import pytest

import ensemble
from ensemble.cli import main
from ensemble.config import build_config, resume_config
from ensemble.storage import Mirror, join_uri, split_uri
from tests.stores import RecordingFilesystem
from tests.tiny import TINY
from workers.errors import InputError

pytest.importorskip("moto")
from pyarrow.fs import FileSelector  # noqa: E402


def test_uris_join_and_split_keeping_the_query():
    uri = join_uri("s3://b/runs?endpoint_override=h:1", "run-1")
    assert uri == "s3://b/runs/run-1?endpoint_override=h:1"
    assert split_uri(uri) == ("s3://b/runs?endpoint_override=h:1", "run-1")


@pytest.mark.slow
@pytest.mark.fault
def test_a_run_to_s3_is_on_the_store_and_resumes_from_it(ray_instance, bucket, tmp_path):
    s3, output = bucket
    sets = TINY + ["baseline.enabled=false", "eager.rule=fixed", "eager.epoch=2", f"output={output}", "name=cloud",
                   "resources.lend_idle_cpus=false"]  # bit-identical reruns: the resumed run is compared exactly
    first = ensemble.run(build_config({}, sets), on_event=lambda e: None)
    stored = {info.path for info in s3.get_file_info(FileSelector("runs/team/cloud", recursive=True))}
    assert first.stored_at.startswith("s3://runs/team/cloud")
    assert any(path.startswith("runs/team/cloud/member_01/events.out.tfevents") for path in stored)  # TensorBoard
    for name in ("config.json", "report.json", "report.md", "combiner.skops", "member_01/history.jsonl",
                 "member_01/progress.csv",
                 "member_01/checkpoint_000002/manifest.json", "member_01/checkpoint_000002/model.safetensors"):
        assert f"runs/team/cloud/{name}" in stored
    assert not any("/." in path for path in stored)  # no temporaries uploaded

    with pytest.raises(InputError, match="already exists"):
        ensemble.run(build_config({}, sets), on_event=lambda e: None)

    # an interruption: the run never finished, member_01's last upload stopped before its manifest
    for name in ("report.json", "member_01/outcome.json", "member_01/checkpoint_000002/manifest.json"):
        s3.delete_file(f"runs/team/cloud/{name}")
    config = resume_config(join_uri(output, "cloud"))
    resumed = ensemble.run(config, resume=True, on_event=lambda e: None)
    outcome = json.loads((resumed.run_dir / "member_01" / "outcome.json").read_text())
    assert outcome["resumed_from"] == 1 and "checkpoint_000002" in outcome["skipped_checkpoints"][0]
    old, new = first.report.members[1], resumed.report.members[1]
    assert [h.val_loss for h in new.history] == [h.val_loss for h in old.history]
    assert resumed.report.ensemble.test_accuracy == first.report.ensemble.test_accuracy
    with s3.open_input_stream("runs/team/cloud/report.json") as stream:
        assert json.loads(stream.read())["ensemble"]["test_accuracy"] == first.report.ensemble.test_accuracy

    # `ensemble.load` of the URI: a local copy that predicts like the run; a URI without a run leaves no copy
    images = np.random.default_rng(0).uniform(0, 16, size=(20, 8, 8))  # digits' own pixel scale
    loaded = ensemble.load(join_uri(output, "cloud"))
    assert loaded.stored_at == join_uri(output, "cloud") and loaded.run_dir.is_dir()
    assert np.array_equal(loaded.predict(images), resumed.predict(images))
    shutil.rmtree(loaded.run_dir.parent)  # the local copy is the caller's to keep or remove
    staged = {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("ensemble-staging-")}
    with pytest.raises(InputError, match="there is no run at"):
        ensemble.load(join_uri(output, "nothing-here"))
    assert {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("ensemble-staging-")} == staged

    # `ensemble select` on the URI: downloads the run, adds its selection, uploads only that
    stored = {info.path for info in s3.get_file_info(FileSelector("runs/team/cloud", recursive=True))}
    assert main(["select", join_uri(output, "cloud"), "--set", "eager.epoch=1"]) == 0
    added = {info.path for info in s3.get_file_info(FileSelector("runs/team/cloud", recursive=True))} - stored
    assert added and all(path.startswith("runs/team/cloud/selections") for path in added)
    assert any(path.endswith("report.json") for path in added)


def test_an_unusable_uri_is_an_input_error_before_ray_starts(tmp_path):
    with pytest.raises(InputError, match="cannot open the output URI"):
        ensemble.run(build_config({}, TINY + ["output=nosuchfs://bucket/runs"]), on_event=lambda e: None)


def test_manifests_are_uploaded_after_their_checkpoint_and_unchanged_files_once(tmp_path):
    import torch

    from workers.checkpoints import save_checkpoint
    local = tmp_path / "staging" / "run"
    save_checkpoint(local / "member_00", 1, {"w": torch.zeros(2)}, {}, {})
    mirror = Mirror((tmp_path / "store" / "run").as_uri(), local)
    mirror.filesystem = RecordingFilesystem(mirror.filesystem)
    mirror.push()
    names = [path.rsplit("/", 1)[1] for path in mirror.filesystem.written]
    assert names[-1] == "manifest.json" and len(names) == 3
    mirror.push()
    assert len(mirror.filesystem.written) == 3  # nothing changed, nothing sent
    assert (tmp_path / "store" / "run" / "member_00" / "checkpoint_000001" / "manifest.json").is_file()
