"""Free TCP ports on 127.0.0.1 for servers a test starts (a Ray head, `ensemble serve`): the session's
own Ray instance, and other jobs on the machine, may hold the default ones."""

import socket


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports
