"""How a run that ends early is described: exit codes, one paragraph, what was kept, the next command.
Pure decisions here; the real signals, Ray deaths, full disks and failing user code are in
test_real_failures.py."""

import errno
import json

import pytest
import ray.exceptions
import torch

import ensemble
from ensemble import errors
from ensemble.config import build_config
from ensemble.errors import MemberFailed, Terminated
from ensemble.job import failures
from ensemble.job.failures import describe, disk_problem, next_step
from ensemble.job.supervisor import abrupt_end
from tests.tiny import TINY, TinyAE
from workers.errors import InputError


def test_signals_map_to_130_and_143(monkeypatch):
    assert describe(KeyboardInterrupt())[0] == 130
    assert describe(Terminated())[0] == 143
    monkeypatch.setattr(errors, "_received", [errors.signal.SIGTERM])  # Ray re-raised it as a plain Ctrl-C
    code, text = describe(KeyboardInterrupt())
    assert code == 143 and "SIGTERM" in text


def test_a_member_failing_in_user_code_names_member_epoch_and_exception_without_colour_codes():
    error = MemberFailed("member_01", 2, ValueError("shapes do not match"), "\x1b[31mTraceback ...\x1b[0m")
    code, text = describe(error)
    assert code == 1 and text.startswith("member_01 failed in epoch 2: ValueError: shapes do not match.")
    assert "ENSEMBLE_DEBUG=1" in text and "\x1b" not in text and error.remote_traceback == "Traceback ..."
    warm = MemberFailed("member_00", None, RuntimeError("boom"))
    assert "while its actor warmed up" in str(warm)


def test_a_full_disk_names_the_path_the_reason_and_the_room_left(tmp_path):
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "member_00" / "x"))
    code, text = describe(MemberFailed("member_00", 3, full))
    assert code == 1 and str(tmp_path / "run" / "member_00") in text and "the disk is full" in text
    assert " MiB free there" in text and "by member_00" in text
    assert "read-only" in disk_problem(OSError(errno.EROFS, "Read-only file system"), "", str(tmp_path))
    assert str(tmp_path) in disk_problem(OSError(errno.ENOSPC, "No space"), "", str(tmp_path))  # no file name


def test_ray_losing_its_node_or_connection_is_named():
    code, text = describe(ray.exceptions.RaySystemError("GCS unreachable"))
    assert code == 1 and text.startswith("Ray's node, its GCS or the connection to the cluster was lost")
    assert "driver process was killed by SIGKILL" in abrupt_end(-9)
    assert "exited with code 1" in abrupt_end(1)


def test_the_next_step_depends_on_what_the_run_left(tmp_path):
    assert next_step(None) == "Nothing was written."
    assert "the same command starts it afresh" in next_step(str(tmp_path / "absent"))
    (tmp_path / "config.json").write_text("{}")
    assert f"ensemble run --resume {tmp_path}" in next_step(str(tmp_path))
    assert "Run the same command again (it has --resume-if-exists)" in next_step(str(tmp_path), scheduled=True)
    assert "ensemble run --resume s3://bucket/runs/a" in next_step("s3://bucket/runs/a")
    (tmp_path / "report.json").write_text("{}")
    assert "had finished" in next_step(str(tmp_path))


def test_free_space_looks_at_the_nearest_existing_parent(tmp_path):
    assert failures.free_space(tmp_path / "not" / "yet" / "made") > 0


@pytest.mark.parametrize("override, message", [
    ("members=true", "expected a number, not true/false"),
    ("seed=yes", "expected a number, not true/false"),
    ("baseline.enabled=1", "expected true or false"),
    ("train.lr=.inf", "finite number"),
    ("train.grad_clip=.nan", "finite number"),
    ("min_members=6", "min_members=6 is more than members=5"),
])
def test_strict_config_values_are_refused_before_anything_starts(override, message):
    with pytest.raises(InputError, match=message):
        build_config({}, [override])


def test_an_empty_config_file_is_an_input_error(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("\n")
    with pytest.raises(InputError, match="is empty; drop --config to run with the defaults"):
        ensemble.EnsembleConfig.from_file(empty)


def test_an_output_that_cannot_hold_runs_fails_before_ray_starts(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cfg = build_config({}, TINY + [f"output={blocker / 'runs'}", "name=x"])
    with pytest.raises(InputError, match="is a file"):
        ensemble.run(cfg)  # no ray_instance: this must fail before Ray is needed
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "config.json").write_text(json.dumps({}))
    with pytest.raises(InputError, match="already exists"):
        ensemble.run(build_config({}, TINY + [f"output={tmp_path}", "name=taken"]))


def test_members_that_cannot_be_packed_are_refused_before_ray_starts(tmp_path):
    class WithBatchNorm(TinyAE):  # running statistics cannot be stacked
        def __init__(self):
            super().__init__()
            self.enc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 12), torch.nn.BatchNorm1d(12))

    cfg = build_config({}, TINY + [f"output={tmp_path}", "name=bn", "resources.members_per_actor=2",
                                   "baseline.enabled=false"])
    with pytest.raises(InputError, match="members_per_actor=1"):
        ensemble.run(cfg, autoencoder=WithBatchNorm)
    with pytest.raises(InputError, match="train.compile"):
        ensemble.run(build_config({}, TINY + [f"output={tmp_path}", "name=c", "resources.members_per_actor=2",
                                              "train.compile=true"]))
    assert not (tmp_path / "bn").exists() and not (tmp_path / "c").exists()


def test_the_resume_command_is_printed_whole_on_its_own_line_at_a_narrow_terminal(tmp_path, monkeypatch, capsys):
    """Issue 31: the command was wrapped inside its quoted path, so a pasted command named a path with a
    newline in it. A run directory with spaces, longer than a line, at a terminal 40 columns wide."""
    import argparse
    import shlex

    from ensemble.cli import report_failure
    run_dir = tmp_path / ("a long output directory with spaces " * 3).strip() / "my run"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text("{}")
    monkeypatch.setenv("COLUMNS", "40")
    args = argparse.Namespace(command="run", run_location=str(run_dir), resume_if_exists=False)
    assert report_failure(args, RuntimeError("the member's disk vanished")) == 1
    lines = capsys.readouterr().err.splitlines()
    commands = [line for line in lines if "ensemble run --resume" in line]
    assert len(commands) == 1 and commands[0].startswith("    ensemble"), lines
    assert shlex.split(commands[0]) == ["ensemble", "run", "--resume", str(run_dir)]
