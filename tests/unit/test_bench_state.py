"""The state benchmark's breakdown: an agent's resources by type, found by their URN's name."""

from __future__ import annotations

import json

from bench.state import resource_bytes


def resource(name: str, kind: str, padding: int = 0) -> dict:
    return {"urn": f"urn:pulumi:dev::fleet::agentfleet:index:Fleet${kind}::{name}", "type": kind, "pad": "x" * padding}


def test_an_agents_resources_are_counted_by_type_and_no_one_elses():
    export = json.dumps({"deployment": {"resources": [
        resource("a-2", "agentfleet:index:Agent"),
        resource("a-2-container", "agentfleet:index:DockerContainer", 5000),
        resource("a-2-operator-key", "agentfleet:index:SshKeyPair", 100),
        resource("a-2-host-key", "agentfleet:index:SshKeyPair", 100),
        resource("a-20-container", "agentfleet:index:DockerContainer", 9000),
        resource("a-1-container", "agentfleet:index:DockerContainer", 9000),
    ]}})
    counted = resource_bytes(export, "a-2")
    assert list(counted) == ["agentfleet:index:DockerContainer", "agentfleet:index:SshKeyPair", "agentfleet:index:Agent"]
    keys = [resource(f"a-2-{which}-key", "agentfleet:index:SshKeyPair", 100) for which in ("operator", "host")]
    assert counted["agentfleet:index:SshKeyPair"] == sum(len(json.dumps(k, indent=4).encode()) for k in keys)
    assert 5000 < counted["agentfleet:index:DockerContainer"] < 9000
