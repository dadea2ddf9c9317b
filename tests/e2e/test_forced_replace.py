"""`pulumi up --replace` of an agent's machine, as `agentfleet doctor` advises when the operator key
is no longer authorized: the container is made again under its own name (the old one goes first),
with the same workspace."""

from __future__ import annotations

import json

from agentfleet import Fleet
from tests.e2e.support import FleetStack, docker


def test_a_forced_replacement_deletes_first_and_keeps_the_workspace(make_stack) -> None:
    stack: FleetStack = make_stack("forced")
    stack.set_fleet({"agents": [{"name": "a", "identity": {"name": "A", "email": "a@fleet.test"}}]})
    outputs = stack.up()
    with Fleet.from_outputs(outputs, stack.name) as client:
        assert client.agent("a").run("echo kept > work.txt", timeout=60).ok
    name = f"agentfleet-{stack.name}-a"
    before = docker("inspect", "-f", "{{.Id}}", name)
    urn = next(resource["urn"] for resource in json.loads(stack.export())["deployment"]["resources"]
               if resource["type"].endswith(":DockerContainer"))
    result = stack.stack.up(replace=[urn], on_output=lambda _: None)
    assert result.summary.resource_changes.get("replace") == 1, result.summary.resource_changes
    assert docker("inspect", "-f", "{{.Id}}", name) != before
    again = {key: value.value for key, value in result.outputs.items()}
    with Fleet.from_outputs(again, stack.name) as client:
        assert client.agent("a").run("cat work.txt", timeout=60).stdout.strip() == "kept"
    stack.destroy()
