"""The policy out of the agent's reach, for real: root inside a Docker agent's container (`docker
exec -u root`) can neither list, flush nor change the egress policy, nor kill its resolver, nor
send DNS past it by pointing /etc/resolv.conf elsewhere, nor change the record of refusals. The
policy lives in the agent's policy container, whose network namespace the agent's container
joins; a restarted agent keeps it, and a removed policy container is drift that `pulumi up` heals.

The agent's remote is a name served by a DNS server the test controls (test_egress_names'
DnsServer, asked through `dns`), so every check below could fail: were root exempt, as it was
while the policy ran in the agent's own container, its query would reach that server's log.
"""

from __future__ import annotations

import time

import pytest

from agentfleet import Fleet, Unreachable
from components.keys import generate_ed25519
from components.backends.docker.policy import POLICY_GATE
from tests.e2e.support import FleetStack, GitServer, docker, listening_server
from tests.e2e.test_egress_names import NAME, OUTSIDE, DnsServer

NET_ADMIN_BIT = 12
QUERY = ("import socket,struct,sys; q=struct.pack('!HHHHHH',7,256,1,0,0,0)+b''.join(bytes([len(p)])+p.encode() "
         "for p in sys.argv[2].split('.'))+b'\\0'+struct.pack('!HH',1,1); s=socket.socket(2,2); s.settimeout(3); "
         "s.sendto(q,(sys.argv[1],53)); print(s.recv(512)[3]&15)")


@pytest.fixture(scope="module")
def dns(git_server: GitServer, agent_image: str):
    with DnsServer(f"dns-reach-{git_server.name}", git_server.network, agent_image) as server:
        yield server


@pytest.fixture(scope="module")
def forbidden_address(git_server: GitServer, agent_image: str):
    with listening_server(git_server.network, agent_image, f"forbidden-reach-{git_server.name}", (8080,)) as address:
        yield address


@pytest.fixture(scope="module")
def fleet(git_server: GitServer, dns: DnsServer, forbidden_address: str, make_stack):
    dns.records({NAME: [git_server.address], OUTSIDE: [forbidden_address]})
    private, public = generate_ed25519("reach-deploy-key")
    git_server.authorize(public)
    known = f"{NAME} {' '.join(git_server.known_hosts_line.split()[1:])}"
    stack: FleetStack = make_stack("reach")
    stack.set_secret("deployKey", private)
    stack.set_fleet({"attach_networks": [git_server.network], "agents": [{
        "name": "boxed", "identity": {"name": "Boxed", "email": "boxed@fleet.test"},
        "remote": f"ssh://git@{NAME}/srv/git/app.git", "known_hosts": [known],
        "credential": {"ssh_key": "deployKey"}, "dns": [dns.address],
    }]})
    outputs = stack.up()
    yield stack, outputs


def agent_container(stack: FleetStack) -> str:
    return f"agentfleet-{stack.name}-boxed"


def as_root(stack: FleetStack, script: str) -> tuple[int, str]:
    """Run a shell script as root inside the agent's container: exit status and output."""
    import subprocess

    done = subprocess.run(["docker", "exec", "-u", "root", agent_container(stack), "sh", "-c", script],
                          capture_output=True, text=True)
    return done.returncode, done.stdout + done.stderr


def agent_ok(outputs: dict, stack: FleetStack, command: str, attempts: int = 120) -> bool:
    """Whether `command` succeeds as the agent over SSH (waiting for sshd after a restart)."""
    with Fleet.from_outputs(outputs, stack.name) as client:
        for _ in range(attempts):
            try:
                return client.agent("boxed").run(command, timeout=60).ok
            except Unreachable:
                client.agent("boxed").close()
                time.sleep(0.5)
    return False


def policy_in_force(stack: FleetStack) -> str:
    return docker("exec", f"{agent_container(stack)}-policy", "nft", "list", "table", "inet", "agentfleet")


def test_root_in_the_agent_holds_no_capability_over_the_network(fleet):
    stack, _ = fleet
    status, output = as_root(stack, "grep CapEff /proc/self/status")
    assert status == 0, output
    assert not int(output.split()[1], 16) & (1 << NET_ADMIN_BIT), output


@pytest.mark.parametrize("script", [
    "nft list ruleset",
    "nft flush ruleset",
    "nft delete table inet agentfleet",
    "nft add table inet mine",
    "nft add element inet agentfleet allowed4 '{ 1.2.3.4 . tcp . 8080 }'",
    "iptables -F",
    "ip link set lo down",
])
def test_root_in_the_agent_cannot_list_flush_or_change_the_policy(fleet, script):
    stack, _ = fleet
    status, output = as_root(stack, script)
    assert status != 0, f"{script!r} worked as root in the agent: {output}"
    assert "jump refuse" in policy_in_force(stack)


def test_after_roots_attempts_the_policy_holds_and_the_remote_works(fleet, forbidden_address):
    stack, outputs = fleet
    as_root(stack, "nft flush ruleset; iptables -P OUTPUT ACCEPT; true")
    assert agent_ok(outputs, stack, "git ls-remote -q origin")
    status, output = as_root(stack, f"timeout 10 bash -c 'exec 3<>/dev/tcp/{forbidden_address}/8080'")
    assert status != 0, output


