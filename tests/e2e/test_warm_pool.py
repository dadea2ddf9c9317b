"""A warm pool, end to end: real `pulumi up`, real containers, sshd and git.

A fleet of one agent with `pool: {size: 2}`; adding two agents claims the two members (the same
containers, now with their identities, answering git over SSH with their pinned keys, cloned,
their egress restricted); the same `up` refills the pool; a member removed behind Pulumi's back
is booted again by `up`; destroy leaves nothing of the stack.
"""

from __future__ import annotations

import io
import json
import subprocess
from typing import Any

import pytest

from agentfleet import Fleet
from agentfleet.cli import main as cli
from components.keys import generate_ed25519
from tests.e2e.support import FleetStack, GitServer, docker, docker_objects, run_ok, listening_server

POOL = 2


def fleet_config(git: GitServer, agents: list[str]) -> dict[str, Any]:
    return {
        "attach_networks": [git.network],
        "pool": {"size": POOL},
        "defaults": {"resources": {"cpus": 0.5, "memory": "256m", "pids": 128}, "remote": git.url,
                     "known_hosts": [git.known_hosts_line], "credential": {"ssh_key": "deployKey"}},
        "agents": [{"name": name, "identity": {"name": f"Agent {name}", "email": f"{name}@fleet.test"}}
                   for name in agents],
    }


# How many processes of agentfleet-cloud-init run in a container, and its claim socket if there.
RESIDENT = ("for p in /proc/[0-9]*; do tr '\\0' ' ' <$p/cmdline; echo; done 2>/dev/null | "
            "grep -c '^/usr/bin/python3 /usr/local/sbin/[a]gentfleet-cloud-init' | tr '\\n' ' '; "
            "ls /run/agentfleet/claim.sock 2>/dev/null || true")


def members(stack: FleetStack) -> dict[str, str]:
    """The pool's unclaimed members: container name -> id."""
    names = [n for n in docker_objects("container", f"agentfleet.pool=agentfleet-{stack.name}-pool")
             if "." in n and not n.endswith("-policy")]
    return {name: docker("inspect", "-f", "{{.Id}}", name) for name in names}


def container_id(stack: FleetStack, agent: str) -> str:
    return docker("inspect", "-f", "{{.Id}}", f"agentfleet-{stack.name}-{agent}")


@pytest.fixture(scope="module")
def forbidden_address(git_server: GitServer, agent_image: str):
    with listening_server(git_server.network, agent_image, f"forbidden-pool-{git_server.name}", (22,)) as address:
        yield address


@pytest.fixture(scope="module")
def pooled(git_server: GitServer, make_stack):
    stack: FleetStack = make_stack("pool")
    private, public = generate_ed25519("pool-deploy-key")
    git_server.authorize(public)
    stack.set_secret("deployKey", private)
    stack.set_fleet(fleet_config(git_server, ["first"]))
    stack.up()
    warm = members(stack)
    stack.set_fleet(fleet_config(git_server, ["first", "second", "third"]))
    outputs = stack.up()
    with Fleet.from_outputs(outputs, stack.name) as client:
        yield stack, warm, outputs, client


def test_new_agents_are_the_warm_members(pooled):
    stack, warm, _, _ = pooled
    assert len(warm) == POOL
    claimed = {container_id(stack, agent) for agent in ("second", "third")}
    assert claimed == set(warm.values())


def test_claimed_agents_answer_git_over_ssh_with_their_identity_and_clone(pooled):
    _, _, outputs, client = pooled
    for agent in ("second", "third"):
        # The client pins the agent's host key strictly (its known_hosts line from the outputs).
        assert outputs["agents"][agent]["known_hosts"].startswith(f"[127.0.0.1]:{outputs['agents'][agent]['port']} ")
        assert run_ok(client, agent, "git config user.email") == f"{agent}@fleet.test"
        assert run_ok(client, agent, "git rev-parse --abbrev-ref HEAD") == f"agent/{agent}"
        assert run_ok(client, agent, "cat README") == "shared project"
        run_ok(client, agent, f"git commit -q --allow-empty -m 'from {agent}' && git push -q origin HEAD")


