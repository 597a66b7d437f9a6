"""deploy/ checked statically: configs Ray and KubeRay accept, entrypoints our CLI accepts,
token auth on and dashboards private everywhere, no secrets. No Ray, no Docker, no network."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import ray
import yaml

from ensemble.cli import build_parser, config_overrides
from ensemble.config import resolve

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
CLUSTER = DEPLOY / "cluster.yaml"
RAYJOB = DEPLOY / "kuberay" / "rayjob.yaml"
PVC = DEPLOY / "kuberay" / "runs-pvc.yaml"
RUNTIME_ENV = DEPLOY / "runtime_env.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
SUBMIT = DEPLOY / "submit.sh"
YAMLS = sorted(DEPLOY.rglob("*.yaml"))
CONFIG_FILES = [*YAMLS, DOCKERFILE, SUBMIT]  # files whose non-comment text configures something


def load(path: Path):
    return yaml.safe_load(path.read_text())


def without_comments(text: str) -> str:
    return "\n".join(re.sub(r"(^|\s)#.*$", "", line) for line in text.splitlines())


# --- command lines that invoke `ensemble` ---------------------------------------------------

def ensemble_invocations(command: str) -> list[list[str]]:
    """The argument lists one shell command line gives to `ensemble` (via `python -m ensemble`
    or deploy/submit.sh, which prepends `run`), each cut at the next shell operator."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    words = list(lexer)
    found = []
    for i, word in enumerate(words):
        if word in ("python", "python3") and words[i + 1:i + 3] == ["-m", "ensemble"]:
            args = words[i + 3:]
        elif word.endswith("submit.sh"):
            args = ["run", *words[i + 1:]]
        else:
            continue
        operator = next((j for j, w in enumerate(args) if w and set(w) <= set("();<>|&")), len(args))
        found.append(args[:operator])
    return found


def assert_valid_ensemble_command(args: list[str]) -> None:
    """Parsed by our own parser and config, as `ensemble` would at start-up."""
    try:
        parsed = build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"`ensemble {shlex.join(args)}` is rejected by ensemble's parser")
    if not parsed.resume:
        resolve(file=parsed.config, overrides=config_overrides(parsed))  # an InputError names a bad key


def readme_commands() -> list[str]:
    """Shell lines of deploy/README.md's bash blocks, backslash continuations joined."""
    blocks = re.findall(r"```bash\n(.*?)```", (DEPLOY / "README.md").read_text(), re.S)
    return [line for block in blocks for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def test_every_yaml_file_parses():
    assert {p.name for p in YAMLS} >= {"cluster.yaml", "runtime_env.yaml", "rayjob.yaml", "runs-pvc.yaml"}
    for path in YAMLS:
        assert load(path), f"{path} is empty"


def test_the_rayjob_entrypoint_is_a_valid_ensemble_command_and_plain_words():
    entrypoint = load(RAYJOB)["spec"]["entrypoint"]
    # KubeRay pastes the entrypoint unquoted into the submitter's shell line: no operators,
    # quotes, globs or variables, or that shell (not the job) would interpret them.
    assert not set(entrypoint) & set(";&|<>()$`*?[]{}!~#'\"\\"), entrypoint
    (args,) = ensemble_invocations(entrypoint)
    assert_valid_ensemble_command(args)
    parsed = build_parser().parse_args(args)
    assert parsed.name and parsed.resume_if_exists  # a retry continues the interrupted run


def test_submit_sh_and_readme_commands_are_valid_ensemble_commands():
    submit_line = next(line for line in SUBMIT.read_text().replace("\\\n", " ").splitlines()
                       if line.startswith("exec ray job submit"))
    assert submit_line.rstrip().endswith('python -m ensemble run "$@"')
    invocations = [args for line in readme_commands() for args in ensemble_invocations(line)]
    assert len(invocations) >= 3, "deploy/README.md should show the job being submitted"
    for args in invocations:
        assert_valid_ensemble_command(args)


# --- Ray cluster launcher ---------------------------------------------------------------------

def test_cluster_yaml_passes_ray_cluster_launcher_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config
    config = load(CLUSTER)
    validate_config(prepare_config(config))  # Ray's schema, as `ray up` runs it (offline)

    assert config["cluster_name"] and config["provider"]["type"] and config["max_workers"] >= 1
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    for name, node in types.items():
        assert "resources" in node and "node_config" in node, name
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0, "the head should be a CPU node"
    gpu_workers = [n for k, n in types.items() if k != config["head_node_type"] and n["resources"].get("GPU", 0) > 0]
    assert gpu_workers, "a GPU worker type is needed"
    for node in gpu_workers:  # from zero: no GPU node is up (or billed) until a job's members queue for one
        assert node["min_workers"] == 0 < node["max_workers"] <= config["max_workers"]


def test_cluster_yaml_turns_token_auth_on_and_keeps_the_network_closed():
    config = load(CLUSTER)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[key] if "ray start" in c]
        assert starts and all(re.search(r"RAY_AUTH_MODE=token\b.*ray start", c) for c in starts), key
    head_start = next(c for c in config["head_start_ray_commands"] if "ray start" in c)
    assert "--dashboard-host=127.0.0.1" in head_start
    # Ray's auto-created security group opens SSH to 0.0.0.0/0: every node type brings its own.
    for name, node in config["available_node_types"].items():
        assert node["node_config"].get("SecurityGroupIds"), f"{name} would get Ray's world-open group"
    # The token file is copied from outside the repository, never from a file in it.
    (local,) = [src for dst, src in config["file_mounts"].items() if "auth_token" in dst]
    assert local.startswith("~/") and not Path(os.path.expanduser(local)).is_relative_to(ROOT)


