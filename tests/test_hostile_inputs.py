"""Hostile and unlucky inputs, as a new user or an attacker meets them (issue 23, points 2-8).

Each case goes through the command line, HTTP or the public Python API and checks what the user
sees: exit 2 (an InputError in Python) naming the file and what is wrong, no traceback, nothing run
that was not asked for. The writer's lock (point 1) has its own file, tests/test_run_lock.py.
Tests that train or serve are marked slow.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.session_ray import joining_env

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, cwd, timeout=300, join=None):
    """`ensemble ARGS` in a fresh process, with no RAY_ADDRESS: a run starts its own Ray. `join`: the session's
    Ray (`ray_instance`), which the run joins instead, where Ray's start is not what a test checks."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    if join is not None:
        env.update(joining_env(join))
    return subprocess.run([sys.executable, "-m", "ensemble", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=timeout)


def said(done) -> str:
    """What a command printed, its paragraphs unwrapped (messages wrap at 100 columns)."""
    return " ".join((done.stdout + done.stderr).split())


def python(code: str, *args, cwd):
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)


def set_recorded(run_dir: Path, key: str, value, files=("config.json", "report.json")) -> None:
    """Edit `model.<key>` in the run's config (config.json, and the config inside report.json)."""
    for name in files:
        path = run_dir / name
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        (data["config"] if name == "report.json" else data)["model"][key] = value
        path.write_text(json.dumps(data))


# --- 2: a run directory cannot make load, select, curves, serve or resume run code ---

EVIL = "from pathlib import Path\nPath('pwned').write_text('ran')\n"


@pytest.mark.slow
def test_a_run_naming_a_module_does_not_import_it_unless_trusted(saved_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(saved_run, run)
    set_recorded(run, "autoencoder", "evil:Evil")
    (tmp_path / "evil.py").write_text(EVIL)  # in the current directory: importable by name
    loaded = python("import ensemble\ntry:\n    ensemble.load('run')\nexcept ensemble.InputError as err:\n"
                    "    print(err)\n", cwd=tmp_path)
    assert "'evil'" in said(loaded) and "trust_code=True" in said(loaded), loaded.stdout + loaded.stderr
    for command in (["select", "run", "--set", "eager.epoch=1"], ["curves", "run"], ["serve", "run"]):
        done = cli(*command, cwd=tmp_path)
        assert done.returncode == 2 and "--trust-code" in said(done) and "'evil'" in said(done), done.stderr
    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    shutil.copy(run / "config.json", interrupted / "config.json")
    done = cli("run", "--resume", str(interrupted), cwd=tmp_path)
    assert done.returncode == 2 and "--trust-code" in said(done), done.stderr
    assert not (tmp_path / "pwned").exists()  # nothing ran
    trusted = cli("select", "run", "--set", "eager.epoch=1", "--trust-code", cwd=tmp_path)
    assert (tmp_path / "pwned").exists() and "evil:Evil" in said(trusted)  # imported when asked (it has no Evil)


# --- 3: any name the file system takes runs; a name it cannot take is exit 2 with the reason ---

TINY_OPTIONS = ["members=2", "train.epochs=1", "data.name=digits", "data.train_size=150", "data.val_size=60",
                "data.test_size=150", "model.channels=[4, 8]", "baseline.enabled=false"]


def sets(options) -> list[str]:
    return [a for o in options for a in ("--set", o)]


TINY_SETS = sets(TINY_OPTIONS)


@pytest.mark.slow
def test_a_non_ascii_run_name_trains_to_the_end(ray_instance, tmp_path):
    auto_sizes = sets(o for o in TINY_OPTIONS if not o.startswith(("data.train_size", "data.val_size", "data.test_")))
    done = cli("run", "--output", str(tmp_path), "--name", "ü-läuft", *auto_sizes, "--quiet", cwd=tmp_path,
               join=ray_instance)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "ü-läuft" / "report.json").is_file()
    assert "UnicodeEncodeError" not in done.stdout + done.stderr
    said_lines = (done.stdout + done.stderr).splitlines()  # the notice is logged (stderr) since logging came
    notice = [line for line in said_lines if "too few for the default split sizes" in line]
    assert notice and all(len(line) <= 120 for line in notice), notice  # point 8: the README's 120 columns


