"""One writer per run directory (issue 23, point 1): the lock file, its holder, its release.

Two `ensemble run --resume` of one run started a second apart used to both train and both write:
the report was whichever finished last and progress.csv lost rows. The pure decisions run without
Ray; the end-to-end test drives the command line as a user does (marked slow: it trains).
"""

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from ensemble.config import build_config
from ensemble.runs.rundir import write_config
from ensemble.runs.runlock import Holder, acquire, is_stale, read_holder, release, run_lock
from tests.session_ray import joining_environ
from tests.tiny import TINY
from workers.errors import InputError
from workers.layout import WRITER_LOCK

HOST = socket.gethostname()


def gone_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def write_lock(run_dir, pid, host=HOST):
    (run_dir / WRITER_LOCK).write_text(json.dumps({"host": host, "pid": pid, "started": time.time(),
                                                   "command": "ensemble run --resume elsewhere"}))


def test_only_a_dead_holder_on_this_host_is_stale():
    assert is_stale(Holder(HOST, 123, 0.0), HOST, alive=lambda pid: False)
    assert not is_stale(Holder(HOST, 123, 0.0), HOST, alive=lambda pid: True)
    assert not is_stale(Holder("other-node", 123, 0.0), HOST, alive=lambda pid: False)  # cannot be checked


