"""The Fleet as a package: a program outside this repository (here an inline program of another
project, holding none of agentfleet's code) declares `agentfleet:index:Fleet` as a remote
component, and agentfleet's provider builds it through construct. The real engine and Docker.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pulumi
import pytest
from pulumi import automation as auto

from agentfleet import Fleet
from agentfleet.component import Fleet as RemoteFleet
from tests.e2e.support import docker, docker_objects, inline_stack

AGENTS = ("agent-1", "agent-2")


def exported(stack: auto.Stack) -> str:
    """`pulumi stack export` as a user runs it (the Automation API's shows secrets)."""
    return subprocess.run(["pulumi", "stack", "export", "--stack", stack.name], cwd=stack.workspace.work_dir,
                          env={**os.environ, **stack.workspace.env_vars}, capture_output=True, text=True,
                          check=True).stdout


def fleet_program(fleet: dict[str, Any]):
    def program() -> None:
        made = RemoteFleet("fleet", fleet)  # by type token and inputs, as any language's SDK declares it
        pulumi.export("agents", made.agents)
        pulumi.export("agent_private_keys", made.agent_private_keys)
    return program


@pytest.fixture
def stack_of(tmp_path: Path, agent_image: str):
    made: list[auto.Stack] = []

    def make(fleet: dict[str, Any]) -> auto.Stack:
        stack = inline_stack(f"component-{len(made)}", "team-fleet", fleet_program(fleet), tmp_path)
        made.append(stack)
        return stack

    yield make
    for stack in made:
        try:
            stack.destroy(on_output=lambda _: None)
        finally:
            stack.workspace.remove_stack(stack.name, force=True)


def test_a_program_of_another_project_declares_a_fleet_through_the_provider(stack_of):
    fleet = {"agents": [{"name": a, "identity": {"name": a.title(), "email": f"{a}@team.test"}} for a in AGENTS]}
    stack = stack_of(fleet)

    result = stack.up(on_output=lambda _: None)

    outputs = {key: value.value for key, value in result.outputs.items()}
    assert result.outputs["agent_private_keys"].secret
    with Fleet.from_outputs(outputs, stack.name) as client:
        for agent in AGENTS:
            assert client.agent(agent).run("git config user.email", timeout=60).stdout.strip() == f"{agent}@team.test"
    state = exported(stack)  # as a user sees it: secrets as ciphertext
    assert '"type": "agentfleet:index:Fleet"' in state and '"type": "agentfleet:index:DockerContainer"' in state
    assert "PRIVATE KEY" not in state and "#cloud-config" not in state
    machines = [f"agentfleet-{stack.name}-{agent}" for agent in AGENTS]  # each with its policy container
    assert sorted(docker_objects("container", f"agentfleet.stack={stack.name}")) == sorted(
        name + suffix for name in machines for suffix in ("", "-policy"))
    # Nothing to do the second time: the component's children are the same resources.
    assert stack.preview(on_output=lambda _: None).change_summary.get("same") and not {
        k for k in stack.preview(on_output=lambda _: None).change_summary if k != "same"}


def test_a_bad_fleet_is_refused_by_construct_naming_the_field_before_anything_exists(stack_of):
    stack = stack_of({"agents": [{"name": "agent-1", "identity": {"name": "One", "email": "one@team.test"},
                                  "idenity": {}}]})

    with pytest.raises(auto.errors.CommandError) as refused:
        stack.up(on_output=lambda _: None)

    assert 'agent "agent-1", field "idenity": unknown field; did you mean "identity"?' in str(refused.value)
    assert docker_objects("container", f"agentfleet.stack={stack.name}") == []
    assert docker("ps", "-a", "-q", "--filter", f"label=agentfleet.stack={stack.name}") == ""
