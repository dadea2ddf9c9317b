"""Several environments on one machine, for real: four stacks of twenty agents with no `ssh_port`
come up side by side, every agent answering; each port was chosen free on the host when its
agent was made and stays the agent's: re-creating one stack or refreshing moves no other's.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from agentfleet import Fleet
from tests.e2e.support import FleetStack

STACKS = 4
AGENTS = 20


def fleet_config(prefix: str) -> dict:
    return {
        "defaults": {"resources": {"cpus": 0.25, "memory": "160m", "pids": 64}, "egress": "open"},
        "agents": [{"name": f"{prefix}-{i}", "identity": {"name": f"Agent {i}", "email": f"{prefix}-{i}@fleet.test"}}
                   for i in range(AGENTS)],
    }


def ports(outputs: dict) -> dict[str, int]:
    return {name: agent["port"] for name, agent in outputs["agents"].items()}


def all_answer(stack: FleetStack, outputs: dict) -> None:
    with Fleet.from_outputs(outputs, stack.name) as client:
        outcomes = client.run_all(["hostname"], parallel=10)
    failed = {name: outcome for name, outcome in outcomes.items() if not getattr(outcome, "ok", False)}
    assert not failed, failed


@pytest.fixture(scope="module")
def stacks(make_stack, agent_image):
    made = []
    for index in range(STACKS):
        stack: FleetStack = make_stack(f"env{index}")
        stack.set_fleet(fleet_config(f"e{index}"))
        made.append(stack)
    # Side by side, as environments come and go on one machine.
    with ThreadPoolExecutor(max_workers=2) as pool:
        outputs = list(pool.map(lambda stack: stack.up(), made))
    return made, outputs


def test_stacks_side_by_side_get_distinct_ports_and_every_agent_answers(stacks):
    made, outputs = stacks
    every = [port for out in outputs for port in ports(out).values()]
    assert len(every) == STACKS * AGENTS and len(set(every)) == len(every)
    for stack, out in zip(made, outputs):
        all_answer(stack, out)


def test_recreating_one_stack_moves_no_other_stacks_ports(stacks):
    made, outputs = stacks
    made[0].destroy()
    made[0].up()
    for stack, out in zip(made[1:], outputs[1:]):
        assert ports(stack.outputs()) == ports(out)


def test_a_refresh_keeps_every_port(stacks):
    made, outputs = stacks
    for stack, out in zip(made[1:], outputs[1:]):
        assert ports(stack.up()) == ports(out)
