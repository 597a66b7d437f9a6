"""`ensemble serve` with real HTTP clients against a server on 127.0.0.1, on a real tiny run.

Two servers for the module, each with one replica of 0.5 CPU: `ensemble.serve` in the session's Ray
instance (requests through Ray Serve's HTTP proxy) and the `ensemble serve` command in a process of
its own, which starts its own Ray (the replica answers HTTP itself). The HTTP tests run against both;
every bad request is followed by a good one, which must still succeed.
"""

import io
import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import pytest
import requests
import yaml

import ensemble
from ensemble.bench.serving import listening_role
from ensemble.config import build_config
from ensemble.serving import application as serving  # needs the serve extra, which the test extra includes
from tests.tiny import TINY

BODY_LIMIT = 256 * 1024


free_port = serving.free_port


def digits(count: int, start: int = 0) -> np.ndarray:
    """Raw 8x8 digits in the dataset's own pixel scale (0..16), N x H x W."""
    from sklearn.datasets import load_digits
    return load_digits().images[start:start + count].astype(np.float32)


def npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def trained(ray_instance, tmp_path_factory):
    output = tmp_path_factory.mktemp("serve-runs")
    ensemble.run(build_config({}, TINY + ["baseline.enabled=false", f"output={output}", "name=served"]),
                 on_event=lambda event: None)
    return output / "served"


@pytest.fixture(scope="module")
def server(trained):
    """(base URL, deployment handle, the run as ensemble.load rebuilds it)."""
    from ray import serve
    port = free_port()
    handle = ensemble.serve(trained, port=port, cpus_per_replica=0.5, max_body_bytes=BODY_LIMIT)
    yield f"http://127.0.0.1:{port}", handle, ensemble.load(trained)
    serve.shutdown()


