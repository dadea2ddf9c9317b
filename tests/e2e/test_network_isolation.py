"""Network isolation beyond IPv4 TCP, for real: UDP and IPv6 egress are restricted as TCP is, an
`allow` entry opens exactly what it names (that address, port and protocol), and a restricted
agent reaches neither another agent's sshd nor the host's loopback services.

The server is a container on the test network and on an IPv6 test network, answering on TCP 8080
and 8081 and echoing UDP on 9998 and 9999, so that every refusal is the policy's and not a closed
port; an `egress: open` agent shows each one is reachable. Only containers, networks and host
sockets the test makes are reached.
"""

from __future__ import annotations

import socket
import threading
import uuid
from pathlib import Path

import pytest

from agentfleet import Fleet
from tests.e2e.support import TEST_LABEL, FleetStack, GitServer, docker

SERVER = """
import socket, threading
def bound(family, kind):
    s = socket.socket(family, kind)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return s
def tcp(family, port):
    s = bound(family, socket.SOCK_STREAM); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port)); s.listen()
    while True:
        c, _ = s.accept(); c.sendall(b"tcp %d\\n" % port); c.close()
def udp(family, port):
    s = bound(family, socket.SOCK_DGRAM)
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    while True:
        data, peer = s.recvfrom(512); s.sendto(b"udp %d" % port, peer)
for family in (socket.AF_INET, socket.AF_INET6):
    for port in (8080, 8081):
        threading.Thread(target=tcp, args=(family, port)).start()
    for port in (9998, 9999):
        threading.Thread(target=udp, args=(family, port)).start()
"""
V6_SUBNET = "fd17:17:{}::/64"
# Docker turns IPv6 forwarding on for the whole host when it makes an IPv6 bridge; the fixture
# that asked for one puts these back as it found them.
V6_FORWARDING = [Path(f"/proc/sys/net/ipv6/conf/{scope}/forwarding") for scope in ("all", "default")]


@pytest.fixture(scope="module")
def server(git_server: GitServer, agent_image: str):
    """(IPv4 address, IPv6 address, IPv6 network) of the listening server."""
    suffix = uuid.uuid4().hex[:4]
    name, v6_network = f"listener-{git_server.name}", f"agentfleet-e2e-v6-{suffix}"
    forwarding = {path: path.read_text() for path in V6_FORWARDING}
    docker("network", "create", "--ipv6", "--subnet", V6_SUBNET.format(suffix), "--label", TEST_LABEL, v6_network)
    docker("run", "-d", "--name", name, "--network", git_server.network, "--label", TEST_LABEL,
           "--entrypoint", "python3", agent_image, "-c", SERVER)
    try:
        docker("network", "connect", v6_network, name)
        v4 = docker("inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{git_server.network}").IPAddress}}}}', name)
        v6 = docker("inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{v6_network}").GlobalIPv6Address}}}}', name)
        yield v4, v6, v6_network
    finally:
        docker("rm", "-f", name, check=False)
        docker("network", "rm", v6_network, check=False)
        for path, value in forwarding.items():
            path.write_text(value)


@pytest.fixture(scope="module")
def host_listeners():
    """A service on the host's loopback, and one on every address (the positive control)."""
    sockets = []
    for address in ("127.0.0.1", "0.0.0.0"):
        listener = socket.socket()
        listener.bind((address, 0))
        listener.listen()
        sockets.append(listener)

        def serve(s=listener):
            while True:
                try:
                    connection, _ = s.accept()
                except OSError:
                    return
                connection.sendall(b"host service\n")
                connection.close()

        threading.Thread(target=serve, daemon=True).start()
    yield [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()


@pytest.fixture(scope="module")
def fleet(git_server: GitServer, server, make_stack):
    v4, v6, v6_network = server
    stack: FleetStack = make_stack("isolation")
    networks = [git_server.network, v6_network]
    identity = lambda name: {"name": name.title(), "email": f"{name}@fleet.test"}  # noqa: E731
    stack.set_fleet({"attach_networks": networks, "agents": [
        {"name": "locked", "identity": identity("locked"), "allow": [f"{v4}:9999/udp", f"[{v6}]:8080"]},
        {"name": "peer", "identity": identity("peer")},
        {"name": "free", "identity": identity("free"), "egress": "open"},
    ]})
    with Fleet.from_outputs(stack.up(), stack.name) as client:
        yield stack, client


def tcp(client: Fleet, agent: str, address: str, port: int) -> bool:
    """Whether the agent opens a TCP connection and reads the greeting."""
    done = client.agent(agent).run(
        f"python3 -c 'import socket; s = socket.create_connection((\"{address}\", {port}), 5); print(s.recv(64))'",
        timeout=60)
    assert done.ok or "Error" in done.stderr, (address, port, done.stderr)
    return done.ok


def udp(client: Fleet, agent: str, address: str, port: int) -> bool:
    """Whether the agent's datagram gets the echo back."""
    family = "AF_INET6" if ":" in address else "AF_INET"
    done = client.agent(agent).run(
        f"python3 -c 'import socket; s = socket.socket(socket.{family}, socket.SOCK_DGRAM); s.settimeout(3); "
        f"s.sendto(b\"ping\", (\"{address}\", {port})); print(s.recv(64))'", timeout=60)
    return done.ok


def test_udp_is_restricted_and_an_udp_entry_opens_exactly_its_port(fleet, server):
    _, client = fleet
    v4, v6, _ = server
    assert udp(client, "locked", v4, 9999)
    assert not udp(client, "locked", v4, 9998)
    assert not udp(client, "locked", v6, 9999)  # the entry names the IPv4 address only
    assert not tcp(client, "locked", v4, 8080)  # nor TCP
    assert not udp(client, "peer", v4, 9999)
    assert udp(client, "free", v4, 9998)


def test_ipv6_is_restricted_and_an_ipv6_entry_opens_exactly_its_port(fleet, server):
    _, client = fleet
    v4, v6, _ = server
    assert tcp(client, "locked", v6, 8080)
    assert not tcp(client, "locked", v6, 8081)
    assert not udp(client, "locked", v6, 9998)
    assert not tcp(client, "peer", v6, 8080)
    assert tcp(client, "free", v6, 8081)


def test_an_agent_does_not_reach_another_agents_sshd(fleet):
    stack, client = fleet
    network = f"agentfleet-{stack.name}"
    # The peer's address is its policy container's, whose network namespace it shares.
    peer = docker("inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}',
                  f"agentfleet-{stack.name}-peer-policy")
    assert not tcp(client, "locked", peer, 22)
    assert tcp(client, "free", peer, 22)  # sshd is there: the refusal is the policy's


def test_an_agent_does_not_reach_the_hosts_loopback_services(fleet, host_listeners):
    stack, client = fleet
    loopback_port, any_port = host_listeners
    gateway = docker("network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", f"agentfleet-{stack.name}")
    for address in (gateway, "127.0.0.1"):
        assert not tcp(client, "locked", address, loopback_port)
    assert not tcp(client, "locked", gateway, any_port)
    assert tcp(client, "free", gateway, any_port)  # the host answers there: the refusal is the policy's