# --- KubeRay -----------------------------------------------------------------------------------

def pod_containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def test_rayjob_has_what_kuberay_requires():
    job = load(RAYJOB)
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob" and job["metadata"]["name"]
    spec = job["spec"]
    assert spec["entrypoint"].strip()
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] >= 0
    assert spec["backoffLimit"] >= 1 and spec["activeDeadlineSeconds"] > 0
    assert "working_dir" not in spec.get("runtimeEnvYAML", ""), "a RayJob cannot upload a local directory"
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    head = cluster["headGroupSpec"]
    assert "rayStartParams" in head and pod_containers(head)[0]["image"]
    workers = cluster["workerGroupSpecs"]
    for group in workers:
        assert group["groupName"] and "rayStartParams" in group and pod_containers(group)[0]["image"]
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    gpu_groups = [g for g in workers if int(pod_containers(g)[0]["resources"]["limits"].get("nvidia.com/gpu", 0)) > 0]
    assert gpu_groups, "a worker group with an nvidia.com/gpu limit is needed"
    assert cluster["enableInTreeAutoscaling"] is True
    for group in gpu_groups:  # scales from zero: the job waits for the autoscaler instead of keeping a pod up
        assert group["minReplicas"] == group["replicas"] == 0 < group["maxReplicas"]


def test_rayjob_writes_its_runs_to_the_shared_volume_on_every_pod():
    job, claim = load(RAYJOB), load(PVC)
    assert claim["kind"] == "PersistentVolumeClaim" and "ReadWriteMany" in claim["spec"]["accessModes"]
    (args,) = ensemble_invocations(job["spec"]["entrypoint"])
    output = args[args.index("--output") + 1]
    cluster = job["spec"]["rayClusterSpec"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                  for v in pod["volumes"] if "persistentVolumeClaim" in v}
        mounts = {m["mountPath"]: m["name"] for m in pod_containers(group)[0]["volumeMounts"]}
        assert claims.get(mounts.get(output)) == claim["metadata"]["name"], f"{output} is not the shared volume"