def test_root_in_the_agent_cannot_see_or_kill_the_resolver(fleet):
    stack, outputs = fleet
    status, output = as_root(stack, "grep -l resolver /proc/[0-9]*/cmdline; pkill -f agentfleet; kill -9 -1; true")
    assert "resolver" not in output.replace("grep", ""), output
    policy = f"{agent_container(stack)}-policy"
    assert "resolver" in docker("exec", policy, "sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
    # `kill -9 -1` ended the agent's own processes (its sshd): the restart policy brings it back
    # in the same network namespace, and names still resolve through the resolver.
    assert agent_ok(outputs, stack, "git ls-remote -q origin")


def test_root_pointing_resolv_conf_elsewhere_gets_no_query_past_the_resolver(fleet, dns, forbidden_address):
    stack, outputs = fleet
    before = dns.queries().count(OUTSIDE)
    status, output = as_root(stack, f"cp /etc/resolv.conf /tmp/resolv.keep && echo 'nameserver {dns.address}' >/etc/resolv.conf "
                                    f"&& getent hosts {OUTSIDE}; echo exit=$?")
    assert "exit=0" not in output, output
    # A raw query to the DNS server, and one to the engine's resolver: neither gets an answer past
    # the policy (the second is the agent's own resolver's NXDOMAIN).
    status, raw = as_root(stack, f"python3 -c \"{QUERY}\" {dns.address} {OUTSIDE}")
    assert status != 0, raw
    status, engine = as_root(stack, f"python3 -c \"{QUERY}\" 127.0.0.11 {OUTSIDE}")
    assert engine.strip() == "3", engine
    # Docker's resolver also listens on a port of its own (its rules forward 53 there), open to
    # anyone who reads /proc/net/udp: closed to all but the policy's resolver.
    port = int(next(line.split()[1].split(":")[1] for line in as_root(stack, "cat /proc/net/udp")[1].splitlines()
                    if line.split()[1].startswith("0B00007F:")), 16)
    status, hidden = as_root(stack, f"python3 -c \"{QUERY.replace(',53)', f',{port})')}\" 127.0.0.11 {OUTSIDE}")
    assert status != 0, f"Docker's resolver answered on its own port {port}: {hidden}"
    assert dns.queries().count(OUTSIDE) == before, "root's query for a name outside the policy reached the DNS server"
    as_root(stack, "cat /tmp/resolv.keep >/etc/resolv.conf")
    assert agent_ok(outputs, stack, "git ls-remote -q origin")


def test_root_cannot_change_the_record_of_refusals_which_audit_still_reads(fleet, forbidden_address):
    stack, outputs = fleet
    assert not agent_ok(outputs, stack, f"timeout 10 bash -c 'exec 3<>/dev/tcp/{forbidden_address}/8080'")
    status, output = as_root(stack, "echo forged >>/var/log/agentfleet/egress/denied.jsonl")
    assert status != 0, output
    record = docker("exec", agent_container(stack), "cat", "/var/log/agentfleet/egress/denied.jsonl")
    assert f'"destination": "{forbidden_address}"' in record and "forged" not in record


def test_the_agent_boots_only_through_the_policys_gate_which_root_cannot_open(fleet):
    """The agent's container starts with its policy container, not after it: its cloud-init waits
    for the gate the policy container writes once the policy is in force, naming the network
    namespace it loaded it in. Without the gate, or with one naming another namespace, a
    (re)started agent runs no stage and no sshd; the gate back, it boots."""
    stack, outputs = fleet
    for script in (f"touch {POLICY_GATE}.forged", f"rm {POLICY_GATE}"):
        status, output = as_root(stack, script)
        assert status != 0, f"{script!r} worked as root in the agent: {output}"
    policy = f"{agent_container(stack)}-policy"
    docker("exec", policy, "rm", POLICY_GATE)
    docker("restart", agent_container(stack))
    time.sleep(3)
    status, output = as_root(stack, "ls /run/cloud-init/status.json /run/sshd.pid")
    assert status != 0 and "No such file" in output, f"the agent booted without the policy's gate: {output}"
    assert not agent_ok(outputs, stack, "true", attempts=1)
    # A gate naming another network namespace (as one left by an earlier start would) stays shut.
    docker("exec", policy, "sh", "-c", f"echo 'net:[1]' >{POLICY_GATE}")
    time.sleep(3)
    status, output = as_root(stack, "ls /run/cloud-init/status.json")
    assert status != 0 and "No such file" in output, f"a stale gate let the agent boot: {output}"
    docker("exec", policy, "sh", "-c", f"readlink /proc/self/ns/net >{POLICY_GATE}")
    assert agent_ok(outputs, stack, "git log -1 --format=%h && git ls-remote -q origin")


def test_a_restarted_agent_keeps_its_policy_and_a_removed_policy_container_is_healed(fleet, forbidden_address):
    stack, outputs = fleet
    docker("restart", agent_container(stack))
    assert agent_ok(outputs, stack, "git ls-remote -q origin")
    status, _ = as_root(stack, f"timeout 10 bash -c 'exec 3<>/dev/tcp/{forbidden_address}/8080'")
    assert status != 0
    assert set(stack.stack.preview(on_output=lambda _: None).change_summary) == {"same"}

    docker("rm", "-f", f"{agent_container(stack)}-policy")
    preview = stack.stack.preview(on_output=lambda _: None)
    assert preview.change_summary.get("update") == 1, preview.change_summary
    healed = stack.up()
    assert healed["agents"]["boxed"]["port"] == outputs["agents"]["boxed"]["port"]
    assert agent_ok(healed, stack, "git ls-remote -q origin")  # the same pinned host key
    assert "jump refuse" in policy_in_force(stack)
    status, _ = as_root(stack, f"timeout 10 bash -c 'exec 3<>/dev/tcp/{forbidden_address}/8080'")
    assert status != 0
