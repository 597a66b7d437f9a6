"""What a run does about the failures a shared cluster produces: killed members restart and resume, a
killed driver resumes, diverging members are excluded, each actor sees only its own GPU."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import ensemble
from ensemble.config import build_config, resume_config, start_or_resume
from ensemble.runs.runlock import pid_alive, read_holder
from ensemble.scheduling.pool import should_restart, too_few_members
from tests.session_ray import joining_environ
from tests.tiny import TINY, TinyAE
from workers.errors import InputError
from workers.events import EpochEnded, Lost, Restarted, Started
from workers.layout import WRITER_LOCK

THREE_EPOCHS = TINY + ["train.epochs=3", "eager.rule=fixed", "eager.epoch=3", "baseline.max_epochs=3"]


@pytest.mark.fault
def test_restart_and_minimum_decisions():  # pure decisions: not slow
    assert should_restart(0, 2) and should_restart(1, 2) and not should_restart(2, 2)
    assert not should_restart(0, 0)
    assert too_few_members(["a", "b"], {}, 2) is None
    message = too_few_members(["a"], {"b": "lost: actor died"}, 2)
    assert "min_members=2" in message and "b: lost: actor died" in message


def killer(target, after_epoch):
    """An on_event hook that SIGKILLs `target`'s actor process once it has finished `after_epoch`."""
    state = {"pid": None, "killed": False}

    def on_event(event):
        seen.append(event)
        if event.name != target:
            return
        match event:
            case Started(placement=placement):
                state["pid"] = placement["pid"]
            case EpochEnded(record=record) if record.epoch == after_epoch and not state["killed"]:
                state["killed"] = True
                os.kill(state["pid"], signal.SIGKILL)
    seen = []
    on_event.seen = seen
    return on_event


class WarningAE(TinyAE):
    """A member that warns, as a real model or library might, and whose batches take a real
    model's time (so the kill lands in member_00's second epoch, not in the member after it)."""

    def forward(self, x):
        import time
        import warnings
        warnings.warn("member says: reconstruction looks odd", UserWarning, stacklevel=1)
        time.sleep(0.05)
        return super().forward(x)


@pytest.mark.slow
@pytest.mark.fault
@pytest.mark.filterwarnings("ignore:member says")  # the driver checks the autoencoder on one batch too
def test_killed_member_restarts_and_resumes_with_every_epoch_once(ray_instance, tmp_path):
    cfg = build_config({}, THREE_EPOCHS + ["baseline.enabled=false", f"output={tmp_path}", "name=kill"])
    kill = killer("member_00", after_epoch=1)
    result = ensemble.run(cfg, autoencoder=WarningAE, on_event=kill)
    member = result.report.members[0]
    assert member.restarts == 1 and member.status == "done"
    restarted = [e for e in kill.seen if isinstance(e, Restarted)]
    assert [(e.name, e.restarts) for e in restarted] == [("member_00", 1)]
    assert any("member says: reconstruction looks odd" in line for line in restarted[0].log_tail)  # its last words
    resumed = [e for e in kill.seen if isinstance(e, Started) and e.name == "member_00"][-1]
    assert resumed.resumed_from == 1  # the new actor continued after the epoch that was saved
    assert [h.epoch for h in member.history] == [1, 2, 3] and member.selected_epoch == 3
    assert result.report.ensemble.members_used == [0, 1]


@pytest.mark.slow
@pytest.mark.fault
def test_member_lost_after_restarts_run_finishes_and_names_it(ray_instance, tmp_path):
    cfg = build_config({}, THREE_EPOCHS + ["baseline.enabled=false", "resources.max_restarts=0",
                                           f"output={tmp_path}", "name=lost"])
    kill = killer("member_01", after_epoch=1)
    result = ensemble.run(cfg, on_event=kill)
    lost = result.report.members[1]
    assert lost.status == "lost" and lost.selected_epoch is None and lost.stop_reason.startswith("lost: actor died")
    assert [e.name for e in kill.seen if isinstance(e, Lost)] == ["member_01"]
    assert lost.epochs_trained >= 1 and result.report.ensemble.members_used == [0]
    assert "member_01" in (result.run_dir / "report.md").read_text()

    cfg = build_config({}, THREE_EPOCHS + ["baseline.enabled=false", "resources.max_restarts=0", "min_members=2",
                                           f"output={tmp_path}", "name=too-few"])
    with pytest.raises(RuntimeError, match="fewer than min_members=2"):
        ensemble.run(cfg, on_event=killer("member_01", after_epoch=1))
    assert (tmp_path / "too-few" / "member_00" / "checkpoint_000003").is_dir()  # nothing lost on failure


class NaNForFirstMember(TinyAE):
    """Diverges only in member_00, whose actor seeds torch with 1 (member_seed(0, 0))."""

    def __init__(self):
        super().__init__()
        self.poisoned = torch.initial_seed() == 1

    def forward(self, x):
        out = super().forward(x)
        return out * float("nan") if self.poisoned else out


