"""Member actors kept warm between runs in one Ray session (`ensemble.scheduling.warm_actors`): the pure
decisions without Ray, then estimator fits that reuse (or replace) the kept actors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from ensemble.scheduling.placement import Share
from ensemble.scheduling.warm_actors import (
    IDLE_DEFAULT_S,
    IDLE_VARIABLE,
    Kept,
    host_group,
    idle_seconds,
    keeping,
    keeps_actors,
    run_scope,
    split_kept,
)
from tests.session_ray import alive
from workers.errors import InputError

ONE_CPU, TWO_CPUS = Share(1.0, 0.0), Share(2.0, 0.0)
HERE = ("session_a", "01000000")


# --- the decisions, without Ray ---

def test_only_a_run_whose_session_outlives_it_keeps_actors():
    assert keeps_actors(run_opened_ray=False, idle_for=30.0)
    assert not keeps_actors(run_opened_ray=True, idle_for=30.0)   # Ray (or its process) ends with the run
    assert not keeps_actors(run_opened_ray=False, idle_for=0.0)   # told to keep none


@pytest.mark.parametrize("value, seconds", [(None, IDLE_DEFAULT_S), ("", IDLE_DEFAULT_S), ("0", 0.0), ("2.5", 2.5)])
def test_idle_seconds_from_the_environment(value, seconds):
    assert idle_seconds(value) == seconds


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_a_bad_idle_time_is_an_input_error_naming_the_variable(value):
    with pytest.raises(InputError, match=f"{IDLE_VARIABLE}={value!r} is not a number of seconds >= 0"):
        idle_seconds(value)


def test_a_pool_takes_kept_actors_of_its_share_in_its_session_and_ends_the_rest():
    kept = Kept(HERE, ONE_CPU, ["a", "b", "c"])
    assert split_kept(None, HERE, ONE_CPU, 2) == ([], [])
    assert split_kept(kept, HERE, ONE_CPU, 2) == (["a", "b"], ["c"])    # more than wanted would hold CPUs
    assert split_kept(kept, HERE, ONE_CPU, 5) == (["a", "b", "c"], [])
    assert split_kept(kept, HERE, TWO_CPUS, 1) == ([], ["a", "b", "c"])  # another share: ended, not used
    # an earlier Ray session, or another driver's job: the handles mean nothing here, so neither
    assert split_kept(kept, ("session_b", "01000000"), ONE_CPU, 2) == ([], [])
    assert split_kept(kept, ("session_a", "02000000"), ONE_CPU, 2) == ([], [])


def test_the_baseline_trains_on_members_actors_that_hold_its_cpus_on_one_node():
    # two 1-CPU members' actors on one node host the 2-CPU baseline: one trains with 2 threads, one holds
    assert host_group(ONE_CPU, ["n1", "n1"], TWO_CPUS) == [0, 1]
    assert host_group(ONE_CPU, ["n1", "n2", "n2", "n2"], Share(3.0, 0.0)) == [1, 2, 3]
    assert host_group(Share(1.5, 0.0), ["n1", "n1"], Share(3.0, 0.0)) == [0, 1]
    assert host_group(Share(1.5, 0.0), ["n1", "n1"], Share(4.0, 0.0)) is None  # 3 CPUs of 4: too few
    assert host_group(ONE_CPU, ["n1", "n2"], TWO_CPUS) is None         # a model cannot span nodes
    assert host_group(ONE_CPU, ["n1"], TWO_CPUS) is None
    assert host_group(ONE_CPU, ["n1", "n1"], ONE_CPU) is None          # the same share: taken as it is
    assert host_group(Share(1.0, 0.5), ["n1", "n1"], Share(2.0, 1.0)) is None  # GPU shares never add up


def test_runs_keep_actors_inside_a_session_opened_before_them_and_not_one_they_opened(monkeypatch):
    monkeypatch.setenv(IDLE_VARIABLE, "30")
    assert not keeping()                        # outside any run
    with run_scope(run_opened_ray=True):       # `ensemble run`, or a --repeats loop's own session
        assert not keeping()
        with run_scope(run_opened_ray=False):  # each repeat joins the loop's session, which outlives it
            assert keeping()
        assert not keeping()
    monkeypatch.setenv(IDLE_VARIABLE, "0")
    with run_scope(run_opened_ray=False):
        assert not keeping()


def test_actors_kept_in_an_ended_ray_session_are_dropped_at_a_later_runs_end(monkeypatch):
    """A run that ends before its pools start (bad input, say) in a later Ray session must not call the actors
    an earlier session kept: their handles mean nothing there, and the call would hide the run's own error."""
    from ensemble.scheduling import warm_actors

    class EndedSessionsActor:
        class rest:
            @staticmethod
            def remote():
                raise AssertionError("called an actor of an ended Ray session")
    monkeypatch.setenv(IDLE_VARIABLE, "30")
    monkeypatch.setattr(warm_actors, "_kept", Kept(("ended_session", "01000000"), ONE_CPU, [EndedSessionsActor()]))
    with run_scope(run_opened_ray=False):
        pass
    assert warm_actors._kept is None


