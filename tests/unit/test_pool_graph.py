"""The warm pool in the Fleet's resource graph, under Pulumi mocks: one DockerPool per Docker
host after the agents, and the workspace hint that lets an agent claim a member."""

from __future__ import annotations

import pulumi
import pytest

from components.backends.docker import backend as docker_backend
from components.spec import load_fleet
from tests.unit.fleet_mocks import FleetMocks, mocks_for_module

MOCKS = FleetMocks()
IDENTITY = {"name": "A", "email": "a@example.com"}


@pytest.fixture(scope="module", autouse=True)
def pool_mocks():
    yield from mocks_for_module(MOCKS, "pool")


@pytest.fixture
def pools(monkeypatch):
    """Every DockerPool declared, with what it depends on."""
    made: list[tuple[dict, list]] = []

    class Recorded(docker_backend.DockerPool):
        def __init__(self, name, fields, secret=None, opts=None):
            made.append((fields, list(opts.depends_on or [])))
            super().__init__(name, fields, secret, opts)

    monkeypatch.setattr(docker_backend, "DockerPool", Recorded)
    return made


def spec(pool):
    return load_fleet("pool", {"pool": pool, "agents": [
        {"name": "plain", "identity": IDENTITY},
        {"name": "pinned", "identity": IDENTITY, "ssh_port": 23009},
    ]}, {}.get)


@pulumi.runtime.test
def test_the_pool_follows_the_agents_and_changes_when_agents_are_added(pools):
    from components.fleet import Fleet, FleetArgs

    fleet = Fleet("fleet", FleetArgs(spec({"size": 3})))

    def check(_):
        pool = MOCKS.resources["fleet-pool"].inputs
        assert (pool["name"], pool["size"], pool["agents"]) == ("agentfleet-pool-pool", 3, ["pinned", "plain"])
        assert pool["member"]["labels"] == {"agentfleet.stack": "pool"} and "port" not in pool["member"]
        (fields, depends_on), = pools
        assert {d._name for d in depends_on} == {"plain", "pinned"}  # the Agent components: claims first
        # The agent without a port of its own may claim a member of the pool's shape; the other boots fresh.
        assert MOCKS.resources["plain-workspace"].inputs["pool"] == {"name": "agentfleet-pool-pool",
                                                                     "shape": pool["shape"]}
        assert "pool" not in MOCKS.resources["pinned-workspace"].inputs
        assert MOCKS.resources["plain-workspace"].inputs["machine"] == "agentfleet-pool-plain"

    assert len(fleet.followers) == 1
    return pulumi.Output.all(fleet.agents, fleet.followers[0].id).apply(check)


@pulumi.runtime.test
def test_without_a_pool_there_is_no_pool_and_no_claim(pools):
    from components.fleet import Fleet, FleetArgs

    MOCKS.resources.clear()
    fleet = Fleet("fleet-2", FleetArgs(spec(None)))

    def check(_):
        assert pools == [] and fleet.followers == [] and "fleet-pool" not in MOCKS.resources
        assert "pool" not in MOCKS.resources["plain-workspace"].inputs
        # The container mounts the volume its workspace resource reads back (here: its own name).
        assert MOCKS.resources["plain-container"].inputs["workspace_volume"] == "agentfleet-pool-plain-workspace"

    return fleet.agents.apply(check)