@pytest.mark.slow
@pytest.mark.fault
def test_diverging_member_is_excluded_and_named(ray_instance, tmp_path):
    cfg = build_config({}, TINY + ["baseline.enabled=false", f"output={tmp_path}", "name=nan"])
    result = ensemble.run(cfg, autoencoder=NaNForFirstMember, on_event=lambda e: None)
    bad, good = result.report.members
    assert bad.status == "diverged" and bad.selected_epoch is None and "diverged" in bad.stop_reason
    assert not good.diverged and result.report.ensemble.members_used == [1]
    assert "diverged" in (result.run_dir / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.fault
def test_every_member_diverging_fails_with_advice(ray_instance, tmp_path):
    cfg = build_config({}, TINY + ["baseline.enabled=false", "train.lr=1e6", "train.optimizer=sgd",
                                   "eager.rule=none", f"output={tmp_path}", "name=allnan"])
    with pytest.raises(RuntimeError, match="start a new run with a lower rate"):
        ensemble.run(cfg, on_event=lambda e: None)


@pytest.mark.slow
@pytest.mark.fault
def test_killed_driver_resumes_to_the_uninterrupted_report(ray_instance, tmp_path):
    sets = THREE_EPOCHS + [f"output={tmp_path}", "resources.lend_idle_cpus=false"]  # compared bit for bit
    whole = ensemble.run(build_config({}, sets + ["name=whole"]), on_event=lambda e: None)

    # the same run in its own process, joined to the session's Ray as to a shared cluster, killed mid-training
    args = [a for o in sets for a in ("--set", o)]
    driver = subprocess.Popen([sys.executable, "-m", "ensemble", "run", "--name", "cut", *args],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
                              env=joining_environ(ray_instance))
    for line in driver.stdout:
        if " member_00 epoch   2/" in line:  # an epoch line of the non-terminal view
            break
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    # the driver itself (a child of the killed process) gets SIGTERM as its parent dies, and holds the
    # run's lock until it has stopped: a resume meanwhile would be a second writer, so wait for it
    lock, deadline = tmp_path / "cut" / WRITER_LOCK, time.time() + 120
    while (holder := read_holder(lock)) is not None and pid_alive(holder.pid) and time.time() < deadline:
        time.sleep(0.2)
    assert not (tmp_path / "cut" / "report.json").exists()
    with pytest.raises(InputError, match="already finished"):
        resume_config(tmp_path / "whole")

    resumed = ensemble.run(resume_config(tmp_path / "cut"), resume=True, on_event=lambda e: None)
    a, b = whole.report, resumed.report
    assert [m.selected_epoch for m in a.members] == [m.selected_epoch for m in b.members]
    assert [[h.val_loss for h in m.history] for m in a.members] == [[h.val_loss for h in m.history] for m in b.members]
    assert [h.val_loss for h in a.baseline.history] == [h.val_loss for h in b.baseline.history]
    assert (a.ensemble.test_accuracy, a.baseline.test_accuracy) == (b.ensemble.test_accuracy, b.baseline.test_accuracy)


GPU_PLACEMENT = textwrap.dedent("""
    import json, ray
    from workers.actor import MemberActor
    ray.init(address="local", num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False)
    seen = {}
    for share in (1.0, 0.5):
        actors = [MemberActor.options(num_cpus=0.5, num_gpus=share).remote(0.5) for _ in range(round(2 / share))]
        seen[share] = ray.get([a.placement.remote() for a in actors])
        for actor in actors:
            ray.kill(actor)
    print(json.dumps(seen))
""")


@pytest.mark.slow
@pytest.mark.fault
def test_declared_gpus_give_each_actor_only_its_own_device(tmp_path):
    """Ray accepts declared GPUs on a CPU machine and sets CUDA_VISIBLE_DEVICES per actor:
    whole GPUs spread one per device, half GPUs pack two per device."""
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-c", GPU_PLACEMENT], env=env, capture_output=True, text=True,
                          timeout=180, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    for share, expected in (("1.0", ["0", "1"]), ("0.5", ["0", "0", "1", "1"])):
        placements = seen[share]
        for p in placements:
            assert p["cuda_visible_devices"] == ",".join(map(str, p["gpu_ids"])) and len(p["gpu_ids"]) == 1
            assert p["device"] == "cpu"  # no CUDA on this machine: the actor falls back cleanly
        assert sorted(p["cuda_visible_devices"] for p in placements) == expected


@pytest.mark.fault
def test_a_retried_job_continues_its_interrupted_run_and_refuses_a_finished_one(tmp_path):
    """`ensemble run --name job --resume-if-exists`, as the RayJob's retry runs it."""
    asked = build_config({}, TINY + [f"output={tmp_path}", "name=job", "train.lr=0.005"])
    assert start_or_resume(asked) == (asked, False)  # nothing there yet: a new run
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "config.json").write_text(build_config({}, TINY + ["name=job"]).model_dump_json())
    saved, resume = start_or_resume(asked)
    assert resume and saved.train.lr == 0.001 and saved.output == str(tmp_path)  # the run's own config
    (tmp_path / "job" / "report.json").write_text("{}")
    with pytest.raises(InputError, match="already finished"):
        start_or_resume(asked)
