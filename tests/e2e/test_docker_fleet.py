"""A two-agent Docker fleet, end to end: real `pulumi up`, real containers, sshd and git.

agent-1 authenticates to the git server with a key given in config (a Pulumi secret), so its
workspace is cloned on first boot; agent-2 uses a key the fleet generates, whose public half the
outputs give to register as a deploy key.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from agentfleet import Fleet
from components.keys import generate_ed25519
from tests.e2e.support import FleetStack, GitServer, docker, docker_objects, run_ok
from tests.key_marks import PRIVATE_KEY, PRIVATE_KEY_BEGIN

def fleet_config(git: GitServer, agent_1_name: str = "Agent One") -> dict[str, Any]:
    remote = {"remote": git.url, "known_hosts": [git.known_hosts_line]}
    return {
        "attach_networks": [git.network],
        "defaults": {"resources": {"cpus": 0.5, "memory": "256m", "pids": 128}},
        "agents": [
            {"name": "agent-1", "identity": {"name": agent_1_name, "email": "agent-1@fleet.test"},
             "credential": {"ssh_key": "agent1RemoteKey"}, **remote},
            {"name": "agent-2", "identity": {"name": "Agent Two", "email": "agent-2@fleet.test"},
             "retain_workspace": True, **remote},
        ],
    }


@pytest.fixture(scope="module")
def fleet(git_server: GitServer, make_stack):
    stack: FleetStack = make_stack("docker")
    remote_private, remote_public = generate_ed25519("agent-1-deploy-key")
    git_server.authorize(remote_public)
    stack.set_secret("agent1RemoteKey", remote_private)
    stack.set_fleet(fleet_config(git_server))
    outputs = stack.up()
    with Fleet.from_outputs(outputs, stack.name) as client:
        yield stack, outputs, client, remote_private


def container_id(stack: FleetStack, agent: str) -> str:
    return docker("inspect", "-f", "{{.Id}}", f"agentfleet-{stack.name}-{agent}")


def test_outputs_have_one_shape_per_agent(fleet):
    stack, outputs, _, _ = fleet
    agents = outputs["agents"]
    assert set(agents) == {"agent-1", "agent-2"}
    for name, agent in agents.items():
        assert agent["host"] == "127.0.0.1" and agent["user"] == "agent"
        assert agent["known_hosts"].startswith(f"[127.0.0.1]:{agent['port']} ssh-ed25519 ")
        assert f"Host {name}\n" in agent["ssh_config"]
        assert PRIVATE_KEY_BEGIN in outputs["agent_private_keys"][name]
    assert agents["agent-1"]["remote_public_key"] is None
    assert agents["agent-2"]["remote_public_key"].startswith("ssh-ed25519 ")


def test_each_agent_reports_its_own_identity(fleet):
    _, _, client, _ = fleet
    assert run_ok(client, "agent-1", "git config user.name") == "Agent One"
    assert run_ok(client, "agent-1", "git config user.email") == "agent-1@fleet.test"
    assert run_ok(client, "agent-2", "git config user.email") == "agent-2@fleet.test"


def test_agents_commit_and_push_their_own_branches(fleet, git_server: GitServer):
    _, outputs, client, _ = fleet
    # agent-1's workspace was cloned at first boot with its configured key, on its branch.
    assert run_ok(client, "agent-1", "git rev-parse --abbrev-ref HEAD") == "agent/agent-1"
    # agent-2's generated key becomes a deploy key; then it clones like any agent would.
    git_server.authorize(outputs["agents"]["agent-2"]["remote_public_key"])
    run_ok(client, "agent-2", f"git clone -q {git_server.url} . && git checkout -q -b agent/agent-2")
    for agent in ("agent-1", "agent-2"):
        run_ok(client, agent, f"echo {agent} > {agent}.txt && git add . && "
                              f"git commit -q -m 'work of {agent}' && git push -q origin HEAD")
    authors = git_server.branch_authors()
    assert authors["agent/agent-1"] == "<agent-1@fleet.test>"
    assert authors["agent/agent-2"] == "<agent-2@fleet.test>"


def test_agents_cannot_read_each_others_keys_or_workspace(fleet):
    _, outputs, client, remote_private = fleet
    agent_2_port = outputs["agents"]["agent-2"]["port"]
    # agent-1's key is in agent-1 only; agent-2's machine has no such file and no access to it.
    assert PRIVATE_KEY in run_ok(client, "agent-1", "cat ~/.ssh/id_remote")
    result = client.agent("agent-2").run("cat ~/.ssh/id_remote", timeout=30)
    assert not result.ok or remote_private.strip() not in result.stdout
    assert not client.agent("agent-2").run("test -e agent-1.txt", timeout=30).ok
    # The operator key of agent-1 does not open agent-2.
    key_file = "/tmp/agentfleet-e2e-agent-1-key"
    with open(key_file, "w") as handle:
        handle.write(outputs["agent_private_keys"]["agent-1"])
    subprocess.run(["chmod", "600", key_file], check=True)
    login = subprocess.run(
        ["ssh", "-i", key_file, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-p", str(agent_2_port), "agent@127.0.0.1", "true"], capture_output=True)
    assert login.returncode == 255


def test_agent_runs_without_privileges(fleet):
    _, _, client, _ = fleet
    status = run_ok(client, "agent-1", "id -u; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status")
    assert status.split() == ["1000", "CapEff:", "0000000000000000", "NoNewPrivs:", "1"]


def test_second_preview_shows_no_changes(fleet):
    stack, _, _, _ = fleet
    preview = stack.stack.preview(on_output=lambda _: None)
    assert set(preview.change_summary) == {"same"}, preview.change_summary


def test_no_private_key_in_state_docker_inspect_or_process_list(fleet):
    stack, outputs, _, remote_private = fleet
    secrets = [remote_private.strip(), *[k.strip() for k in outputs["agent_private_keys"].values()]]
    state = stack.export()
    inspected = docker("inspect", *docker_objects("container", f"agentfleet.stack={stack.name}"))
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    for text, where in ((state, "pulumi stack export"), (inspected, "docker inspect"), (processes, "ps")):
        assert f"{PRIVATE_KEY}-----\n" not in text.replace("\\n", "\n"), f"a private key is readable in {where}"
        for secret in secrets:
            # The first body line is the same for every OpenSSH ed25519 key; the rest is the key.
            for line in secret.splitlines()[2:-1]:
                assert line not in text, f"a private key is readable in {where}"


def test_changing_one_identity_updates_only_that_agent_in_place_and_keeps_its_workspace(fleet, git_server):
    stack, _, client, _ = fleet
    run_ok(client, "agent-1", "echo keep-me > notes.txt")
    before = {agent: container_id(stack, agent) for agent in ("agent-1", "agent-2")}
    stack.set_fleet(fleet_config(git_server, agent_1_name="Agent One Renamed"))
    result = stack.stack.up(on_output=lambda _: None)
    outputs = {key: value.value for key, value in result.outputs.items()}
    assert result.summary.resource_changes == {"same": result.summary.resource_changes["same"], "update": 1}
    assert {agent: container_id(stack, agent) for agent in ("agent-1", "agent-2")} == before
    with Fleet.from_outputs(outputs, stack.name) as fresh:
        assert run_ok(fresh, "agent-1", "git config user.name") == "Agent One Renamed"
        assert run_ok(fresh, "agent-1", "cat notes.txt") == "keep-me"
        assert run_ok(fresh, "agent-1", "git log -1 --format=%ae") == "agent-1@fleet.test"


def test_destroy_leaves_nothing_but_the_retained_workspace(fleet):
    stack, _, client, _ = fleet
    client.close()
    stack.destroy()
    label = f"agentfleet.stack={stack.name}"
    assert docker_objects("container", label) == []
    assert docker_objects("network", label) == []
    # agent-2 asked for retain_workspace: its volume stays, with the work in it, and can be removed.
    assert docker_objects("volume", label) == [f"agentfleet-{stack.name}-agent-2-workspace"]
    docker("volume", "rm", f"agentfleet-{stack.name}-agent-2-workspace")
    assert docker_objects("volume", label) == []
