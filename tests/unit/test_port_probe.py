"""The preflight's port probe: a listener holds a port; closed connections in TIME_WAIT do not
(a fleet destroyed a moment ago leaves them on its ports, and Docker's proxy binds over them)."""

from __future__ import annotations

import socket
import time

from components.backends.docker import _port_free


def free_port() -> int:
    """A free port below the kernel's ephemeral range, so no outgoing connection of other work
    can take it as its own end between this test's steps."""
    for port in range(21000, 32000):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise AssertionError("no free port from 21000 to 32000")


def test_a_listening_port_is_taken():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert not _port_free("127.0.0.1", listener.getsockname()[1])


def test_a_port_left_in_time_wait_is_free():
    port = free_port()
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: its end goes to TIME_WAIT
        time.sleep(0.05)
        client.close()
    assert _port_free("127.0.0.1", port)
