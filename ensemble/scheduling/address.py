"""A Ray address checked before `ray.init` dials it: `ray.init` retries an unreachable or wrong
address for minutes, deaf to Ctrl-C, and turns a malformed one into a bare ValueError. Here a
malformed address, or one where no Ray server answers within seconds, is an input error naming it.

The check is a bounded TCP connect to the host and port given (nowhere else), then the HTTP/2
greeting every gRPC server (Ray's GCS, its client server behind ray://) answers with its settings:
a closed port, a silent host or another kind of server (the dashboard's HTTP port) fails it.
A cluster with TLS (RAY_USE_TLS) answers only after a TLS handshake: there the TCP connect is the check.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass
from typing import Optional

from workers.errors import InputError

CONNECT_SECONDS = 10.0  # a reachable cluster answers in milliseconds; a lost packet is retried within this
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS_FRAME = 0x4
WHAT_TO_GIVE = ("give the head node's GCS address HOST:PORT (port 6379 by default), ray://HOST:PORT for Ray "
                "Client (port 10001), auto, or local")


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int


def parse_address(address: str) -> Optional[Endpoint]:
    """HOST:PORT or ray://HOST:PORT (IPv6 hosts in brackets) as an Endpoint; None for `auto` and
    `local`, which Ray resolves itself; an InputError naming anything else."""
    text = address.strip()
    if text in ("auto", "local"):
        return None
    rest = text.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if "://" in rest or not sep or not host or (":" in host and not rest.startswith("[")) or "/" in rest:
        raise InputError(f"the Ray address {address!r} is not HOST:PORT; {WHAT_TO_GIVE}.")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InputError(f"the Ray address {address!r} has the port {port!r}, not a number from 1 to 65535; "
                         f"{WHAT_TO_GIVE}.")
    return Endpoint(host, int(port))


def speaks_grpc(endpoint: Endpoint, timeout: float = CONNECT_SECONDS) -> Optional[str]:
    """None when a gRPC server answers at `endpoint`, else why not (one clause)."""
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as connection:
            if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
                return None
            connection.sendall(HTTP2_PREFACE)
            header = _read(connection, 9)  # an HTTP/2 frame header: length (3), type (1), flags, stream id
    except socket.gaierror as err:
        return f"its host name does not resolve ({err.strerror})"
    except TimeoutError:
        return f"nothing answered within {timeout:g} s"
    except OSError as err:
        return err.strerror or str(err)
    if len(header) < 9 or header[3] != SETTINGS_FRAME:
        return "a server answers there, but not Ray's (gRPC): is it the dashboard's or another service's port?"
    return None


def _read(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def check_address(address: str, timeout: float = CONNECT_SECONDS) -> None:
    """Refuse a malformed address, or one where no Ray server answers, before `ray.init` dials it.
    The probe runs in a daemon thread so that Ctrl-C (and a slow name lookup) never holds it up."""
    endpoint = parse_address(address)
    if endpoint is None:
        return
    outcome: list[Optional[str]] = []
    probe = threading.Thread(target=lambda: outcome.append(speaks_grpc(endpoint, timeout)), daemon=True)
    probe.start()
    probe.join(2 * timeout + 5)  # the name lookup is not bounded by the socket's timeout
    problem = outcome[0] if outcome else f"nothing answered within {2 * timeout + 5:g} s"
    if problem:
        raise InputError(f"cannot connect to the Ray cluster at {address!r}: {problem}. Check that the cluster is "
                         f"running and reachable from here (`ray status --address {endpoint.host}:{endpoint.port}` "
                         f"on the head node), or drop --address and RAY_ADDRESS to run locally; {WHAT_TO_GIVE}.")
