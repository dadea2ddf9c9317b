"""An agent's egress policy (components/egress.py): declared small in the `egress` field, and its
files rendered from that declaration with the same bytes whoever renders them (Docker's upload,
Kubernetes' Secret, a VM's cloud-config), as recorded in fixtures/egress for two agents when the
field still carried the files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.egress import DNS_SERVERS_PATH, NAMES_PATH, RULESET_PATH, EgressPolicy
from tests.unit.spec_helpers import agent, load

FIXTURES = Path(__file__).parent / "fixtures" / "egress"
SAMPLE = agent("sample", remote="git@github.com:org/app.git",
               allow=["pypi.org:443", "*.githubusercontent.com:443", "10.0.0.0/24:53/udp", "[2001:db8::/32]:443",
                      "203.0.113.5:22", "PyPI.org:443"], dns=["10.0.0.2", "2001:db8::53"])
CLOSED = agent("closed")


def spec(raw: dict):
    return load({"agents": [raw]}).agents[0]


@pytest.mark.parametrize("raw, name", [(SAMPLE, "sample"), (CLOSED, "closed")])
def test_the_files_are_the_recorded_ones_also_when_rendered_from_the_field(raw, name):
    policy = EgressPolicy.of(spec(raw))
    again = EgressPolicy.from_fields(json.loads(json.dumps(policy.fields())))  # as the state holds it
    assert again == policy
    servers = FIXTURES / f"{name}.dns-servers"
    assert again.files() == {RULESET_PATH: (FIXTURES / f"{name}.nft").read_text(),
                             NAMES_PATH: (FIXTURES / f"{name}.json").read_text(),
                             **({DNS_SERVERS_PATH: servers.read_text()} if servers.exists() else {})}


def test_the_field_reads_as_the_allow_list_the_remote_first_and_is_small():
    fields = EgressPolicy.of(spec(SAMPLE)).fields()
    assert fields == {"agent": "sample",
                      "destinations": ["github.com:22/tcp", "pypi.org:443/tcp", "*.githubusercontent.com:443/tcp",
                                       "10.0.0.0/24:53/udp", "[2001:db8::/32]:443/tcp", "203.0.113.5/32:22/tcp"],
                      "dns": ["10.0.0.2", "2001:db8::53"]}
    assert len(json.dumps(fields)) < 300
    assert EgressPolicy.of(spec(CLOSED)).fields() == {"agent": "closed", "destinations": []}


def test_a_field_that_names_no_destination_is_refused_by_its_entry():
    with pytest.raises(ValueError, match="'pypi.org' is not host:port/protocol"):
        EgressPolicy.from_fields({"agent": "a", "destinations": ["pypi.org"]})
