"""agentfleet's provider as the engine calls it (components/provider/server.py): property values
in and out, secrets kept secret, the provider's own config empty, numbers as drivers want them."""

from __future__ import annotations

import asyncio

from pulumi.provider.experimental.property_value import PropertyValue
from pulumi.provider.experimental.provider import CheckRequest, CreateRequest, DiffRequest, ReadRequest

from components.provider.server import AgentfleetProvider
from components.provider.values import plain, wrapped
from components.reconciled import UNKNOWN

KEY_URN = "urn:pulumi:dev::agentfleet::agentfleet:index:Fleet$agentfleet:index:Agent$agentfleet:index:SshKeyPair::a-host-key"
PROVIDER = AgentfleetProvider()


def test_values_come_plain_with_ints_and_unknowns_and_go_back_as_the_engine_takes_them():
    value = PropertyValue({"port": PropertyValue(22001.0), "cpus": PropertyValue(0.5), "key": PropertyValue.computed(),
                           "caps": PropertyValue([PropertyValue("CHOWN")]), "on": PropertyValue(True)})
    assert plain(value) == {"port": 22001, "cpus": 0.5, "key": UNKNOWN, "caps": ["CHOWN"], "on": True}
    assert isinstance(plain(value)["port"], int)
    assert wrapped({"port": 22001, "on": True}) == PropertyValue({"port": PropertyValue(22001.0), "on": PropertyValue(True)})
    assert wrapped("text", secret=True).is_secret


def test_a_key_pair_is_made_with_its_private_key_secret_and_its_public_key_plain():
    made = asyncio.run(PROVIDER.create(CreateRequest(KEY_URN, {"comment": PropertyValue("a@host")}, 60, False)))
    assert made.resource_id == "a@host"
    assert made.properties["private_key"].is_secret and "PRIVATE KEY" in made.properties["private_key"].value
    assert not made.properties["public_key"].is_secret
    assert made.properties["public_key"].value.startswith("ssh-ed25519 ") and made.properties["public_key"].value.endswith(" a@host")

    same = asyncio.run(PROVIDER.diff(DiffRequest(KEY_URN, "a@host", made.properties, {"comment": PropertyValue("a@host")}, [])))
    assert same.changes is False
    other = asyncio.run(PROVIDER.diff(DiffRequest(KEY_URN, "a@host", made.properties, {"comment": PropertyValue("b@host")}, [])))
    assert other.changes and other.replaces == ["comment"] and other.delete_before_replace
    read = asyncio.run(PROVIDER.read(ReadRequest(KEY_URN, "a@host", made.properties, {"comment": PropertyValue("a@host")})))
    assert read.resource_id == "a@host" and read.properties["private_key"].is_secret
    assert read.inputs == {"comment": PropertyValue("a@host")}


def test_the_provider_keeps_no_config_of_its_own_so_the_fleet_and_its_secrets_stay_out_of_its_state():
    offered = {"version": PropertyValue("0.2.0"), "fleet": PropertyValue('{"agents": []}'),
               "agent1Key": PropertyValue("secret text", is_secret=True)}
    checked = asyncio.run(PROVIDER.check_config(CheckRequest("urn:pulumi:dev::agentfleet::pulumi:providers:agentfleet::default",
                                                             {}, offered, b"")))
    assert checked.inputs == {"version": PropertyValue("0.2.0")}