def test_a_claim_is_applied_by_the_members_resident_cloud_init_which_then_ends(pooled):
    """Each member keeps cloud-init imported and waiting for its one claim (images/agentfleet-cloud-init);
    once claimed, nothing of it stays: no socket, no waiting process. Unclaimed members still wait."""
    stack, _, _, _ = pooled
    for agent in ("second", "third"):
        name = f"agentfleet-{stack.name}-{agent}"
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True, check=True)
        assert "applied by this member's resident cloud-init" in logs.stdout + logs.stderr
        assert docker("exec", name, "sh", "-c", RESIDENT) == "0"
    for member in members(stack):
        assert docker("exec", member, "sh", "-c", RESIDENT) == "1 /run/agentfleet/claim.sock"


def test_claimed_agents_egress_is_restricted(pooled, forbidden_address):
    _, _, _, client = pooled
    result = client.agent("second").run(f"timeout 10 bash -c 'exec 3<>/dev/tcp/{forbidden_address}/22'", timeout=60)
    assert not result.ok, "a claimed agent reached a host its policy does not allow"


def test_ls_doctor_and_exec_treat_claimed_agents_like_any(pooled, tmp_path):
    _, _, outputs, _ = pooled
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))

    def run(*argv: str) -> tuple[int, str]:
        out, err = io.StringIO(), io.StringIO()
        status = cli(["--outputs", str(path), *argv], stdout=out, stderr=err, environ={})
        return status, out.getvalue() + err.getvalue()

    status, listing = run("ls")
    assert status == 0 and all(agent in listing for agent in ("first", "second", "third")), listing
    status, report = run("doctor", "third")
    assert status == 0, report
    status, email = run("exec", "second", "--", "git", "log", "-1", "--format=%ae")
    assert status == 0 and email.strip() == "second@fleet.test", email


def test_the_pool_is_refilled_in_the_same_up(pooled):
    stack, warm, _, _ = pooled
    now = members(stack)
    assert len(now) == POOL and not set(now) & set(warm)


def test_nothing_drifts_after_the_claims_and_a_second_up_does_nothing(pooled):
    stack, _, _, _ = pooled
    stack.stack.refresh(on_output=lambda _: None)
    preview = stack.stack.preview(on_output=lambda _: None)
    assert set(preview.change_summary) == {"same"}, preview.change_summary
    result = stack.stack.up(on_output=lambda _: None)
    assert set(result.summary.resource_changes) == {"same"}, result.summary.resource_changes


def test_a_member_removed_behind_pulumis_back_is_booted_again(pooled):
    stack, _, _, _ = pooled
    gone = sorted(members(stack))[0]
    docker("rm", "-f", gone, f"{gone}-policy")
    stack.stack.refresh(on_output=lambda _: None)
    result = stack.stack.up(on_output=lambda _: None)
    assert result.summary.resource_changes.get("update") == 1, result.summary.resource_changes
    now = members(stack)
    assert len(now) == POOL and gone not in now


def test_preview_shows_the_pool_and_a_new_size(pooled, git_server):
    stack, _, _, _ = pooled
    config = fleet_config(git_server, ["first", "second", "third"])
    config["pool"] = {"size": POOL + 1}
    stack.set_fleet(config)
    try:
        preview = stack.pulumi("preview", "--diff")
    finally:
        stack.set_fleet(fleet_config(git_server, ["first", "second", "third"]))
    assert "agentfleet:index:DockerPool" in preview and "fleet-pool" in preview, preview
    assert f"size: {POOL} => {POOL + 1}" in preview, preview


def test_a_claimed_agents_workspace_outlives_its_replacement(pooled, git_server, agent_image):
    stack, _, _, client = pooled
    run_ok(client, "second", "echo keep-me > notes.txt")
    before = container_id(stack, "second")
    retagged = f"{agent_image.rsplit(':', 1)[0]}:pool-e2e"
    docker("tag", agent_image, retagged)  # the same image under another name: replaces the container
    try:
        config = fleet_config(git_server, ["first", "second", "third"])
        config["agents"][1]["image"] = retagged
        stack.set_fleet(config)
        outputs = stack.up()
        assert container_id(stack, "second") != before
        with Fleet.from_outputs(outputs, stack.name) as fresh:
            assert run_ok(fresh, "second", "cat notes.txt") == "keep-me"
            assert run_ok(fresh, "second", "git config user.email") == "second@fleet.test"
    finally:
        stack.set_fleet(fleet_config(git_server, ["first", "second", "third"]))
        stack.up()
        docker("rmi", retagged)


def test_destroy_leaves_nothing(pooled):
    stack, _, _, client = pooled
    client.close()
    stack.destroy()
    label = f"agentfleet.stack={stack.name}"
    for kind in ("container", "volume", "network"):
        assert docker_objects(kind, label) == [], kind
