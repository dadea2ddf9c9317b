"""Reconciler, the one life of every machine, with a tiny in-memory driver.

It is called as agentfleet's provider calls it (components/provider/server.py): `create(inputs)`,
`read(id, outputs in the state)`, `diff(outputs in the state, new inputs)`, `update(id, outputs,
new inputs)`, `delete(id, outputs)`; inputs carry the secret in plain text (the provider opens
its secret wrapper). State written by agentfleet 0.1's dynamic providers also holds the pickled
provider under `__provider`.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import pytest
from components.reconciled import LEGACY_PROVIDER_KEY, SECRET, UNKNOWN, Driver, Reconciler, digest
from tests.key_marks import PRIVATE_KEY

# Machines of the in-memory driver, by name: what "really exists".
MACHINES: dict[str, dict[str, Any]] = {}
CALLS: list[tuple[str, str, dict[str, Any], Optional[str]]] = []
SECRET_TEXT = f"#cloud-config\nssh_keys: {{ed25519_private: {PRIVATE_KEY}}}\n"


class MemoryDriver(Driver):
    """A machine with an image (replacing), a memory limit (changed in place), a state that can
    drift, and an address that is read, never declared."""

    replacing = frozenset({"image", SECRET})  # a new secret cannot reach a made machine
    outputs = frozenset({"host"})

    def create(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        CALLS.append(("create", name, fields, secret))
        MACHINES[name] = {**fields, "state": "running", "host": "10.0.0.1"}
        return {"state": "running", "host": "10.0.0.1"}

    def read(self, name: str, fields: dict[str, Any]) -> Optional[dict[str, Any]]:
        CALLS.append(("read", name, fields, None))
        machine = MACHINES.get(name)
        return None if machine is None else {"state": machine["state"], "host": machine["host"]}

    def update(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        CALLS.append(("update", name, fields, secret))
        MACHINES[name].update(fields, state="running")
        return {"state": "running", "host": MACHINES[name]["host"]}

    def delete(self, name: str, fields: dict[str, Any]) -> None:
        CALLS.append(("delete", name, fields, None))
        MACHINES.pop(name, None)


PROVIDER = Reconciler(MemoryDriver())
FIELDS = {"name": "m-1", "image": "debian:12", "memory": 512, "state": "running"}


def declared(**changes: Any) -> dict[str, Any]:
    """The resource's inputs as the engine hands them over (outputs declared as None are left out)."""
    return {**FIELDS, **changes, SECRET: changes.get(SECRET, SECRET_TEXT)}


@pytest.fixture(autouse=True)
def machines():
    MACHINES.clear()
    CALLS.clear()
    yield MACHINES


@pytest.fixture
def created() -> dict[str, Any]:
    """The outputs `pulumi up` stored for machine m-1."""
    return PROVIDER.create(declared()).outs


def test_create_gives_the_driver_fields_and_secret_apart_and_keeps_only_the_secrets_digest(created):
    (call,) = CALLS
    assert call == ("create", "m-1", FIELDS, SECRET_TEXT)  # no secret, no provider among the fields
    assert PROVIDER.create(declared()).id == "m-1"
    assert created == {**FIELDS, "host": "10.0.0.1", SECRET: digest(SECRET_TEXT)}
    assert PRIVATE_KEY not in json.dumps(created) and "#cloud-config" not in json.dumps(created)


def test_a_machine_without_a_secret_has_no_digest():
    assert PROVIDER.create(FIELDS).outs[SECRET] is None
    assert not PROVIDER.diff({**FIELDS, SECRET: None}, FIELDS).changes


def test_diff_of_the_same_declaration_has_no_changes(created):
    assert not PROVIDER.diff(created, declared()).changes


def test_state_of_a_dynamic_provider_is_the_same_machine_and_a_read_sheds_its_pickle(created):
    """agentfleet 0.1 kept each resource's pickled provider in its outputs: no change, and gone after a refresh."""
    legacy = {**created, LEGACY_PROVIDER_KEY: "gASV…"}
    assert not PROVIDER.diff(legacy, declared()).changes
    assert PROVIDER.read("m-1", legacy).outs == created


def test_a_field_changed_in_place_is_an_update_not_a_replacement(created):
    planned = PROVIDER.diff(created, declared(memory=1024))
    assert planned.changes and planned.replaces == []


@pytest.mark.parametrize("change, replaced", [
    ({"image": "debian:13"}, ["image"]),
    ({SECRET: "#cloud-config\n{}\n"}, [SECRET]),
    ({"image": "debian:13", "memory": 1024}, ["image"]),
])
def test_only_the_drivers_replacing_fields_or_a_new_secret_replace(created, change, replaced):
    planned = PROVIDER.diff(created, declared(**change))
    assert planned.changes and planned.replaces == replaced and planned.delete_before_replace


def test_a_secret_not_known_in_a_preview_counts_as_changed(created):
    planned = PROVIDER.diff(created, declared(**{SECRET: UNKNOWN}))
    assert planned.replaces == [SECRET]


def test_outputs_that_are_read_never_take_part_in_the_diff(created):
    assert not PROVIDER.diff({**created, "host": "10.0.0.9"}, declared()).changes


def test_read_of_a_machine_as_declared_keeps_the_inputs(created):
    result = PROVIDER.read("m-1", created)
    assert result.id == "m-1" and result.outs == created and result.inputs is None


def test_read_of_a_new_address_updates_the_outputs_only(created, machines):
    machines["m-1"]["host"] = "10.0.0.2"
    result = PROVIDER.read("m-1", created)
    assert result.outs == {**created, "host": "10.0.0.2"} and result.inputs is None
    assert not PROVIDER.diff(result.outs, declared()).changes


def test_read_of_a_drifted_field_returns_what_was_read_as_inputs_so_up_reconciles_it(created, machines):
    machines["m-1"]["state"] = "stopped"

    result = PROVIDER.read("m-1", created)

    assert result.outs == {**created, "state": "stopped"}
    assert result.inputs == {**FIELDS, "state": "stopped"}  # neither secret nor outputs
    planned = PROVIDER.diff(result.outs, declared())
    assert planned.changes and planned.replaces == []
    updated = PROVIDER.update("m-1", result.outs, declared())
    # The driver also learns what was read back of it (where it lives).
    assert CALLS[-1] == ("update", "m-1", {**FIELDS, "host": "10.0.0.1"}, SECRET_TEXT)
    assert updated.outs == {**FIELDS, "host": "10.0.0.1", SECRET: digest(SECRET_TEXT)}
    assert machines["m-1"]["state"] == "running"


def test_read_of_a_machine_that_is_gone_drops_it_from_the_state(created, machines):
    machines.clear()
    result = PROVIDER.read("m-1", created)
    assert not result.id and not result.outs


def test_delete_hands_the_driver_the_fields_from_the_state_alone(created, machines):
    PROVIDER.delete("m-1", created)
    assert CALLS[-1] == ("delete", "m-1", {**FIELDS, "host": "10.0.0.1"}, None) and machines == {}
    PROVIDER.delete("m-1", created)  # the driver's delete is idempotent; the provider adds nothing
