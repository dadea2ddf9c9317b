"""One fleet over three Docker engines, for real: the local one and two remote hosts of the test
rig (network namespaces with their own dockerd and sshd, tests/e2e/remote_hosts.py), reached over
ssh:// with pinned host keys. The real Pulumi engine, real sshd and git in every agent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pulumi import automation as auto

from agentfleet import Fleet
from tests.e2e.remote_hosts import RemoteHosts
from tests.e2e.support import FleetStack, docker

PLACED = {"here": "local", "there-1": "host-1", "there-2": "host-2"}


def fleet_config(rig: RemoteHosts, key_file: Path, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    hosts = {host.name: {"address": host.url, "known_hosts": [host.known_hosts], "identity_file": str(key_file)}
             for host in (rig.host("host-1"), rig.host("host-2"))}
    agents = [{"name": name, "host": host} for name, host in PLACED.items()]
    agents += [{"name": name} for name in extra]
    return {
        "hosts": hosts,
        "defaults": {"resources": {"cpus": 0.5, "memory": "192m", "pids": 128}},
        "agents": [{**agent, "identity": {"name": agent["name"].title(), "email": f"{agent['name']}@fleet.test"}}
                   for agent in agents],
    }


@pytest.fixture(scope="module")
def fleet(remote_hosts: RemoteHosts, make_stack, tmp_path_factory, agent_image):
    key_file = tmp_path_factory.mktemp("operator") / "id_ed25519"
    key_file.write_text(remote_hosts.operator_key)
    key_file.chmod(0o600)
    stack: FleetStack = make_stack("hosts")
    stack.set_fleet(fleet_config(remote_hosts, key_file))
    outputs = stack.up()
    yield stack, outputs, key_file


def agents_on(rig: RemoteHosts, host: str, stack: FleetStack) -> list[str]:
    """The stack's agent containers on a host (labelled with their agent; policy containers are not)."""
    labels = [f"agentfleet.stack={stack.name}", "agentfleet.agent"]
    if host == "local":
        filters = [arg for label in labels for arg in ("--filter", f"label={label}")]
        return sorted(docker("ps", "-a", *filters, "--format", "{{.Names}}").split())
    engine = rig.host(host).local_docker()
    return sorted(c.name for c in engine.containers.list(all=True, filters={"label": labels}))


def test_each_agent_answers_git_over_ssh_on_its_hosts_address(fleet, remote_hosts):
    stack, outputs, _ = fleet
    agents = outputs["agents"]
    assert agents["here"]["host"] == "127.0.0.1"
    for name in ("there-1", "there-2"):
        assert agents[name]["host"] == remote_hosts.host(PLACED[name]).address
    with Fleet.from_outputs(outputs, stack.name) as client:
        for name in PLACED:
            result = client.agent(name).run(
                "git init -q work && cd work && git commit -q --allow-empty -m first && git log -1 --format=%ae",
                timeout=60)
            assert result.ok and result.stdout.strip() == f"{name}@fleet.test", (name, result.stderr)


def test_each_host_runs_only_its_own_agents(fleet, remote_hosts):
    stack, _, _ = fleet
    for name, host in PLACED.items():
        assert agents_on(remote_hosts, host, stack) == [f"agentfleet-{stack.name}-{name}"]


def test_with_a_host_down_preview_warns_and_up_refuses_naming_it_and_touches_nothing(fleet, remote_hosts):
    stack, outputs, _ = fleet
    before = {host: agents_on(remote_hosts, host, stack) for host in ("local", "host-1")}
    ids = docker("inspect", "-f", "{{.Id}}", f"agentfleet-{stack.name}-here")
    remote_hosts.stop("host-2")
    try:
        preview = stack.stack.preview(on_output=lambda _: None)
        assert '`pulumi up` will refuse this: stack' in preview.stdout and 'host "host-2"' in preview.stdout
        with pytest.raises(auto.CommandError) as refused:
            stack.stack.up(on_output=lambda _: None)
        message = str(refused.value)
        assert 'host "host-2"' in message and "agents there-2" in message
        assert {host: agents_on(remote_hosts, host, stack) for host in ("local", "host-1")} == before
        assert docker("inspect", "-f", "{{.Id}}", f"agentfleet-{stack.name}-here") == ids
    finally:
        remote_hosts.start_again("host-2")
    assert stack.up() == outputs


def test_destroy_leaves_every_host_clean(fleet, remote_hosts):
    stack, _, _ = fleet
    stack.destroy()
    label = f"agentfleet.stack={stack.name}"
    for host in ("host-1", "host-2"):
        engine = remote_hosts.host(host).local_docker()
        assert engine.containers.list(all=True, filters={"label": label}) == []
        assert engine.volumes.list(filters={"label": label}) == []
        assert engine.networks.list(filters={"label": label}) == []
    assert agents_on(remote_hosts, "local", stack) == []
