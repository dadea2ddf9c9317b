"""Ports: the preflight's probe (a listener holds a port; closed connections in TIME_WAIT do not:
a fleet destroyed a moment ago leaves them on its ports, and Docker's proxy binds over them), and
the driver's claim (creates side by side never choose one port twice)."""

from __future__ import annotations

import socket
import time

from components.backends.docker.backend import _port_free

TIME_WAIT = "06"  # the state column of /proc/net/tcp


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


def settle_into_time_wait(port: int, timeout_s: float = 5) -> None:
    """Wait until every socket on the port is in TIME_WAIT: under load the kernel may take a
    moment past close() to finish the connection's closing handshake."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with open("/proc/net/tcp") as table:
            states = {fields[3] for fields in (line.split() for line in table.readlines()[1:])
                      if int(fields[1].split(":")[1], 16) == port}
        if states <= {TIME_WAIT}:
            return
        time.sleep(0.02)
    raise AssertionError(f"port {port} did not settle into TIME_WAIT: states {sorted(states)}")


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
    settle_into_time_wait(port)
    assert _port_free("127.0.0.1", port)


class _Engine:
    is_local = False  # no bind probe: the engine's listing alone says what is held

    @staticmethod
    def describe() -> str:
        return 'host "remote"'


class _Api:
    @staticmethod
    def containers(all: bool = False) -> list:  # noqa: A002 - the Docker SDK's keyword
        return []  # the containers being made are not listed yet: the race the claim closes


class _Client:
    engine = _Engine()
    api = _Api()


def test_creates_side_by_side_on_one_engine_never_take_the_same_port():
    """Twenty creates at once, all preferring one port, before the engine lists any of them."""
    from concurrent.futures import ThreadPoolExecutor

    from components.backends.docker.driver import claim_port

    engine = {"address": "ssh://ops@claim-test", "name": "remote"}
    fields = {"preferred_port": 22100, "port_base": 22000, "port_span": 2000}
    with ThreadPoolExecutor(max_workers=20) as pool:
        ports = list(pool.map(lambda n: claim_port(_Client(), engine, f"agent-{n}", fields), range(20)))
    assert sorted(ports) == list(range(22100, 22120))
    assert claim_port(_Client(), engine, "agent-x", {**fields, "port": 23000}) == 23000  # a declared port is kept