def test_rayjob_keeps_token_auth_on_and_the_dashboard_inside_the_cluster():
    cluster = load(RAYJOB)["spec"]["rayClusterSpec"]
    assert cluster["authOptions"]["mode"] == "token"
    head = cluster["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP" and not head.get("enableIngress", False)
    for group in [head, *cluster["workerGroupSpecs"]]:
        for container in pod_containers(group):
            env = {e["name"]: e for e in container.get("env", [])}
            assert env.get("RAY_AUTH_MODE", {"value": "token"}).get("value") == "token"
            assert "value" not in env.get("RAY_AUTH_TOKEN", {}), "a token must come from a Secret"


# --- runtime_env for `ray job submit --working-dir .` -------------------------------------

def test_runtime_env_is_one_ray_accepts():
    from ray.dashboard.modules.dashboard_sdk import parse_runtime_env_args
    from ray.runtime_env import RuntimeEnv
    env = parse_runtime_env_args(runtime_env=str(RUNTIME_ENV), working_dir=".")  # as `ray job submit` reads it
    assert set(env) <= RuntimeEnv.known_fields
    RuntimeEnv(**env)
    assert not {"RAY_AUTH_TOKEN", "RAY_AUTH_MODE"} & set(env.get("env_vars", {}))


def test_runtime_env_excludes_leave_only_the_code(tmp_path):
    from ray._private.runtime_env.packaging import _zip_files  # the packer `ray job submit` uses
    kept = ["pyproject.toml", "ensemble/data.py", "ensemble/cli.py", "workers/actor.py", "ensemble/runs/rundir.py",
            "ensemble/data/splits.py", "classifier/combiner.py", "deploy/runtime_env.yaml", "tests/test_deploy.py"]
    dropped = [".git/HEAD", ".venv/bin/python", "venv/lib/site.py", ".env", "runs/r1/report.json",
               "runs/r1/member_00/checkpoint_000001/model.safetensors", "data/mnist/train-images-idx3-ubyte",
               "ensemble/__pycache__/cli.cpython-311.pyc", "auth_token", ".pytest_cache/v/x",
               "eager_ensembles.egg-info/PKG-INFO", "build/lib/ensemble/cli.py", "model.pt"]
    checkout, package = tmp_path / "checkout", tmp_path / "package.zip"
    for name in kept + dropped:
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).write_text("x")
    # Without .gitignore: the excludes must hold on their own.
    _zip_files(str(checkout), load(RUNTIME_ENV)["excludes"], str(package), include_gitignore=False)
    uploaded = {n for n in zipfile.ZipFile(package).namelist() if not n.endswith("/")}
    assert uploaded == set(kept)
    # With the repository's .gitignore, as Ray reads it by default: no pattern may drop code (an
    # unanchored `runs/` once dropped ensemble/runs/, and the job ran an installed copy instead).
    shutil.copy(ROOT / ".gitignore", checkout / ".gitignore")
    _zip_files(str(checkout), load(RUNTIME_ENV)["excludes"], str(package), include_gitignore=True)
    assert set(kept) <= set(zipfile.ZipFile(package).namelist())


# --- Dockerfile ------------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return [tuple(line.split(None, 1)) for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_dockerfile_is_rays_gpu_image_for_our_ray_and_python():
    (base,) = [arg for op, arg in dockerfile_instructions() if op == "FROM"]
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    assert base == f"rayproject/ray:{ray.__version__}-{python}-gpu"
    pins = re.findall(r"ray(?:\[[\w,]+\])?==([\w.]+)", DOCKERFILE.read_text())
    assert pins and set(pins) == {ray.__version__}, "pip must not swap the image's Ray"


def test_dockerfile_copies_every_package_and_installs_it():
    import tomllib
    instructions = dockerfile_instructions()
    assert any(op == "RUN" and re.match(r"pip install --no-cache-dir \"?\.(\[cloud\])?\"?(\s|$)", arg)
               for op, arg in instructions)
    copied = {word.rstrip("/") for op, arg in instructions if op == "COPY" for word in arg.split()[:-1]
              if not word.startswith("--")}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()
                and any(re.fullmatch(pat.replace("*", ".*"), p.name) for pat in patterns)}
    assert packages and packages | {"pyproject.toml", pyproject["project"]["readme"]} <= copied
    assert ("ENV", "RAY_AUTH_MODE=token") in instructions
    # Build args and env vars stay readable in the image's history: none may carry a secret.
    names = [arg.split("=")[0] for op, arg in instructions if op in ("ARG", "ENV")]
    assert not [n for n in names if re.search(r"(?i)token|secret|password|key", n)]


# --- security across every deploy file ---------------------------------------------------

SECRET_PATTERNS = {
    "a literal Ray token": r"RAY_AUTH_TOKEN\s*[=:]\s*[\"']?[A-Za-z0-9+/_-]{12,}",
    "an AWS access key": r"AKIA[0-9A-Z]{16}",
    "a private key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    "a long hex or base64 secret": r"(?<![\w.-])[A-Za-z0-9+/]{32,}={0,2}(?![\w.-])",
    "a password": r"(?i)password\s*[=:]\s*\S+",
}


