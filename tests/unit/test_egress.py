"""An agent's egress policy rendered as files (components/egress.py): the same bytes, whoever
renders them (Docker's upload, Kubernetes' Secret, a VM's cloud-config), as recorded in
fixtures/egress for two agents."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.egress import dns_servers, resolver_policy, ruleset
from tests.unit.spec_helpers import agent, load

FIXTURES = Path(__file__).parent / "fixtures" / "egress"
SAMPLE = agent("sample", remote="git@github.com:org/app.git",
               allow=["pypi.org:443", "*.githubusercontent.com:443", "10.0.0.0/24:53/udp", "[2001:db8::/32]:443",
                      "203.0.113.5:22", "PyPI.org:443"], dns=["10.0.0.2", "2001:db8::53"])
CLOSED = agent("closed")


def spec(raw: dict):
    return load({"agents": [raw]}).agents[0]


@pytest.mark.parametrize("raw, name", [(SAMPLE, "sample"), (CLOSED, "closed")])
def test_the_files_are_the_recorded_ones(raw, name):
    agent_ = spec(raw)
    assert ruleset(agent_) == (FIXTURES / f"{name}.nft").read_text()
    assert resolver_policy(agent_) == (FIXTURES / f"{name}.json").read_text()
    servers = FIXTURES / f"{name}.dns-servers"
    assert dns_servers(agent_) == (servers.read_text() if servers.exists() else "")