# --- on Ray ---

# Idle CPUs are not lent here: a member lent a second thread part-way encodes its features with 2 threads,
# which changes them in the last bits whoever's actor it is, so results would differ without a kept actor too.
FIT = dict(members=2, epochs=1, eager_rule="none", random_state=3,
           settings={"model.channels": [4], "resources.lend_idle_cpus": False})


@pytest.fixture
def kept_warm(ray_instance, monkeypatch):
    """Runs in the test session's Ray keep their idle actors (tests/conftest.py turns it off elsewhere)."""
    from ensemble import release_actors
    monkeypatch.setenv(IDLE_VARIABLE, "30")
    release_actors()
    yield
    release_actors()


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:300], y[:300]


def fit(X, y, **settings):
    from ensemble import EagerEnsembleClassifier
    return EagerEnsembleClassifier(**{**FIT, "settings": {**FIT["settings"], **settings}}).fit(X, y)


def pids(clf) -> set:
    return {member.placement["pid"] for member in clf.report_.members}


def assert_same_results(clf, other, X) -> None:
    losses = [[(h.train_loss, h.val_loss) for h in m.history] for m in clf.report_.members]
    assert losses == [[(h.train_loss, h.val_loss) for h in m.history] for m in other.report_.members]
    assert np.array_equal(clf.predict_proba(X), other.predict_proba(X))


@pytest.mark.slow
def test_later_fits_reuse_the_kept_actors_with_the_results_of_new_ones(kept_warm, digits):
    from ensemble import release_actors
    X, y = digits
    first = fit(X, y)
    second = fit(X, y)
    assert pids(second) <= pids(first)  # the same processes trained the second fit
    assert release_actors() >= 1
    fresh = fit(X, y)
    assert pids(fresh).isdisjoint(pids(first))
    assert_same_results(second, first, X)
    assert_same_results(fresh, first, X)


@pytest.mark.slow
def test_a_kept_actor_starts_each_run_with_its_own_share_of_threads(kept_warm, digits):
    X, y = digits
    # in the first fit the member that finishes first lends its CPU to the other (2 threads) when both
    # actors are warm; the next fits lend nothing, so a member of theirs on 2 threads could only have kept
    # the first fit's: each begins with the 1 thread of its share again
    fits = [fit(X, y, **{"resources.lend_idle_cpus": lend}) for lend in (True, False, False)]
    assert pids(fits[2]) <= pids(fits[0])
    assert [[m.placement["threads"] for m in f.report_.members] for f in fits[1:]] == [[1, 1], [1, 1]]


@pytest.mark.slow
def test_a_kept_actor_killed_between_fits_is_replaced_by_a_new_one(kept_warm, digits):
    from ensemble.scheduling import warm_actors
    X, y = digits
    first = fit(X, y)
    assert warm_actors._kept is not None and warm_actors._kept.actors
    dead = next(iter(pids(first)))
    os.kill(dead, signal.SIGKILL)  # as the OOM killer or a lost node would
    second = fit(X, y)
    assert dead not in pids(second)
    assert_same_results(second, first, X)


RUN_ALONE = """
import json, os, sys
os.environ["ENSEMBLE_ACTOR_IDLE_S"] = "30"
import ray, ensemble
from ensemble.config import build_config
from ensemble.scheduling import warm_actors
result = ensemble.run(build_config({}, sys.argv[1:]), progress="quiet")
print(json.dumps({"pids": [m.placement["pid"] for m in result.report.members], "ray_up": ray.is_initialized(),
                  "kept": warm_actors._kept is not None}))
"""


@pytest.mark.slow
def test_a_run_that_starts_its_own_ray_leaves_no_actor_behind(tmp_path):
    settings = ["members=2", "train.epochs=1", "data.name=digits", "data.train_size=150", "data.val_size=60",
                "data.test_size=60", "model.channels=[4]", "baseline.enabled=false", f"output={tmp_path}"]
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", RUN_ALONE, *settings], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["ray_up"] is False and seen["kept"] is False
    deadline = time.time() + 30
    while any(alive(pid) for pid in seen["pids"]) and time.time() < deadline:
        time.sleep(0.5)
    assert not any(alive(pid) for pid in seen["pids"])


@pytest.mark.slow
def test_kept_actors_exit_after_the_idle_time_and_give_back_their_cpus(ray_instance, monkeypatch, digits):
    import ray

    from ensemble.scheduling import warm_actors
    monkeypatch.setenv(IDLE_VARIABLE, "2")
    X, y = digits
    first = fit(X, y)
    assert warm_actors._kept is not None  # kept: the next fit in the next 2 s would take them
    deadline = time.time() + 30
    while (any(alive(pid) for pid in pids(first)) or ray.available_resources().get("CPU", 0) < 2) \
            and time.time() < deadline:
        time.sleep(0.5)
    assert warm_actors._kept is None
    assert not any(alive(pid) for pid in pids(first))
    assert ray.available_resources().get("CPU", 0) == 2  # the session's 2 CPUs, free for other Ray work
