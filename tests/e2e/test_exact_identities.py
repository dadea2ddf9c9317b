"""Tricky identities and branch names through a real `pulumi up`, read back inside the agents
with git itself: `git config` and the agent's own first commit carry them exactly."""

from __future__ import annotations

import pytest

from agentfleet import Fleet
from tests.e2e.support import FleetStack

AGENTS = {
    "agent-1": {"identity": {"name": "Robert \"Bobby\" O'Brien; Jr", "email": "o'brien#jr@fleet.test"},
                "branch": "agent/ü-1"},
    "agent-2": {"identity": {"name": "#1 Zoë \\ 漢字 'x' Ω", "email": "zoë@bücher.test"},
                "branch": "agent/robert's;#"},
}


@pytest.fixture(scope="module")
def fleet(make_stack):
    stack: FleetStack = make_stack("identities")
    stack.set_fleet({
        "defaults": {"resources": {"cpus": 0.25, "memory": "192m", "pids": 128}},
        "agents": [{"name": name, **fields} for name, fields in AGENTS.items()],
    })
    with Fleet.from_outputs(stack.up(), stack.name) as client:
        yield client


def git(client: Fleet, agent: str, *args: str) -> str:
    result = client.agent(agent).run(["git", *args], timeout=60)
    assert result.ok, f"{agent}: git {' '.join(args)} exited {result.exit_status}: {result.stderr}"
    return result.stdout.removesuffix("\n")


@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_git_config_in_the_agent_reads_back_exactly_what_was_given(fleet, agent):
    identity, branch = AGENTS[agent]["identity"], AGENTS[agent]["branch"]
    assert git(fleet, agent, "config", "--global", "user.name") == identity["name"]
    assert git(fleet, agent, "config", "--global", "user.email") == identity["email"]
    assert git(fleet, agent, "config", "--global", "agentfleet.branch") == branch
    assert "core.sshcommand" not in git(fleet, agent, "config", "--global", "--list").lower()


@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_the_agents_first_commit_carries_its_identity_and_branch_exactly(fleet, agent):
    identity, branch = AGENTS[agent]["identity"], AGENTS[agent]["branch"]
    assert git(fleet, agent, "rev-parse", "--abbrev-ref", "HEAD") == branch
    assert git(fleet, agent, "log", "-1", "--format=%an%n%ae%n%s").split("\n") == [
        identity["name"], identity["email"], f"Start {branch}"]
