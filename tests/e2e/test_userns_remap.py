"""Agents on a Docker engine that runs with `userns-remap`: root in their containers is an
unprivileged uid of the host. A host of the remote-host rig (tests/e2e/remote_hosts.py) started
that way, reached over ssh:// with its pinned key; a git server on this machine's engine,
published on the rig's gateway address. The real Pulumi engine, sshd and git in the agent.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentfleet import Fleet
from agentfleet.cli import main as cli
from components.cloudinit import SHARED_OBJECTS
from components.keys import generate_ed25519
from tests.e2e.remote_hosts import RemoteHost, RemoteHosts, started_rig
from tests.e2e.support import FleetStack, GitServer, last_reading, start_git_server
from tests.kubecluster.host_state import HostState

AGENT = "remapped"
PLAIN = "plain"  # on this machine's engine, which does not remap
AGENT_UID = 1000  # the agent user inside (cloud-init/agent.yaml)


@pytest.fixture(scope="module")
def rig(host_unchanged: HostState) -> Iterator[RemoteHosts]:
    with started_rig(RemoteHosts(1, remapped=frozenset({"host-1"}))) as rig:
        yield rig


@pytest.fixture(scope="module")
def git_server(rig: RemoteHosts, agent_image: str) -> Iterator[GitServer]:
    """Published on the rig's gateway: the address the remote host's containers reach this machine at."""
    server = start_git_server(agent_image, publish_on=rig.gateway)
    try:
        yield server
    finally:
        server.remove()


def fleet_config(rig: RemoteHosts, git: GitServer, key_file: Path) -> dict[str, Any]:
    host = rig.host("host-1")
    return {
        "hosts": {host.name: {"address": host.url, "known_hosts": [host.known_hosts], "identity_file": str(key_file)}},
        "shared_objects": True,  # the mirror volume too is made by a container on the remapped engine
        "defaults": {"resources": {"cpus": 0.5, "memory": "256m", "pids": 128}},
        "agents": [{"name": AGENT, "host": host.name, "identity": {"name": "Remapped", "email": "remapped@fleet.test"},
                    "remote": git.url, "known_hosts": [git.known_hosts_line], "credential": {"ssh_key": "deployKey"}},
                   {"name": PLAIN, "host": "local", "identity": {"name": "Plain", "email": "plain@fleet.test"}}],
    }


@pytest.fixture(scope="module")
def fleet(rig: RemoteHosts, git_server: GitServer, make_stack, tmp_path_factory, agent_image):
    directory = tmp_path_factory.mktemp("userns")
    key_file = directory / "id_ed25519"
    key_file.write_text(rig.operator_key)
    key_file.chmod(0o600)
    stack: FleetStack = make_stack("userns")
    private, public = generate_ed25519("userns-deploy-key")
    git_server.authorize(public)
    stack.set_secret("deployKey", private)
    stack.set_fleet(fleet_config(rig, git_server, key_file))
    try:
        yield stack, stack.up(), directory
    finally:
        stack.destroy()  # while the host is up: the session's discard comes after the rig is gone


def run_ok(outputs: dict[str, Any], stack: FleetStack, command: str) -> str:
    with Fleet.from_outputs(outputs, stack.name) as client:
        result = client.agent(AGENT).run(command, timeout=60)
    assert result.ok, f"`{command}` exited {result.exit_status}: {result.stderr}"
    return result.stdout.strip()


def container(rig: RemoteHosts, stack: FleetStack) -> dict[str, Any]:
    engine = rig.host("host-1").local_docker()
    try:
        return engine.api.inspect_container(f"agentfleet-{stack.name}-{AGENT}")
    finally:
        engine.close()


def workspace_on_host(host: RemoteHost, stack: FleetStack) -> Path:
    """The workspace volume's directory in the remapped engine's own data root (<uid>.<gid>)."""
    root = host.data_root / f"{host.remapped_root}.{host.remapped_root}"
    return root / "volumes" / f"agentfleet-{stack.name}-{AGENT}-workspace" / "_data"


def test_the_engine_remaps_and_the_agent_runs_in_a_user_namespace(fleet, rig):
    stack, outputs, _ = fleet
    host = rig.host("host-1")
    engine = host.local_docker()
    try:
        assert "name=userns" in engine.info()["SecurityOptions"]
    finally:
        engine.close()
    assert outputs["agents"][AGENT]["host"] == host.address
    # Root in the container is the remap range's first uid on the host; the agent user, 1000 above it.
    uid_map = run_ok(outputs, stack, "cat /proc/self/uid_map").split()
    assert uid_map == ["0", str(host.remapped_root), "65536"], uid_map
    assert run_ok(outputs, stack, "id -u") == str(AGENT_UID)


def test_the_workspace_is_cloned_owned_by_the_agent_and_it_pushes(fleet, rig, git_server: GitServer):
    stack, outputs, _ = fleet
    assert run_ok(outputs, stack, "git rev-parse --abbrev-ref HEAD") == f"agent/{AGENT}"
    assert run_ok(outputs, stack, "stat -c %u .") == str(AGENT_UID)
    workspace = workspace_on_host(rig.host("host-1"), stack)
    assert (workspace / ".git").stat().st_uid == rig.host("host-1").remapped_root + AGENT_UID
    run_ok(outputs, stack, "echo remapped > work.txt && git add work.txt && git commit -q -m 'work' && "
                           "git push -q origin HEAD")
    assert git_server.branch_authors()[f"agent/{AGENT}"] == "<remapped@fleet.test>"


def cli_json(directory: Path, outputs: dict[str, Any], *argv: str) -> Any:
    outputs_file = directory / "outputs.json"
    outputs_file.write_text(json.dumps(outputs))
    out, err = io.StringIO(), io.StringIO()
    assert cli(["--outputs", str(outputs_file), *argv, "--json"], out, err, {}) == 0, err.getvalue()
    return json.loads(out.getvalue()) if out.getvalue().startswith("[") else \
        [json.loads(line) for line in out.getvalue().splitlines()]


def recorded(entries: list[dict]) -> set[tuple]:
    return {(entry["protocol"], entry["destination"], entry["port"]) for entry in entries}


def test_egress_stays_restricted_and_refusals_are_on_record(fleet):
    stack, outputs, directory = fleet
    refused = run_ok(outputs, stack, "timeout 5 bash -c 'echo > /dev/tcp/1.1.1.1/443' 2>&1; echo exit=$?")
    assert refused.splitlines()[-1] != "exit=0", refused
    assert run_ok(outputs, stack, "git ls-remote origin | wc -l") != "0"
    # nflog hands the packet over within a tenth of a second; a loaded machine writes later.
    entries = last_reading(lambda: cli_json(directory, outputs, "audit", "--denied", AGENT),
                           lambda seen: ("tcp", "1.1.1.1", 443) in recorded(seen), 30)
    assert ("tcp", "1.1.1.1", 443) in recorded(entries), entries


def test_the_workspace_borrows_from_the_shared_objects(fleet):
    stack, outputs, _ = fleet
    # --reference-if-able: a mirror the agent could not read would leave no alternates, silently.
    assert run_ok(outputs, stack, "cat .git/objects/info/alternates") == f"{SHARED_OBJECTS}/objects"


def test_ls_and_doctor_say_the_agent_runs_in_a_user_namespace(fleet):
    stack, outputs, directory = fleet
    listed = cli_json(directory, outputs, "ls")
    assert {agent["name"]: agent["user_namespace"] for agent in listed} == {AGENT: "remapped", PLAIN: "none"}
    outputs_file = directory / "outputs.json"
    out, err = io.StringIO(), io.StringIO()
    assert cli(["--outputs", str(outputs_file), "doctor", AGENT], out, err, {}) == 0, out.getvalue() + err.getvalue()
    assert "  ok    userns        yes: root in the container is an unprivileged uid of its host (the engine runs " \
           "with userns-remap)\n" in out.getvalue(), out.getvalue()


def test_replacement_keeps_the_workspace(fleet, rig, git_server: GitServer):
    """A new SSH port replaces the container; the workspace volume, and the work in it, stays."""
    stack, outputs, _ = fleet
    before = container(rig, stack)["Id"]
    config = stack.fleet()
    config["agents"][0]["ssh_port"] = outputs["agents"][AGENT]["port"] + 1
    stack.set_fleet(config)
    again = stack.up()
    assert container(rig, stack)["Id"] != before
    assert again["agents"][AGENT]["port"] == outputs["agents"][AGENT]["port"] + 1
    # Read back by the refresh every up makes, and from the new container.
    assert {name: agent["user_namespace"] for name, agent in again["agents"].items()} == {AGENT: "remapped", PLAIN: "none"}
    assert run_ok(again, stack, "cat work.txt && git log -1 --format=%s") == "remapped\nwork"
    run_ok(again, stack, "echo again >> work.txt && git commit -qam again && git push -q origin HEAD")
    assert git_server.git("log", "-1", "--format=%s", f"agent/{AGENT}") == "again"
