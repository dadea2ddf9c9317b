"""Egress by name, for real: the agent's remote is a name served by a DNS server the test
controls (tests/e2e/dns_server.py, on the test network; the agent asks it through `dns`). The
agent pushes; the record moves to a second git server; within the record's TTL the agent pushes
there, and the old address is no longer allowed once its admission ran out. A name outside the
policy does not resolve and its query never reaches the DNS server; neither does a raw query
sent straight to it.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from agentfleet import Fleet
from components.keys import generate_ed25519
from tests.e2e.support import PROJECT_ROOT, TEST_LABEL, FleetStack, GitServer, docker, start_git_server

NAME = "git.fleet.test"
OUTSIDE = "outside.fleet.test"
TTL_S = 3
# The resolver admits an address for at least this long (cloud-init/agentfleet-resolver MIN_TTL).
MIN_ADMISSION_S = 10


class DnsServer:
    """A DNS server the test controls, in a container on `network`; `with` removes it at the end."""

    def __init__(self, name: str, network: str, image: str, publish_on: str | None = None) -> None:
        """`publish_on`: an address of this machine whose port 53 (UDP and TCP) it answers on too."""
        self.name = name
        publish = ["--publish", f"{publish_on}:53:53/udp", "--publish", f"{publish_on}:53:53/tcp"] if publish_on else []
        docker("run", "-d", "--name", name, "--network", network, "--label", TEST_LABEL, *publish,
               "--entrypoint", "sleep", image, "infinity")
        docker("exec", name, "mkdir", "-p", "/srv/dns")
        docker("cp", str(PROJECT_ROOT / "cloud-init" / "agentfleet-resolver"), f"{name}:/srv/dns/agentfleet_resolver.py")
        docker("cp", str(PROJECT_ROOT / "cloud-init" / "agentfleet_denied.py"), f"{name}:/srv/dns/agentfleet_denied.py")
        docker("cp", str(PROJECT_ROOT / "tests" / "e2e" / "dns_server.py"), f"{name}:/srv/dns/dns_server.py")
        docker("exec", "-i", name, "sh", "-c", "cat >/srv/dns/ttl", stdin=str(TTL_S))
        self.records({})
        docker("exec", "-d", name, "sh", "-c", "python3 /srv/dns/dns_server.py >/srv/dns/log 2>&1")
        self.address = docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name)

    def records(self, records: dict[str, list[str]]) -> None:
        docker("exec", "-i", self.name, "sh", "-c", "cat >/srv/dns/records.new && mv /srv/dns/records.new /srv/dns/records.json",
               stdin=json.dumps(records))

    def queries(self) -> list[str]:
        return [line.split()[1] for line in docker("exec", self.name, "cat", "/srv/dns/log").splitlines()
                if line.startswith("query ")]

    def __enter__(self) -> DnsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        docker("rm", "-f", self.name, check=False)


@pytest.fixture(scope="module")
def second_server(git_server: GitServer, agent_image: str):
    """Another address of the same forge: its own repository, the first server's host keys."""
    server = start_git_server(agent_image)
    try:
        keys = subprocess.run(["docker", "exec", git_server.name, "sh", "-c", "tar -cf - /etc/ssh/ssh_host_*"],
                              capture_output=True, check=True).stdout
        subprocess.run(["docker", "exec", "-i", server.name, "tar", "-xf", "-", "-C", "/"], input=keys, check=True)
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="module")
def dns(git_server: GitServer, agent_image: str):
    with DnsServer(f"dns-{git_server.name}", git_server.network, agent_image) as server:
        yield server


@pytest.fixture(scope="module")
def fleet(git_server: GitServer, second_server: GitServer, dns: DnsServer, make_stack):
    dns.records({NAME: [git_server.address], OUTSIDE: [second_server.address]})
    private, public = generate_ed25519("names-deploy-key")
    for server in (git_server, second_server):
        server.authorize(public)
    known = f"{NAME} {' '.join(git_server.known_hosts_line.split()[1:])}"
    stack: FleetStack = make_stack("names")
    stack.set_secret("deployKey", private)
    stack.set_fleet({"attach_networks": [git_server.network, second_server.network], "agents": [{
        "name": "named", "identity": {"name": "Named", "email": "named@fleet.test"},
        "remote": f"ssh://git@{NAME}/srv/git/app.git", "known_hosts": [known],
        "credential": {"ssh_key": "deployKey"}, "dns": [dns.address],
    }]})
    with Fleet.from_outputs(stack.up(), stack.name) as client:
        yield client


def run(client: Fleet, command: str):
    return client.agent("named").run(command, timeout=60)


def reach(client: Fleet, address: str, port: int = 22) -> bool:
    return run(client, f"timeout 10 bash -c 'exec 3<>/dev/tcp/{address}/{port}'").ok


def test_the_record_moves_and_the_agent_follows_it_within_its_ttl(fleet, git_server, second_server, dns):
    first = run(fleet, "git commit -q --allow-empty -m one && git push -q origin HEAD:refs/heads/first")
    assert first.ok, first.stderr
    assert "first" in git_server.branch_authors()

    dns.records({NAME: [second_server.address]})
    moved = time.monotonic()
    deadline = moved + TTL_S + 5
    while True:
        second = run(fleet, "git push -q origin HEAD:refs/heads/second")
        if second.ok or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert second.ok, second.stderr
    assert "second" in second_server.branch_authors() and "second" not in git_server.branch_authors()
    assert time.monotonic() - moved <= TTL_S + 5

    # The old address was admitted for its record's TTL (at least MIN_ADMISSION_S), then no more.
    deadline = time.monotonic() + MIN_ADMISSION_S + 10
    while reach(fleet, git_server.address) and time.monotonic() < deadline:
        time.sleep(1)
    assert not reach(fleet, git_server.address)
    assert reach(fleet, NAME)  # a lookup admits the address the name has now
    assert not reach(fleet, git_server.address)


def test_a_name_outside_the_policy_does_not_resolve_and_its_query_never_leaves(fleet, dns):
    looked_up = run(fleet, f"getent hosts {OUTSIDE}")
    assert not looked_up.ok and not looked_up.stdout
    assert NAME in dns.queries()  # the server logs what reaches it...
    assert OUTSIDE not in dns.queries()  # ...and this never did


def test_raw_dns_to_any_other_address_is_rejected(fleet, dns):
    probe = "raw-probe.fleet.test"
    # A well-formed query, sent straight to the DNS server the resolver itself asks.
    sent = run(fleet, f"""python3 - <<'EOF'
import socket, struct
query = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
query += b"".join(bytes([len(p)]) + p.encode() for p in "{probe}".split(".")) + b"\\0" + struct.pack("!HH", 1, 1)
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(3)
try:
    sock.sendto(query, ("{dns.address}", 53))
    print("answered", sock.recv(512))
except OSError as error:
    print("refused", error)
EOF""")
    assert sent.stdout.startswith("refused"), sent.stdout + sent.stderr
    assert probe not in dns.queries()
