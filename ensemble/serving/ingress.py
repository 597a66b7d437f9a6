"""Where a served request enters: the replica's own HTTP server, or Ray Serve's HTTP proxy.

Through the proxy every request costs the replica about 3.5 ms of CPU on top of the model: an actor call
from the proxy, a second call back to it for the body, Ray's core worker (docs/performance.md, 2026-12-07).
With Ray Serve's direct ingress the replica answers HTTP itself: the same 1-64-image load was served at
1.57 times the proxy path's images/s, single images at 3.6 times the requests a second (alternated runs,
docs/performance.md, 2026-12-07, night). Ray 2.60 turns it on through environment variables that its
controller and replicas read when they start, so only a Ray that this process starts can have them:
`ensemble serve` and `ensemble.serve()` then serve one replica directly on the port asked for (Serve's
proxy still runs, on a free port of the same host, as Serve needs). Several replicas, a Ray that was
running already or a cluster (RAY_ADDRESS) keep the proxy, which spreads requests over replicas and
nodes; ENSEMBLE_SERVE_INGRESS=proxy keeps it always.
"""

from __future__ import annotations

from typing import Mapping

from workers.errors import InputError

OPT_OUT = "ENSEMBLE_SERVE_INGRESS"  # "proxy": Ray Serve's HTTP proxy even where the replica could answer
REPLICA, PROXY = "replica", "proxy"


def ingress(starts_ray: bool, replicas: int, environ: Mapping[str, str]) -> str:
    """REPLICA when this process starts Ray and serves one replica (unless OPT_OUT says PROXY), else PROXY."""
    choice = environ.get(OPT_OUT, "").strip().lower()
    if choice not in ("", REPLICA, PROXY):
        raise InputError(f"{OPT_OUT}={environ[OPT_OUT]!r}: set it to {PROXY!r} (Ray Serve's HTTP proxy) or "
                         f"{REPLICA!r} (the replica answers HTTP itself where it can), or leave it unset.")
    return REPLICA if starts_ray and replicas == 1 and choice != PROXY else PROXY


def direct_ingress_env(port: int) -> dict[str, str]:
    """Ray Serve's settings for one replica answering HTTP on `port` itself: the port range it takes its
    port from is that port alone; no drain period or port quarantine on shutdown (they give an outside load
    balancer time to notice, and there is none: a stopped server would wait 30 s)."""
    return {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
            "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
            "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + 1),  # exclusive: range(min, max)
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0",
            "RAY_SERVE_PORT_QUARANTINE_S": "0"}


# Ray Serve runs a replica's own code on an event loop in a second thread by default, and hands every request
# over to it and back. Our request handling is short and the forward pass holds the loop anyway, so on the
# replica's own loop requests skip the hand-over (1.10 times the images/s of 1-64-image requests, 1.25 times
# the single-image requests a second: 5 alternated pairs, docs/performance.md, 2026-12-07, late). Ray reads it
# when the replica process starts, so it goes in the replica's runtime_env: it then holds on any Ray, a
# cluster's included (Ray merges env_vars with a job's own). Ray's throughput-optimised mode sets it too, with
# others we leave (it hides a replica's log lines from the console).
REPLICA_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}


def replica_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment variables each replica starts with: REPLICA_ENV, where this process's own
    environment sets one of them, its value (someone who names Ray's variable means it)."""
    return {name: environ.get(name, value) for name, value in REPLICA_ENV.items()}