def test_a_live_holder_refuses_a_second_writer_and_a_dead_one_is_taken_over(tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        write_lock(tmp_path, sleeper.pid)
        with pytest.raises(InputError, match=f"pid {sleeper.pid} on host"):
            with run_lock(tmp_path):
                pass
    finally:
        sleeper.kill()
        sleeper.wait()
    write_lock(tmp_path, gone_pid())
    said = []
    with run_lock(tmp_path, notice=said.append) as me:
        assert read_holder(tmp_path / WRITER_LOCK) == me
    assert "took over the lock" in said[0] and "no longer running" in said[0]
    assert not (tmp_path / WRITER_LOCK).exists()  # released


MALFORMED = {
    "pid as text": {"host": HOST, "pid": "abc", "started": 1.0, "command": ""},
    "20-digit pid": {"host": HOST, "pid": 10**19, "started": 1.0, "command": ""},
    "start time 1e300": {"host": HOST, "pid": 1, "started": 1e300, "command": ""},
    "start time NaN": {"host": HOST, "pid": 1, "started": float("nan"), "command": ""},
    "no host": {"pid": 1, "started": 1.0},
    "a list": [1, 2],
}


@pytest.mark.parametrize("holder", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_lock_is_an_input_error_naming_the_file_and_how_to_clear_it(tmp_path, holder):
    """Issue 31: these gave exit 1 with an OverflowError or TypeError that named no file."""
    (tmp_path / WRITER_LOCK).write_text(json.dumps(holder))
    with pytest.raises(InputError) as raised:
        with run_lock(tmp_path, notice=print):
            pass
    said = unwrapped(str(raised.value))
    assert f"{str(tmp_path / WRITER_LOCK)!r}" in said and "delete" in said and "try again" not in said, said
    assert (tmp_path / WRITER_LOCK).exists()  # not taken over: nothing proves its holder gone


def test_a_dangling_symlink_lock_is_an_input_error_not_try_again(tmp_path):
    (tmp_path / WRITER_LOCK).symlink_to(tmp_path / "nowhere")
    with pytest.raises(InputError) as raised:
        with run_lock(tmp_path, notice=print):
            pass
    said = unwrapped(str(raised.value))
    assert "symbolic link" in said and str(tmp_path / WRITER_LOCK) in said and "try again" not in said, said


def test_a_malformed_lock_stops_the_command_line_with_exit_2(tmp_path):
    """Through the CLI: `ensemble run --resume` on an interrupted run whose lock holds a pid that is not one."""
    run_dir = tmp_path / "job"
    run_dir.mkdir()
    write_config(run_dir, build_config({}, TINY + [f"output={tmp_path}", "name=job"]))
    (run_dir / WRITER_LOCK).write_text(json.dumps(MALFORMED["20-digit pid"]))
    done = subprocess.run([sys.executable, "-m", "ensemble", "run", "--resume", str(run_dir)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert str(run_dir / WRITER_LOCK) in unwrapped(done.stderr) and "not a process id" in unwrapped(done.stderr)


def test_release_leaves_a_lock_that_another_process_took_over(tmp_path):
    mine, theirs = Holder(HOST, os.getpid(), 1.0), Holder(HOST, os.getpid(), 2.0)
    acquire(tmp_path, mine, print)
    (tmp_path / WRITER_LOCK).write_text(json.dumps(theirs.__dict__))
    release(tmp_path, mine)
    assert read_holder(tmp_path / WRITER_LOCK) == theirs


def unwrapped(text: str) -> str:
    """A message's paragraph on one line (the CLI wraps it at 100 columns)."""
    return " ".join(text.split())


def cli(*args, cwd, env):
    return subprocess.Popen([sys.executable, "-m", "ensemble", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def collect(process) -> list[str]:
    """The process's output lines, read as they come (a thread: the test waits on lines)."""
    lines = []
    threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True).start()
    return lines


def wait_for(condition, lines, seconds=240):
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "".join(lines)
        time.sleep(0.2)


@pytest.mark.slow
def test_one_writer_per_run_from_the_command_line(ray_instance, tmp_path):
    """A stale lock is taken over with a line saying so; a second `--resume` meanwhile exits 2 naming the
    first, before Ray starts; SIGTERM to the first releases the lock. The first joins the session's Ray
    (its own Ray start is not what this checks)."""
    output = tmp_path / "my runs $(touch pwned)"  # the printed resume command must keep this one path
    run_dir = output / "job"
    run_dir.mkdir(parents=True)
    overrides = TINY + ["train.epochs=5000", "eager.rule=none", "baseline.enabled=false", f"output={output}",
                        "name=job"]  # epochs enough to be still training when the second command comes
    write_config(run_dir, build_config({}, overrides))  # an interrupted run: config written, nothing trained
    write_lock(run_dir, gone_pid())  # left by a driver that was SIGKILLed
    first = cli("run", "--resume", str(run_dir), cwd=tmp_path, env=joining_environ(ray_instance))
    lines = collect(first)
    try:
        wait_for(lambda: any(" epoch   2/5000 " in line for line in lines), lines)
        assert any("took over the lock" in line for line in lines), "".join(lines)
        holder = read_holder(run_dir / WRITER_LOCK)
        second = subprocess.run([sys.executable, "-m", "ensemble", "run", "--resume", str(run_dir)], cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert f"pid {holder.pid} on host {HOST!r}" in unwrapped(second.stderr) and "Traceback" not in second.stderr
        assert first.poll() is None  # the first still trains, undisturbed
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=120) == 143, "".join(lines)
    finally:
        if first.poll() is None:
            first.kill()
    assert not (run_dir / WRITER_LOCK).exists(), "".join(lines)  # released on SIGTERM
    advice = [line for line in lines if line.startswith("    ensemble run --resume")]  # a line of its own
    assert len(advice) == 1 and shlex.split(advice[0]) == ["ensemble", "run", "--resume", str(run_dir)], lines


@pytest.mark.slow
def test_select_waits_for_no_one_and_refuses_while_another_writes(saved_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(saved_run, run_dir)
    shutil.rmtree(run_dir / "selections", ignore_errors=True)  # the session's run: other tests may have selected
    sleeper = subprocess.Popen(["sleep", "120"])
    try:
        write_lock(run_dir, sleeper.pid)
        select = subprocess.run([sys.executable, "-m", "ensemble", "select", str(run_dir), "--set", "eager.epoch=1"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=300)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert select.returncode == 2 and f"pid {sleeper.pid} on host" in unwrapped(select.stderr), select.stderr
    assert not (run_dir / "selections").exists()
    (run_dir / WRITER_LOCK).unlink()
    done = subprocess.run([sys.executable, "-m", "ensemble", "select", str(run_dir), "--set", "eager.epoch=1"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and (run_dir / "selections").is_dir(), done.stderr
    assert not (run_dir / WRITER_LOCK).exists()


@pytest.mark.slow
def test_labels_refuses_while_another_writes(saved_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(saved_run, run_dir)
    for earlier in ("labels.json", "labels.png"):  # another test may have run `labels` on the shared run
        (run_dir / earlier).unlink(missing_ok=True)
    sleeper = subprocess.Popen(["sleep", "120"])
    try:
        write_lock(run_dir, sleeper.pid)
        labels = subprocess.run([sys.executable, "-m", "ensemble", "labels", str(run_dir), "--per-class", "1",
                                 "--draws", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert labels.returncode == 2 and f"pid {sleeper.pid} on host" in unwrapped(labels.stderr), labels.stderr
    assert not (run_dir / "labels.json").exists()
