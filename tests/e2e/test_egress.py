"""The egress policy, for real: a restricted agent reaches its git server and nothing else, and
cannot lift the restriction itself; an agent with `egress: open` reaches the other server too.

The forbidden server is a container on the same test network at another address, listening
(sshd) on 22, 443 and 8080, so that every refusal below is the policy's and not a closed port.
"""

from __future__ import annotations

import time

import pytest

from agentfleet import Fleet
from components.keys import generate_ed25519
from tests.e2e.support import FleetStack, GitServer, docker, listening_server

@pytest.fixture(scope="module")
def forbidden_address(git_server: GitServer, agent_image: str):
    with listening_server(git_server.network, agent_image, f"forbidden-{git_server.name}", (22, 443, 8080)) as address:
        yield address


@pytest.fixture(scope="module")
def fleet(git_server: GitServer, forbidden_address: str, make_stack):
    stack: FleetStack = make_stack("egress")
    private, public = generate_ed25519("egress-deploy-key")
    git_server.authorize(public)
    stack.set_secret("deployKey", private)
    common = {"remote": git_server.url, "known_hosts": [git_server.known_hosts_line],
              "credential": {"ssh_key": "deployKey"}}
    stack.set_fleet({"attach_networks": [git_server.network], "agents": [
        {"name": "locked", "identity": {"name": "Locked", "email": "locked@fleet.test"}, **common},
        {"name": "free", "identity": {"name": "Free", "email": "free@fleet.test"}, "egress": "open", **common},
    ]})
    outputs = stack.up()
    with Fleet.from_outputs(outputs, stack.name) as client:
        yield stack, client


def run(client: Fleet, agent: str, command: str):
    return client.agent(agent).run(command, timeout=60)


def tcp_connect(address: str, port: int) -> str:
    return f"timeout 10 bash -c 'exec 3<>/dev/tcp/{address}/{port}'"


def test_restricted_agent_pushes_to_its_remote(fleet):
    _, client = fleet
    result = run(client, "locked", "git commit -q --allow-empty -m 'through the policy' && git push -q origin HEAD")
    assert result.ok, result.stderr


def test_restricted_agent_cannot_reach_another_server_by_ssh_https_or_tcp(fleet, forbidden_address):
    _, client = fleet
    ssh = run(client, "locked", f"ssh -o BatchMode=yes -o ConnectTimeout=10 -o StrictHostKeyChecking=no git@{forbidden_address} true")
    assert ssh.exit_status == 255 and "Connection refused" in ssh.stderr, ssh.stderr
    https = run(client, "locked", f"GIT_SSL_NO_VERIFY=1 git ls-remote https://{forbidden_address}/app.git")
    assert not https.ok and ("Failed to connect" in https.stderr or "Connection refused" in https.stderr), https.stderr
    assert not run(client, "locked", tcp_connect(forbidden_address, 8080)).ok


def test_open_agent_reaches_the_same_server(fleet, forbidden_address):
    _, client = fleet
    assert run(client, "free", tcp_connect(forbidden_address, 8080)).ok
    ssh = run(client, "free", f"ssh -o BatchMode=yes -o ConnectTimeout=10 -o StrictHostKeyChecking=no git@{forbidden_address} true")
    assert "Connection refused" not in ssh.stderr and "Permission denied" in ssh.stderr, ssh.stderr


def test_agent_user_cannot_lift_the_restriction(fleet, forbidden_address):
    _, client = fleet
    flush = run(client, "locked", "iptables -F; iptables -P OUTPUT ACCEPT; nft flush ruleset")
    assert not flush.ok
    # No proxy is involved, so unsetting proxy variables changes nothing; nor does a direct connect.
    direct = run(client, "locked", "unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY; " + tcp_connect(forbidden_address, 8080))
    assert not direct.ok
    assert run(client, "locked", "grep -E '^(CapEff|CapBnd)' /proc/self/status").stdout.split() == [
        "CapEff:", "0000000000000000", "CapBnd:", run(client, "locked", "grep CapBnd /proc/1/status").stdout.split()[1]]


def test_the_policy_comes_back_after_a_container_restart(fleet, forbidden_address):
    stack, client = fleet
    client.close()
    docker("restart", f"agentfleet-{stack.name}-locked")
    with Fleet.from_outputs(stack.outputs(), stack.name) as fresh:
        assert wait_until_ok(fresh, "locked", "git ls-remote -q origin")  # same endpoint, same pinned key
        assert not run(fresh, "locked", tcp_connect(forbidden_address, 8080)).ok


def wait_until_ok(client: Fleet, agent: str, command: str, attempts: int = 60) -> bool:
    """sshd comes back a moment after the restart (cloud-init's per-boot stages run first)."""
    from agentfleet import Unreachable

    for _ in range(attempts):
        try:
            if run(client, agent, command).ok:
                return True
        except Unreachable:
            client.agent(agent).close()
        time.sleep(0.5)
    return False


def test_preview_says_which_agent_has_open_egress(fleet):
    stack, _ = fleet
    lines: list[str] = []
    stack.stack.preview(on_output=lines.append)
    assert any("egress is open: agent free may connect to any host" in line for line in lines)