@pytest.mark.parametrize("how, reason", [
    (["--name", "x" * 300], "300 bytes in UTF-8; a directory name may have at most 255"),
    (["--name", "ü" * 128], "256 bytes in UTF-8"),
    (["--config", "nul.json"], "must not contain a NUL character"),
    (["--name", "taken"], "a file named"),
])
def test_a_name_no_file_system_takes_exits_2_with_the_reason(tmp_path, how, reason):
    (tmp_path / "nul.json").write_text(json.dumps({"name": "a\0b"}))
    (tmp_path / "taken").write_text("a file, not a run")
    done = cli("run", "--output", str(tmp_path), *how, *TINY_SETS, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and reason in said(done), done.stderr
    assert "Traceback" not in done.stderr and "same command again" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nul.json", "taken"]  # nothing written


# --- 4: SIGTERM stops `ensemble serve` as Ctrl-C does ---

@pytest.mark.slow
def test_sigterm_stops_the_server_cleanly_and_every_ray_process_it_started(saved_run, tmp_path):
    import psutil
    import requests

    from tests.conftest import free_port
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    process = subprocess.Popen([sys.executable, "-m", "ensemble", "serve", str(saved_run), "--port", str(port),
                                "--cpus-per-replica", "0.5"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env, start_new_session=True)
    output = []
    try:
        while not any("Serving run 'saved' at http://127.0.0.1:" in line for line in output):
            line = process.stdout.readline()
            assert line, "".join(output)  # the server exited before it was ready
            output.append(line)
        started = psutil.Process(process.pid).children(recursive=True)  # Ray's processes and the replica
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        deep = requests.post(f"http://127.0.0.1:{port}/predict", data=b'{"images": ' + b"[" * 100_000 + b"]" * 100_000
                             + b"}", headers={"Content-Type": "application/json"}, timeout=30)
        assert deep.status_code == 400 and "nested too deeply" in deep.text, deep.text  # not a 500
        card = requests.get(f"http://127.0.0.1:{port}/", timeout=10).text
        assert json.loads(card)["run"] == "saved" and str(saved_run) not in card  # its name, not where it lives
        process.send_signal(signal.SIGTERM)  # `kill PID`, a container runtime, `ray job stop`: the process only
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    output.append(rest)
    assert process.returncode == 0 and "Stopped" in rest, "".join(output)
    assert "Traceback" not in "".join(output)
    _, alive = psutil.wait_procs(started, timeout=10)
    assert alive == [], [p.cmdline() for p in alive]


# --- 5: advice that does not loop ---

def interrupted_run(tmp_path: Path, overrides=(), name="job") -> Path:
    """A run directory as an interrupted run leaves it: config.json, and member_00's first checkpoint."""
    import torch

    from ensemble.builders import cae_factory
    from ensemble.config import build_config
    from ensemble.runs.rundir import write_config
    from workers.checkpoints import save_checkpoint
    run_dir = tmp_path / name
    run_dir.mkdir()
    config = build_config({}, TINY_OPTIONS + list(overrides)
                          + [f"output={tmp_path}", f"name={name}"])
    write_config(run_dir, config)
    weights = cae_factory(config, (1, 8, 8))().state_dict()
    save_checkpoint(run_dir / "member_00", 1, weights, {"step": torch.tensor(1)}, {})
    return run_dir


@pytest.mark.slow
def test_every_member_diverging_points_to_a_new_run_not_to_resume(ray_instance, tmp_path):
    done = cli("run", "--output", str(tmp_path), "--name", "nan", *TINY_SETS, "--set", "train.lr=1e12",
               "--set", "train.optimizer=sgd", "--set", "eager.rule=none", "--quiet", cwd=tmp_path, join=ray_instance)
    assert done.returncode == 1, done.stderr
    assert "start a new run with a lower rate, e.g. --set train.lr=1e+11" in said(done), done.stderr
    assert "Continue it with" not in said(done) and "Traceback" not in done.stderr


def test_resuming_after_the_model_settings_changed_exits_2_naming_the_parameters(tmp_path):
    run_dir = interrupted_run(tmp_path)
    config = json.loads((run_dir / "config.json").read_text())
    config["model"]["channels"] = [6, 8]  # edited after the run started
    (run_dir / "config.json").write_text(json.dumps(config))
    done = cli("run", "--resume", str(run_dir), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "config.json' does not fit the run's checkpoints: member_00/checkpoint_000001" in said(done)
    assert "of another shape: encoder.0.weight (saved (4, 1, 5, 5), model (6, 1, 5, 5))" in said(done), done.stderr
    assert "Traceback" not in done.stderr and "--resume" not in said(done).split("checkpoint_000001", 1)[1]


def test_resume_if_exists_refuses_set_values_the_run_does_not_have(tmp_path):
    interrupted_run(tmp_path, ["train.lr=0.001"])
    done = cli("run", "--output", str(tmp_path), "--name", "job", "--resume-if-exists", *TINY_SETS,
               "--set", "train.lr=0.5", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "train.lr=0.5 (the run has 0.001)" in said(done) and "Traceback" not in done.stderr
    assert not (tmp_path / "job" / "member_01").exists()  # nothing trained


# --- 6: damaged inputs are exit 2 naming the file, not exit 1 with a traceback ---

def npz_bytes(tmp_path: Path) -> bytes:
    import numpy as np
    np.savez(tmp_path / "good.npz", x=np.zeros((20, 8, 8)), y=np.arange(20) % 2)
    return (tmp_path / "good.npz").read_bytes()


@pytest.mark.parametrize("damage", ["truncated", "garbage after a zip header"])
def test_a_damaged_npz_exits_2_naming_it(tmp_path, damage):
    data = npz_bytes(tmp_path)
    (tmp_path / "bad.npz").write_bytes(data[:len(data) // 2] if damage == "truncated"
                                       else b"PK\x03\x04" + os.urandom(500))
    done = cli("run", "--output", str(tmp_path / "runs"), "--set", "data.name=npz", "--set",
               f"data.root={tmp_path / 'bad.npz'}", cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and "bad.npz" in said(done), done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("text, problem", [('{"members": 2, "train": {"ep', "is not valid JSON"),
                                           ("[1, 2, 3]", "not a list"),
                                           ('{"members": 2, "bogus": 1}', "unknown config key 'bogus'")])
def test_a_damaged_config_json_on_resume_exits_2_naming_it(tmp_path, text, problem):
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "config.json").write_text(text)
    done = cli("run", "--resume", str(tmp_path / "job"), cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and f"{tmp_path / 'job' / 'config.json'}'" in said(done), done.stderr
    assert problem in said(done) and "Traceback" not in done.stderr and "same command again" not in said(done)


def test_an_output_through_a_dangling_symlink_exits_2_naming_the_link(tmp_path):
    (tmp_path / "runs").symlink_to(tmp_path / "gone")
    done = cli("run", "--output", str(tmp_path / "runs"), "--name", "x", *TINY_SETS, cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"symbolic link '{tmp_path / 'runs'}', which points at '{tmp_path / 'gone'}', which does not exist" \
        in said(done)


@pytest.mark.slow
def test_damaged_weights_and_a_report_with_an_unknown_key_exit_2_naming_the_file(saved_run, tmp_path):
    import hashlib
    run = tmp_path / "run"
    shutil.copytree(saved_run, run)
    report = json.loads((run / "report.json").read_text())
    chosen = run / "member_00" / f"checkpoint_{report['members'][0]['selected_epoch']:06d}"
    (chosen / "model.safetensors").write_bytes(os.urandom(4096))
    manifest = json.loads((chosen / "manifest.json").read_text())  # re-hashed: the bytes pass the checksum
    manifest["files"]["model.safetensors"] = hashlib.sha256((chosen / "model.safetensors").read_bytes()).hexdigest()
    (chosen / "manifest.json").write_text(json.dumps(manifest))
    loaded = python("import ensemble\ntry:\n    ensemble.load('run')\nexcept ensemble.InputError as err:\n"
                    "    print('InputError:', err)\n", cwd=tmp_path)
    assert "InputError:" in loaded.stdout and chosen.name in loaded.stdout, loaded.stdout + loaded.stderr
    epoch = report["members"][0]["selected_epoch"]
    for command in (["select", "run", "--set", f"eager.epoch={epoch}"], ["serve", "run"]):
        done = cli(*command, cwd=tmp_path)
        assert done.returncode == 2 and chosen.name in said(done) and "Traceback" not in done.stderr, done.stderr
    shutil.rmtree(run)
    shutil.copytree(saved_run, run)
    report["config"]["bogus_key"] = 1
    (run / "report.json").write_text(json.dumps(report))
    done = cli("select", "run", "--set", "eager.epoch=1", cwd=tmp_path)
    assert done.returncode == 2 and "unknown config key 'bogus_key'" in said(done), done.stderr
    assert "report.json" in said(done)


# --- 7: resource limits on untrusted input ---

def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]  # 10^9 values written out
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    (tmp_path / "loop.yaml").write_text("members: &m [1, *m]\n")
    (tmp_path / "huge.yaml").write_text("# padding\n" * 200_000 + "members: 2\n")
    for name, reason in [("bomb.yaml", "more than 100,000 values once its aliases"),
                         ("loop.yaml", "recursive structure"), ("huge.yaml", "more than a config can be")]:
        done = cli("run", "--config", str(tmp_path / name), cwd=tmp_path, timeout=60)  # was 25 s to MemoryError
        assert done.returncode == 2 and reason in said(done) and name in said(done), done.stderr
        assert "Traceback" not in done.stderr


def test_nan_labels_are_an_input_error(tmp_path):
    import numpy as np
    labels = (np.arange(200) % 2).astype(float)
    labels[[3, 50]] = np.nan
    np.savez(tmp_path / "nan.npz", x=np.random.default_rng(0).random((200, 8, 8)), y=labels)
    done = cli("run", "--output", str(tmp_path / "runs"), "--set", "data.name=npz", "--set",
               f"data.root={tmp_path / 'nan.npz'}", cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and "2 of 200 labels are missing (NaN or None)" in said(done), done.stderr
    assert "nan.npz" in said(done) and not (tmp_path / "runs").exists()


# --- issue 31, point 3: bounds before work ---

def test_images_over_data_max_pixels_are_refused_from_the_npz_header_within_seconds(tmp_path):
    import time

    import numpy as np
    np.savez_compressed(tmp_path / "huge.npz", x=np.zeros((2, 2048, 2048), dtype=np.uint8), y=np.arange(2))
    started = time.monotonic()
    done = cli("run", "--output", str(tmp_path / "runs"), "--set", "data.name=npz", "--set",
               f"data.root={tmp_path / 'huge.npz'}", cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and "huge.npz" in said(done) and "data.max_pixels=1,048,576" in said(done), \
        done.stderr
    assert "2048 x 2048 = 4,194,304 pixels" in said(done) and "Traceback" not in done.stderr
    assert time.monotonic() - started < 60 and not (tmp_path / "runs").exists()


def test_a_custom_dataset_over_max_pixels_is_refused_before_conversion():
    import numpy as np

    from ensemble.config import DataConfig
    from ensemble.data.splits import load_splits
    from workers.errors import InputError
    images = np.zeros((4, 1, 40, 30), dtype=np.int64)  # int64: would be converted to float32
    with pytest.raises(InputError, match=r"the custom dataset: its images are 40 x 30 = 1,200 pixels each, more "
                                         r"than data.max_pixels=1,000"):
        load_splits(DataConfig(max_pixels=1000), 0, dataset=(images, np.arange(4) % 2))


def test_a_dataset_larger_than_free_memory_is_refused_before_conversion(monkeypatch):
    from ensemble.config import DataConfig
    from ensemble.data import bounds
    from ensemble.data.splits import load_splits
    from workers.errors import InputError
    monkeypatch.setattr(bounds, "available_memory", lambda: 100 * 1024)
    with pytest.raises(InputError, match=r"digits .*1,797 images of 1 x 8 x 8 need 0.0 GiB as float32, more than "
                                         r"the 0.0 GiB of memory free"):
        load_splits(DataConfig(name="digits"), 0)
    monkeypatch.undo()
    assert bounds.available_memory() > 0  # the real one reads /proc/meminfo (or sysconf)


@pytest.mark.parametrize("case, sets, named", [
    ("missing data.root", ["data.name=npz", "data.root={tmp}/nothing.npz"], "nothing.npz' does not exist"),
    ("garbage npz", ["data.name=npz", "data.root={tmp}/garbage.npz"], "garbage.npz' is not a readable .npz"),
    ("a member no node can hold", ["data.name=digits", "resources.cpus_per_member=100"],
     "resources.cpus_per_member"),
])
def test_dry_run_exits_2_for_what_it_can_check_without_ray(tmp_path, case, sets, named):
    (tmp_path / "garbage.npz").write_bytes(os.urandom(300))
    arguments = [part for value in sets for part in ("--set", value.format(tmp=tmp_path))]
    done = cli("run", "--dry-run", *arguments, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and named in said(done), done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "# Plan" not in done.stdout


# --- issue 31, point 4: connecting ---

@pytest.mark.parametrize("how, address, named", [
    ("--address", "127.0.0.1:1", "cannot connect to the Ray cluster at '127.0.0.1:1': Connection refused"),
    ("RAY_ADDRESS", "notahost:99999", "the Ray address 'notahost:99999' has the port '99999'"),
    ("--address", "x:y:z", "the Ray address 'x:y:z' is not HOST:PORT"),
])
def test_an_unreachable_or_malformed_address_exits_2_naming_it_within_seconds(tmp_path, how, address, named):
    import re
    import time
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": address} if how == "RAY_ADDRESS" else None
    argv = ["run", "--output", str(tmp_path / "runs")] + (["--address", address] if how == "--address" else [])
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "ensemble", *argv], cwd=tmp_path, capture_output=True, text=True,
                          env=env or {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
                                      "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == 2 and named in said(done), done.stdout + done.stderr
    assert time.monotonic() - started < 60 and "Traceback" not in done.stderr
    assert "same command again" not in said(done) and not (tmp_path / "runs").exists()
    dialled = set(re.findall(r"\b\d+\.\d+\.\d+\.\d+:\d+", said(done)))
    assert dialled <= {address}, dialled  # no address but the one given


def test_ctrl_c_while_connecting_stops_at_once(tmp_path):
    import signal
    import socket
    import time
    with socket.socket() as silent:  # accepts the connection, never answers: the probe would wait 10 s
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        process = subprocess.Popen([sys.executable, "-m", "ensemble", "run", "--address",
                                    f"127.0.0.1:{silent.getsockname()[1]}"], cwd=tmp_path, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)})
        connection, _ = silent.accept()
        interrupted = time.monotonic()
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        output, _ = process.communicate(timeout=60)
        connection.close()
    assert time.monotonic() - interrupted < 9 and "nothing answered" not in output, output
    assert process.returncode == 130 and "interrupted (Ctrl-C)" in output and "Traceback" not in output


def test_a_server_that_is_not_ray_is_named_and_a_dry_run_only_parses_the_address(tmp_path, capsys):
    import socket
    import threading

    from ensemble.cli import main
    from ensemble.scheduling.address import check_address
    from workers.errors import InputError
    with socket.socket() as web:
        web.bind(("127.0.0.1", 0))
        web.listen(1)

        def answer_http():
            connection, _ = web.accept()
            connection.recv(100)
            connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            connection.close()

        threading.Thread(target=answer_http, daemon=True).start()
        with pytest.raises(InputError, match="a server answers there, but not Ray's"):
            check_address(f"127.0.0.1:{web.getsockname()[1]}")
    assert main(["run", "--dry-run", "--address", "x:y:z", "--set", "data.name=digits"]) == 2
    assert "the Ray address 'x:y:z' is not HOST:PORT" in capsys.readouterr().err


@pytest.mark.slow
def test_a_running_ray_instance_passes_the_address_check(ray_instance):
    from ensemble.scheduling.address import check_address
    check_address(ray_instance.get_runtime_context().gcs_address)  # a real GCS answers the gRPC greeting


@pytest.mark.parametrize("address, host, port", [("10.0.0.5:6379", "10.0.0.5", 6379),
                                                 ("ray://head:10001", "head", 10001),
                                                 ("[::1]:6379", "::1", 6379), ("auto", None, None)])
def test_addresses_ray_takes_parse(address, host, port):
    from ensemble.scheduling.address import parse_address
    endpoint = parse_address(address)
    assert (endpoint.host, endpoint.port) == (host, port) if host else endpoint is None


# --- issue 31, point 6: every setting honoured or refused ---

@pytest.mark.parametrize("name, text", [("twice.yaml", "members: 2\ntrain:\n  epochs: 1\nmembers: 3\n"),
                                        ("nested.yaml", "train:\n  epochs: 1\n  lr: 0.1\n  epochs: 2\n"),
                                        ("twice.json", '{"members": 2, "members": 3}')])
def test_a_key_given_twice_in_a_config_file_exits_2_naming_key_and_file(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    done = cli("run", "--dry-run", "--config", str(tmp_path / name), cwd=tmp_path, timeout=120)
    key = "epochs" if name == "nested.yaml" else "members"
    assert done.returncode == 2 and f"it sets the key '{key}' twice" in said(done), done.stdout + done.stderr
    assert name in said(done) and "Traceback" not in done.stderr
    if name == "twice.yaml":
        assert "(lines 1 and 4)" in said(done)


def test_overrides_a_custom_class_would_ignore_exit_2_naming_the_key(tmp_path):
    done = cli("run", "--dry-run", "--set", "data.name=digits", "--set", "model.autoencoder=tests.tiny:TinyAE",
               "--set", "model.overrides=[{channels: [4, 8]}, {}]", "--set", "members=2", cwd=ROOT, timeout=120)
    assert done.returncode == 2 and "model.overrides[0].channels cannot apply" in said(done), done.stderr
    assert "tests.tiny:TinyAE" in said(done) and "Traceback" not in done.stderr


def test_data_keys_that_cannot_apply_exit_2_and_the_dry_run_shows_only_keys_that_would_run(tmp_path):
    done = cli("run", "--dry-run", "--set", "data.name=digits", "--set", "data.root=/data/x.npz", cwd=tmp_path,
               timeout=120)
    assert done.returncode == 2 and "'data.root'" in said(done) and "data.name=digits is embedded" in said(done)
    done = cli("run", "--dry-run", "--set", "data.name=npz", "--set", "data.download=true", cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and "data.download applies to mnist and cifar10 only" in said(done)
    done = cli("run", "--dry-run", "--set", "data.name=digits", "--set", "model.autoencoder=tests.tiny:TinyAE",
               cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    resolved = done.stdout.split("# Plan")[0]
    assert "autoencoder: tests.tiny:TinyAE" in resolved
    assert "\n  channels:" not in resolved and "\n  kernel_size:" not in resolved

# --- issue 31: advice that never loops or unpickles; a run's identity checked on every read ---

UNPICKLING_ADVICE = ("allow_pickle", "pickle.load", "weights_only", "unsafe", "if you trust")


def test_a_random_bytes_npz_exits_2_naming_it_without_advising_unpickling(tmp_path):
    """numpy takes random bytes for a pickle and advised `allow_pickle=`: never for a file we refused."""
    (tmp_path / "random.npz").write_bytes(os.urandom(3000))
    done = cli("run", "--output", str(tmp_path / "runs"), "--set", "data.name=npz", "--set",
               f"data.root={tmp_path / 'random.npz'}", cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and "random.npz" in said(done) and "Traceback" not in done.stderr, done.stderr
    assert not any(advice in said(done).lower() for advice in UNPICKLING_ADVICE), said(done)
    assert "same command again" not in said(done)


def copied(saved_run: Path, tmp_path: Path) -> tuple[Path, dict]:
    run = tmp_path / "run"
    shutil.copytree(saved_run, run)
    return run, json.loads((run / "report.json").read_text())


def load_error(run: Path) -> str:
    """What `ensemble.load(run)` says (an InputError's text, else "loaded"; anything else fails the test),
    in this process: loading imports no code from the run, so a fresh process would show the same at
    about 5 CPU-seconds each (the module-import tests above start one where it matters)."""
    import ensemble
    try:
        ensemble.load(run)
    except ensemble.InputError as err:
        return " ".join(f"InputError: {err}".split())
    return "loaded"


def swap(a: Path, b: Path) -> None:
    held = a.with_name(a.name + ".held")
    a.rename(held)
    b.rename(a)
    held.rename(b)


@pytest.mark.slow
def test_swapped_member_directories_are_refused_by_every_reader(saved_run, tmp_path):
    """Issue 31: load predicted at 0.10 accuracy instead of refusing; select, curves, labels and serve too."""
    run, report = copied(saved_run, tmp_path)
    swap(run / "member_00", run / "member_01")
    text = load_error(run)
    assert "InputError:" in text and "member 'member_01'" in text and "member 'member_00'" in text, text
    epoch = report["members"][0]["selected_epoch"]
    for command in (["select", "run", "--set", f"eager.epoch={epoch}"], ["curves", "run"],
                    ["labels", "run", "--per-class", "1", "--draws", "1"], ["serve", "run"]):
        done = cli(*command, cwd=tmp_path)
        assert done.returncode == 2 and "member 'member_01'" in said(done), (command, done.stderr)
        assert "Traceback" not in done.stderr
    assert not (run / "selections").exists() and not (run / "labels.json").exists()


@pytest.mark.slow
def test_a_checkpoint_renamed_to_another_epoch_or_from_another_run_is_refused(saved_run, tmp_path):
    run, report = copied(saved_run, tmp_path)
    selected = report["members"][0]["selected_epoch"]
    other = 1 if selected != 1 else 2
    swap(run / "member_00" / f"checkpoint_{selected:06d}", run / "member_00" / f"checkpoint_{other:06d}")
    text = load_error(run)
    assert f"records epoch {other}, but it is read as epoch {selected}" in text, text
    swap(run / "member_00" / f"checkpoint_{selected:06d}", run / "member_00" / f"checkpoint_{other:06d}")
    assert "loaded" in load_error(run)
    manifest_path = run / "member_00" / f"checkpoint_{selected:06d}" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())  # the same bytes, as another run of this model wrote them
    manifest["run_id"] = "0" * 32
    manifest_path.write_text(json.dumps(manifest))
    text = load_error(run)
    assert f"run id {'0' * 32!r}" in text and f"run id {report['run_id']!r}" in text, text
    config = json.loads((run / "config.json").read_text())
    assert config["run_id"] == report["run_id"]  # written once, in both


@pytest.mark.slow
@pytest.mark.parametrize("edit, problem", [
    (lambda r: r["members"][0].update(name="../other/member_00"), "names member 0 '../other/member_00'"),
    (lambda r: r["members"][0].update(name="member_01"), "names member 0 'member_01'"),
    (lambda r: r["ensemble"].update(members_used=[0, 0, 5]), "members_used=[0, 0, 5]: [5] is not once each"),
    (lambda r: r["ensemble"].update(members_used=[1, 1]), "[1] is not once each"),
], ids=["outside the run", "another member's name", "duplicates and out of range", "duplicates"])
def test_report_member_names_and_members_used_are_checked(saved_run, tmp_path, edit, problem):
    run, report = copied(saved_run, tmp_path)
    edit(report)
    (run / "report.json").write_text(json.dumps(report))
    text = load_error(run)
    assert "InputError:" in text and problem in text and "report.json" in text, text
    done = cli("curves", "run", cwd=tmp_path)
    assert done.returncode == 2 and problem in said(done) and "Traceback" not in done.stderr, done.stderr


@pytest.mark.slow
def test_a_run_from_before_run_ids_still_loads_with_the_epoch_check(saved_run, tmp_path):
    run, report = copied(saved_run, tmp_path)
    for name in ("report.json", "config.json"):
        data = json.loads((run / name).read_text())
        del data["run_id"]
        (run / name).write_text(json.dumps(data))
    for manifest_path in run.glob("*/checkpoint_*/manifest.json"):
        manifest = json.loads(manifest_path.read_text())
        for key in ("member", "run_id", "architecture"):
            del manifest[key]
        manifest_path.write_text(json.dumps(manifest))
    assert "loaded" in load_error(run)
    selected = report["members"][1]["selected_epoch"]
    swap(run / "member_01" / f"checkpoint_{selected:06d}", run / "member_01" / "checkpoint_000000")
    assert "InputError:" in load_error(run) and "records epoch 0" in load_error(run)


@pytest.mark.slow
@pytest.mark.parametrize("scale", ["0", "NaN", "-1"])
def test_a_normalization_scale_of_zero_or_nan_names_the_file(saved_run, tmp_path, scale):
    """It was "features contain NaN" from scikit-learn, naming nothing."""
    run, _ = copied(saved_run, tmp_path)
    normalization = json.loads((run / "normalization.json").read_text())
    (run / "normalization.json").write_text(f'{{"shift": {json.dumps(normalization["shift"])}, "scale": [{scale}]}}')
    text = load_error(run)
    assert "InputError:" in text and "normalization.json" in text and "'scale' must hold finite numbers" in text, text


@pytest.mark.slow
def test_resume_refuses_member_directories_swapped_before_ray_starts(saved_run, tmp_path):
    """An interrupted run whose member directories were swapped: --resume exits 2 naming both."""
    run, _ = copied(saved_run, tmp_path)
    for name in ("report.json", "report.md", "member_00/outcome.json", "member_01/outcome.json"):
        (run / name).unlink(missing_ok=True)
    swap(run / "member_00", run / "member_01")
    done = cli("run", "--resume", str(run), cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "member 'member_01', but it is read as" in said(done) and "member 'member_00'" in said(done)