@pytest.mark.parametrize("path", [*CONFIG_FILES, DEPLOY / "README.md", DEPLOY / "Dockerfile.dockerignore"],
                         ids=lambda p: str(p.relative_to(DEPLOY)))
def test_no_secrets(path):
    text = path.read_text()
    for what, pattern in SECRET_PATTERNS.items():
        assert not re.search(pattern, text), f"{path.name} seems to hold {what}"


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_token_auth_never_turned_off_and_nothing_bound_to_all_interfaces(path):
    lines = path.read_text().splitlines()
    code = without_comments(path.read_text())
    assert not re.search(r"RAY_AUTH_MODE\W+(?!token\b)\w", code), f"{path.name} changes RAY_AUTH_MODE"
    assert not re.search(r"mode:\s*disabled", code)
    assert "0.0.0.0/0" not in code and "::/0" not in code, f"{path.name} opens something to the world"
    for i, line in enumerate(lines):
        if re.search(r"dashboard[-_]host\W+(0\.0\.0\.0|::)(\s|$)", line):
            justified = "#" in line or lines[i - 1].lstrip().startswith("#")
            assert justified, f"{path.name}:{i + 1} binds a dashboard to all interfaces without saying why"


# --- submit.sh ----------------------------------------------------------------------------------

def test_submit_sh_is_valid_bash_with_strict_mode():
    subprocess.run(["bash", "-n", str(SUBMIT)], check=True)
    assert "set -euo pipefail" in SUBMIT.read_text()


@pytest.fixture
def fake_ray(tmp_path):
    """A stand-in `ray` on PATH that records how it was called instead of calling anyone."""
    bin_dir, record = tmp_path / "bin", tmp_path / "ray-called"
    bin_dir.mkdir()
    (bin_dir / "ray").write_text(
        f'#!/bin/bash\n{{ pwd; echo "mode=$RAY_AUTH_MODE"; printf "%s\\n" "$@"; }} > {record}\n')
    (bin_dir / "ray").chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(home), "RAY_ADDRESS": "http://127.0.0.1:8265"}
    return env, record


def run_submit(env: dict, *args: str, cwd: Path):
    return subprocess.run(["bash", str(SUBMIT), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("setup", ["no token anywhere", "empty token file", "token file missing", "no address"])
def test_submit_sh_refuses_to_run_without_a_token_or_address(fake_ray, tmp_path, setup):
    env, record = fake_ray
    if setup == "empty token file":
        (tmp_path / "empty").write_text("")
        env["RAY_AUTH_TOKEN_PATH"] = str(tmp_path / "empty")
    elif setup == "token file missing":
        env["RAY_AUTH_TOKEN_PATH"] = str(tmp_path / "nowhere")
    elif setup == "no address":
        env["RAY_AUTH_TOKEN"] = "t" * 8
        del env["RAY_ADDRESS"]
    done = run_submit(env, "--set", "members=3", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert ("token" if setup != "no address" else "RAY_ADDRESS") in done.stderr
    assert not record.exists(), "ray was called anyway"


def test_submit_sh_submits_the_documented_command_with_the_token_off_argv(fake_ray, tmp_path):
    env, record = fake_ray
    token = tmp_path / "home" / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("not-a-real-token-value")
    done = run_submit(env, "--output", "/mnt/runs", "--set", "members=3", cwd=tmp_path)  # called from elsewhere
    assert done.returncode == 0, done.stderr
    cwd, mode, *argv = record.read_text().splitlines()
    assert Path(cwd) == ROOT and mode == "mode=token"  # uploads the repository root, token auth on
    assert argv == ["job", "submit", "--address", "http://127.0.0.1:8265", "--working-dir", ".",
                    "--runtime-env", "deploy/runtime_env.yaml", "--", "python", "-m", "ensemble",
                    "run", "--output", "/mnt/runs", "--set", "members=3"]
    assert "not-a-real-token-value" not in record.read_text()
    assert_valid_ensemble_command(argv[argv.index("ensemble") + 1:])