def serve_command(run, port: int, *options: str, env: dict = None) -> tuple[subprocess.Popen, list[str]]:
    """`ensemble serve RUN --port PORT --cpus-per-replica 0.5 OPTIONS` in a session of its own, as a user
    starts it (no RAY_ADDRESS), once it says it serves; and what it printed so far."""
    env = {**{key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}, **(env or {})}
    process = subprocess.Popen([sys.executable, "-m", "ensemble", "serve", str(run), "--port", str(port),
                                "--cpus-per-replica", "0.5", *options], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    output: list[str] = []
    while not any(f"Serving run '{run.name}' at http://127.0.0.1:{port}/" in line for line in output):
        line = process.stdout.readline()
        if not line:  # the server exited before it was ready
            process.wait(timeout=30)
            pytest.fail("".join(output))
        output.append(line)
    return process, output


def stop(process: subprocess.Popen) -> str:
    """Ctrl-C as a terminal sends it (to the whole process group); the rest of what the command printed."""
    try:
        os.killpg(process.pid, signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    return rest


@pytest.fixture(scope="module")
def command_server(trained):
    """(base URL, None, the run): the command's server, its replica answering HTTP itself."""
    port = free_port()
    process, _ = serve_command(trained, port, "--max-body-mib", str(BODY_LIMIT / 2**20))
    try:
        assert listening_role(port) == "replica"
        yield f"http://127.0.0.1:{port}", None, ensemble.load(trained)
    finally:
        stop(process)


@pytest.fixture(scope="module", params=["server", "command_server"])
def http_server(request):
    """Each server in turn: through Serve's proxy, and the replica's own HTTP."""
    return request.getfixturevalue(request.param)


def post(url: str, body: bytes, content_type="application/json", **kwargs) -> requests.Response:
    return requests.post(f"{url}/predict", data=body, headers={"Content-Type": content_type}, timeout=30, **kwargs)


def assert_good_request_succeeds(url: str, loaded) -> None:
    images = digits(3, start=100)
    answer = post(url, json.dumps({"images": images.tolist()}).encode())
    assert answer.status_code == 200, answer.text
    assert answer.json()["labels"] == loaded.predict(images).tolist()


@pytest.mark.slow
def test_http_predictions_equal_load_predict(http_server):
    url, _, loaded = http_server
    images = digits(64)
    expected = loaded.predict(images)
    by_json = post(url, json.dumps({"images": images.tolist()}).encode())
    by_npy = post(url, npy(images[:, np.newaxis]), "application/octet-stream")
    for answer in (by_json, by_npy):
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["labels"] == expected.tolist() and body["classes"] == loaded.classes.tolist()
        np.testing.assert_allclose(body["probabilities"], loaded.predict_proba(images), rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_concurrent_clients_are_batched_and_each_gets_its_own_answer(http_server):
    url, _, loaded = http_server
    sizes = [1, 7, 64, 3, 30, 2, 16, 5] * 4
    starts = np.cumsum([0] + sizes[:-1]) % 1500

    def client(request: int):
        images = digits(sizes[request], int(starts[request]))
        answer = post(url, npy(images), "application/octet-stream")
        return answer.status_code, answer.json().get("labels"), loaded.predict(images).tolist()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(client, range(len(sizes))))
    assert all(status == 200 and got == expected for status, got, expected in results)


@pytest.mark.slow
def test_healthz_and_the_model_card(http_server, trained):
    url, _, loaded = http_server
    assert requests.get(f"{url}/healthz", timeout=10).json() == {"status": "ok"}
    card = requests.get(f"{url}/", timeout=10).json()
    report = loaded.report
    assert card["test_accuracy"] == report.ensemble.test_accuracy and card["verdict"] == report.verdict
    assert card["untrained_encoders_test_accuracy"] == report.ensemble.untrained_test_accuracy
    assert card["members"] == 2 and card["dataset"]["image_shape"] == [1, 8, 8] and card["run"] == trained.name
    assert card["memory_format"] in ("contiguous", "channels_last")  # the layout the replica encodes in


def chunks(data: bytes, size: int = 16384):
    for start in range(0, len(data), size):
        yield data[start:start + size]


BAD_REQUESTS = {  # name: (content type, body, status, what the one-line error names)
    "wrong shape": ("application/json", {"images": np.zeros((2, 7, 8)).tolist()}, 400, "wrong image shape"),
    "wrong channels": ("application/octet-stream", np.zeros((2, 3, 8, 8)), 400, "wrong channel count"),
    "NaN pixel": ("application/json", {"images": [[[float("nan")] * 8] * 8]}, 400, "NaN or inf"),
    "inf pixel": ("application/octet-stream", np.full((1, 8, 8), np.inf), 400, "NaN or inf"),
    "empty batch": ("application/json", {"images": []}, 400, "empty batch"),
    "empty npy batch": ("application/octet-stream", np.zeros((0, 8, 8)), 400, "empty batch"),
    "malformed JSON": ("application/json", b'{"images": [[1, 2', 400, "malformed JSON"),
    "no images key": ("application/json", {"pixels": [1]}, 400, '"images" key'),
    "not a .npy": ("application/octet-stream", b"\x93NUMPY garbage", 400, ".npy"),
    "wrong content type": ("text/plain", b"1 2 3", 400, "unsupported Content-Type 'text/plain'"),
    "over the limit": ("application/octet-stream", np.zeros((BODY_LIMIT // 256, 8, 8)), 413, "over the server's limit"),
}


def encoded(body) -> bytes:
    if isinstance(body, np.ndarray):
        return npy(body)
    return body if isinstance(body, bytes) else json.dumps(body).encode()  # json.dumps writes NaN as NaN


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_request_is_refused_in_one_line_and_the_next_good_one_succeeds(http_server, name):
    url, _, loaded = http_server
    content_type, body, status, message = BAD_REQUESTS[name]
    answer = post(url, encoded(body), content_type)
    assert answer.status_code == status, answer.text
    assert list(answer.json()) == ["error"] and message in answer.json()["error"]
    assert "\n" not in answer.text
    assert_good_request_succeeds(url, loaded)


@pytest.mark.slow
def test_a_request_whose_features_overflow_is_its_own_400_and_never_fails_its_batch_mates(http_server):
    """Finite pixels of 3e38 pass the input check, but overflow the encoders' features: that request's
    400 only. 1 poisoned + 15 good requests at once, a few rounds, so they share batches."""
    import threading
    url, _, loaded = http_server
    good = digits(4, start=200)
    expected = loaded.predict(good).tolist()
    poisoned = digits(2, start=300)
    poisoned[1] = 3e38
    def client(index: int, poisoned_index: int, start: threading.Barrier):
        images = poisoned if index == poisoned_index else good
        start.wait(timeout=30)
        return index, post(url, npy(images), "application/octet-stream")

    for round_ in range(4):
        start = threading.Barrier(16)
        with ThreadPoolExecutor(16) as pool:
            answers = dict(pool.map(client, range(16), [5 + round_] * 16, [start] * 16))
        bad = answers.pop(5 + round_)
        assert bad.status_code == 400 and "NaN or inf" in bad.json()["error"], bad.text
        assert {index: a.status_code for index, a in answers.items() if a.status_code != 200} == {}
        assert all(a.json()["labels"] == expected for a in answers.values())


@pytest.mark.slow
def test_streamed_body_over_the_limit_is_413_without_a_content_length(http_server):
    url, _, loaded = http_server
    answer = post(url, chunks(npy(np.zeros((BODY_LIMIT // 256, 8, 8)))), "application/octet-stream")  # chunked
    assert answer.status_code == 413 and "over the server's limit" in answer.json()["error"]
    assert_good_request_succeeds(url, loaded)


@pytest.mark.slow
def test_the_handle_answers_like_http_and_refuses_bad_input(server):
    _, handle, loaded = server
    images = digits(5)
    assert handle.classify.remote(images).result()["labels"] == loaded.predict(images).tolist()
    with pytest.raises(ensemble.InputError, match="wrong channel count"):
        handle.classify.remote(np.zeros((1, 2, 8, 8))).result()


@pytest.mark.slow
def test_a_run_on_an_object_store_is_downloaded_loaded_and_the_copy_removed(trained, bucket):
    import tempfile
    from pathlib import Path

    from ensemble.storage import Mirror, join_uri
    _, output = bucket
    uri = join_uri(output, "served")
    Mirror(uri, local=trained).push(final=True)  # the run, uploaded as `ensemble run --output s3://...` leaves it
    copies_before = set(Path(tempfile.gettempdir()).glob("ensemble-serve-*"))
    loaded = serving.load_for_serving(uri)
    images = digits(20)
    assert loaded.predict(images).tolist() == ensemble.load(trained).predict(images).tolist()
    assert set(Path(tempfile.gettempdir()).glob("ensemble-serve-*")) == copies_before
    assert serving.read_report(uri).name == "served"
    with pytest.raises(ensemble.InputError, match="not a finished run"):
        serving.read_report(join_uri(output, "nothing-here"))


def test_replicas_take_the_run_gpu_share_unless_told_otherwise():
    from types import SimpleNamespace

    from ensemble.config import EnsembleConfig
    config = EnsembleConfig().with_overrides(["resources.gpus_per_member=0.25"]).model_dump(mode="json")
    report = SimpleNamespace(config=config)
    assert serving.replica_resources(serving.serve_options(run_dir="r"), report) == (1.0, 0.25)
    on_cpus = serving.serve_options(run_dir="r", gpus_per_replica=0, cpus_per_replica=2)
    assert serving.replica_resources(on_cpus, report) == (2.0, 0)


@pytest.mark.slow
def test_a_replica_no_node_can_hold_is_refused_instead_of_waiting(ray_instance):
    with pytest.raises(ensemble.InputError, match="--gpus-per-replica"):
        serving.check_fits(0.5, 0.25)  # this Ray instance has no GPU
    serving.check_fits(0.5, 0)


# --- the command line --------------------------------------------------------------------

def ensemble_cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ensemble", *args], capture_output=True, text=True, timeout=120,
                          **kwargs)


def test_a_directory_that_is_not_a_finished_run_exits_2_before_anything_starts(tmp_path):
    done = ensemble_cli("serve", str(tmp_path), "--port", str(free_port()))
    assert done.returncode == 2 and "is not a finished run" in " ".join(done.stderr.split())  # wrapped at 100
    assert "Traceback" not in done.stderr and "Ray instance" not in done.stderr + done.stdout


@pytest.mark.parametrize("option, message", [(["--replicas", "0"], "replicas"), (["--port", "0"], "--port"),
                                             (["--max-batch-size", "0"], "max_batch_size"),
                                             (["--gpus-per-replica", "-1"], "gpus_per_replica")])
def test_bad_serving_options_exit_2_naming_the_option(tmp_path, option, message, capsys):
    from ensemble import cli
    assert cli.main(["serve", str(tmp_path), *option]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_an_autoencoder_that_cannot_be_imported_exits_2(trained, capsys):
    from ensemble import cli
    assert cli.main(["serve", str(trained), "--autoencoder", "no_such_module:Net"]) == 2
    err = capsys.readouterr().err
    assert "the autoencoder no_such_module:Net cannot be imported here" in err and "PYTHONPATH" in err


def test_a_missing_serve_extra_is_named(tmp_path):
    block_ray_serve = "import sys; sys.modules['ray.serve'] = None; from ensemble.cli import main; sys.exit(main())"
    done = subprocess.run([sys.executable, "-c", block_ray_serve, "serve", str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "pip install 'eager-ensembles[serve]'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_print_config_is_a_serve_deploy_config_whose_builder_builds(trained):
    from ray.serve import Application
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary  # what `serve run` calls
    from ray.serve.schema import ServeDeploySchema
    done = ensemble_cli("serve", str(trained), "--replicas", "2", "--max-batch-size", "4", "--print-config")
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    ServeDeploySchema.model_validate(config)
    assert config["http_options"] == {"host": "127.0.0.1", "port": 8000}
    [application] = config["applications"]
    assert application["import_path"] == "ensemble.serving.application:app"
    assert application["args"]["run_dir"] == str(trained)
    as_typed = {key: str(value) for key, value in application["args"].items()}  # `serve run k=v` gives strings
    built = call_user_app_builder_with_args_if_necessary(serving.app, as_typed)
    assert isinstance(built, Application)
    with pytest.raises(ensemble.InputError, match="not a finished run"):
        serving.app({"run_dir": str(trained.parent)})


@pytest.mark.slow
@pytest.mark.parametrize("ingress, env", [("replica", {}), ("proxy", {"ENSEMBLE_SERVE_INGRESS": "proxy"})])
def test_ctrl_c_stops_the_server_and_every_ray_process_it_started(trained, ingress, env):
    """The command's own Ray: one replica answers HTTP on the port asked for itself, unless told to keep
    Ray Serve's proxy there; either way Ctrl-C leaves nothing behind."""
    port = free_port()
    process, output = serve_command(trained, port, env=env)
    started = psutil.Process(process.pid).children(recursive=True)  # Ray's processes and the replica
    assert listening_role(port) == ingress  # the process listening on the port
    assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
    rest = stop(process)
    output.append(rest)
    assert process.returncode == 0 and "Stopped" in rest, "".join(output)
    assert "Traceback" not in "".join(output)
    assert "(raylet)" not in "".join(output)  # no failure of Ray's own at the stop, as serve.shutdown() gave
    _, alive = psutil.wait_procs(started, timeout=10)
    assert alive == [], [p.cmdline() for p in alive]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)


@pytest.mark.parametrize("started", [False, True])
def test_the_server_stops_ray_only_when_it_started_ray(started, monkeypatch):
    """Joining a cluster (RAY_ADDRESS) must leave its Ray and Serve running on Ctrl-C: `_stop` is told
    whether this process started Ray, not handed the session object (always true)."""
    from ensemble.scheduling.session import Session
    stopped, ports_checked = [], []
    monkeypatch.setattr(serving, "checked_run", lambda options: object())
    monkeypatch.setattr(serving, "starts_local", lambda: started)
    monkeypatch.setattr(serving, "connect", lambda: Session(started, None))
    monkeypatch.setattr(serving, "port_free", lambda host, port: ports_checked.append(port) or True)
    monkeypatch.setattr(serving, "deploy", lambda *args, **keywords: (_ for _ in ()).throw(KeyboardInterrupt))
    monkeypatch.setattr(serving, "stop_serving", stopped.append)
    serving.serve_until_stopped(serving.ServeOptions(run_dir="run"), "127.0.0.1", 8000, lambda line: None)
    assert stopped == [started] and ports_checked == ([8000] if started else [])
