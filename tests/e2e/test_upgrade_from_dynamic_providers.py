"""Upgrading a fleet made by agentfleet 0.1 (every machine, volume, network and key a Pulumi dynamic
provider resource) to agentfleet's own provider keeps every agent: the same SSH port, pinned host
key and workspace content (since 0.4.0 its containers are made anew: the upgrade script removes
0.1's, which 0.1's pickled providers could not delete). The real engine and Docker: the stack is brought up by the
last commit of 0.1, taken from this repository's history, then the new code and
`scripts/upgrade-from-0.1` (README: `make upgrade`) move it: the stack into the renamed project,
its config keys along, and one `pulumi up --refresh=false` (0.1's pickled providers cannot be
loaded by the new code to refresh).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from pulumi import automation as auto

from agentfleet import Fleet
from tests.e2e.support import (
    LAST_DYNAMIC_COMMIT,
    PROJECT_ROOT,
    FleetStack,
    copy_code,
    project_at,
)

AGENTS = ("agent-1", "agent-2")


def machines(stack: FleetStack, outputs: dict[str, Any]) -> dict[str, tuple[int, str]]:
    """Each agent's SSH port and pinned known_hosts line (0.4.0 makes its containers anew)."""
    return {agent: (outputs["agents"][agent]["port"], outputs["agents"][agent]["known_hosts"]) for agent in AGENTS}


@pytest.fixture
def old_stack(tmp_path: Path, agent_image: str):
    stack = FleetStack(project_at(LAST_DYNAMIC_COMMIT, tmp_path / "team-fleet"), f"upgrade-{uuid.uuid4().hex[:6]}")
    stack.set_fleet({"agents": [{"name": a, "identity": {"name": a.title(), "email": f"{a}@fleet.test"}} for a in AGENTS]})
    try:
        yield stack
    finally:
        stack.discard()


def test_a_fleet_of_agentfleet_0_1_moves_to_the_provider_with_every_agent_kept(old_stack: FleetStack):
    old_stack.set_secret("teamToken", "kept-through-the-upgrade")
    before = old_stack.up()
    assert "pulumi-python:dynamic/agentfleet:DockerContainer" in old_stack.export()
    with Fleet.from_outputs(before, old_stack.name) as client:
        for agent in AGENTS:
            assert client.agent(agent).run(f"echo {agent} was here > notes.txt", timeout=60).ok
    kept = machines(old_stack, before)

    copy_code(old_stack.project_dir)  # the new code over the old, stacks and state kept
    subprocess.run([str(PROJECT_ROOT / "scripts" / "upgrade-from-0.1"), old_stack.name], cwd=old_stack.project_dir,
                   env={**os.environ, **old_stack.env}, check=True, capture_output=True, text=True)
    assert "agentfleet:" not in old_stack.config_file.read_text()
    assert old_stack.pulumi("config", "get", "teamToken").strip() == "kept-through-the-upgrade"  # secrets move intact
    old_stack.stack = auto.select_stack(old_stack.name, work_dir=str(old_stack.project_dir), opts=auto.LocalWorkspaceOptions(
        env_vars=old_stack.env, secrets_provider="passphrase"))

    after = old_stack.outputs()
    assert machines(old_stack, after) == kept
    exported = old_stack.export()
    assert "pulumi-python:dynamic" not in exported and "pulumi:providers:pulumi-python" not in exported
    assert '"type": "agentfleet:index:DockerContainer"' in exported
    with Fleet.from_outputs(after, old_stack.name) as client:  # strict host key check: the pinned key is the old one
        assert {a: client.agent(a).run("cat notes.txt", timeout=60).stdout.strip() for a in AGENTS} == {
            a: f"{a} was here" for a in AGENTS}
    # From now on an ordinary `pulumi up` (which refreshes first) finds nothing to do, and sheds
    # the pickled providers 0.1 kept in the state.
    old_stack.pulumi("preview", "--expect-no-changes")
    old_stack.pulumi("up", "--yes")
    assert "__provider" not in old_stack.export() and machines(old_stack, old_stack.outputs()) == kept
