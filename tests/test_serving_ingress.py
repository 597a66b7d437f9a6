"""Where served requests enter (`ensemble.serving.ingress`): the decision and Ray Serve's settings, without
Ray. The HTTP behaviour of both ways in is tested in test_serving.py."""

import os

import pytest

from ensemble.environment import environment
from ensemble.serving.ingress import OPT_OUT, PROXY, REPLICA, REPLICA_ENV, direct_ingress_env, ingress, replica_env
from workers.errors import InputError


@pytest.mark.parametrize("starts_ray, replicas, environ, expected", [
    (True, 1, {}, REPLICA),  # `ensemble serve RUN` as a user starts it
    (True, 1, {OPT_OUT: "proxy"}, PROXY),
    (True, 1, {OPT_OUT: " Replica "}, REPLICA),
    (True, 2, {}, PROXY),  # the proxy spreads requests over replicas
    (False, 1, {}, PROXY),  # a Ray running already, or a cluster: its Serve settings are its own
    (False, 1, {OPT_OUT: "replica"}, PROXY),
])
def test_the_replica_answers_only_where_this_process_starts_ray_for_one_replica(starts_ray, replicas, environ,
                                                                                expected):
    assert ingress(starts_ray, replicas, environ) == expected


def test_an_unknown_ingress_setting_is_an_input_error_naming_both_values():
    with pytest.raises(InputError, match=f"{OPT_OUT}='haproxy'.*'proxy'.*'replica'"):
        ingress(True, 1, {OPT_OUT: "haproxy"})


def test_the_replica_takes_the_port_asked_for_and_stops_without_a_drain():
    env = direct_ingress_env(8123)
    assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    lowest, past = (int(env[f"RAY_SERVE_DIRECT_INGRESS_{end}_HTTP_PORT"]) for end in ("MIN", "MAX"))
    assert list(range(lowest, past)) == [8123]  # Serve allocates from range(min, max)
    assert env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == "0" and env["RAY_SERVE_PORT_QUARANTINE_S"] == "0"


def test_replicas_run_our_code_on_their_own_loop_unless_the_user_names_ray_s_setting():
    name = "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"
    assert replica_env({}) == REPLICA_ENV == {name: "0"}
    assert replica_env({name: "1", OPT_OUT: "proxy"}) == {name: "1"}  # only Ray's own variables go to replicas


def test_ray_s_settings_are_the_environment_only_inside_the_with(monkeypatch):
    monkeypatch.setenv("EE_TEST_KEPT", "before")
    monkeypatch.delenv("EE_TEST_ADDED", raising=False)
    with environment({"EE_TEST_KEPT": "inside", "EE_TEST_ADDED": "inside"}):
        assert os.environ["EE_TEST_KEPT"] == os.environ["EE_TEST_ADDED"] == "inside"
    assert os.environ["EE_TEST_KEPT"] == "before" and "EE_TEST_ADDED" not in os.environ
    with pytest.raises(RuntimeError), environment({"EE_TEST_ADDED": "inside"}):
        raise RuntimeError
    assert "EE_TEST_ADDED" not in os.environ
