"""The provider's schema and what the program declares agree: every input the Fleet gives a
resource (under Pulumi mocks, for every kind a fleet is made of) is a property of that resource
in the schema, with the secret marked secret; the schema lists the Fleet and every kind."""

from __future__ import annotations

import pulumi
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
import pytest

from components.keys import generate_ed25519
from components.provider.kinds import KINDS
from components.provider.schema import FLEET, schema
from components.reconciled import SECRET, type_token
from components.spec import load_fleet
from tests.unit.fleet_mocks import FleetMocks, mocks_for_module

MOCKS = FleetMocks()
HOST_KEY = " ".join(generate_ed25519("build-1")[1].split()[:2])


@pytest.fixture(scope="module", autouse=True)
def schema_mocks():
    yield from mocks_for_module(MOCKS, "schema")


APP_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()).decode()
SPEC = load_fleet("schema", {
    "hosts": {"build-1": {"address": "ssh://ops@10.0.0.5", "known_hosts": [f"10.0.0.5 {HOST_KEY}"]}},
    "shared_objects": {"credential": {"ssh_key": "mirrorKey"}},
    "forge": {"kind": "github", "repository": "org/app", "token": "forgeToken",
              "app": {"id": 1, "installation": 2, "private_key": "appKey"}},
    "agents": [
        {"name": "agent-1", "identity": {"name": "One", "email": "one@example.com"},
         "remote": "git@github.com:org/app.git", "packages": ["jq"]},
        {"name": "agent-2", "host": "build-1", "identity": {"name": "Two", "email": "two@example.com"},
         "remote": "git@github.com:org/app.git", "ssh_port": 23002, "bind_address": "10.0.0.5"},
        {"name": "agent-3", "backend": "lima", "identity": {"name": "Three", "email": "three@example.com"}},
        {"name": "agent-4", "backend": "multipass", "identity": {"name": "Four", "email": "four@example.com"}},
        {"name": "agent-5", "backend": "lima", "identity": {"name": "Five", "email": "five@example.com"},
         "remote": "https://github.com/org/app.git"},  # pushes with GitHub App tokens
        {"name": "agent-6", "identity": {"name": "Six", "email": "six@example.com"}},  # may claim from the pool
    ],
    "pool": {"size": 1},
}, {"mirrorKey": generate_ed25519("mirror")[0], "forgeToken": "github_pat_schema", "appKey": APP_KEY}.get)


@pulumi.runtime.test
def test_every_declared_input_is_in_the_schema_of_its_kind():
    from components.fleet import Fleet, FleetArgs

    def check(_):
        resources = schema()["resources"]
        declared = [args for args in MOCKS.resources.values() if args.typ.startswith("agentfleet:index:")
                    and not resources.get(args.typ, {}).get("isComponent") and args.typ != "agentfleet:index:Agent"]
        kinds = {args.typ for args in declared}
        assert kinds == {type_token(kind) for kind in KINDS}, "a kind the fleet never declares, or one not served"
        for args in declared:
            known = resources[args.typ]["inputProperties"]
            unknown = set(args.inputs) - set(known)
            assert not unknown, f"{args.name} ({args.typ}) declares {sorted(unknown)}, not in the schema"
            if SECRET in args.inputs:
                assert known[SECRET]["secret"], args.typ

    fleet = Fleet("fleet", FleetArgs(SPEC))
    return pulumi.Output.all(fleet.agents, *[follower.id for follower in fleet.followers]).apply(check)


def test_the_schema_lists_the_fleet_component_with_its_secret_keys():
    fleet = schema()["resources"][FLEET]
    assert fleet["isComponent"] and fleet["requiredInputs"] == ["fleet"]
    assert fleet["properties"]["agentPrivateKeys"]["secret"] and not fleet["properties"]["agents"].get("secret")
    key_pair = schema()["resources"][type_token("SshKeyPair")]
    assert key_pair["properties"]["private_key"]["secret"] and not key_pair["properties"]["public_key"].get("secret")
