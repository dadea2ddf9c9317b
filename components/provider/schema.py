"""agentfleet's Pulumi package schema, made from the kinds table and their drivers, so the schema
and the diff read the same field lists: what replaces, what changes in place, what only guides
the making, what is read back.

`pulumi package get-schema agentfleet` prints it; SDK generators for other languages read it.
"""

from __future__ import annotations

import json
from typing import Any

from agentfleet import __version__
from components.provider.kinds import KINDS, driver
from components.reconciled import PACKAGE, SECRET, Driver, type_token

FLEET = type_token("Fleet")
ANY = {"$ref": "pulumi.json#/Any"}


def _inputs(machine: Driver) -> dict[str, Any]:
    def field(name: str) -> dict[str, Any]:
        how = ("replaces the resource when it changes" if name in machine.replacing
               else "a hint for the making: never compared" if name in machine.hints
               else "changed in place")
        return {**ANY, "description": how}

    inputs = {name: field(name) for name in sorted((machine.replacing | machine.changing | machine.hints) - {SECRET})}
    if machine.secret_input:
        inputs[SECRET] = {"type": "string", "secret": True, "description": machine.secret_input}
    return inputs


def _outputs(machine: Driver) -> dict[str, Any]:
    outputs = {name: {**ANY, "description": "read back from what exists"} for name in sorted(machine.outputs)}
    for name in machine.secret_outputs:
        outputs[name] = {"type": "string", "secret": True, "description": "a secret: encrypted in the state"}
    if machine.secret_input:
        outputs[SECRET] = {"type": "string", "description": f"the SHA-256 of the {SECRET} input, never the secret"}
    return outputs


def _resource(kind: str) -> dict[str, Any]:
    machine = driver(kind)
    inputs = _inputs(machine)
    return {
        "description": KINDS[kind].description,
        "inputProperties": inputs,
        "requiredInputs": [machine.id_field],
        "properties": {**inputs, **_outputs(machine)},
    }


FLEET_RESOURCE = {
    "isComponent": True,
    "description": "Every agent of one stack: each its own machine (a Docker container, a Lima or Multipass VM, "
                   "or a Kubernetes pod), keys, cloud-config and SSH endpoint.",
    "inputProperties": {"fleet": {**ANY, "description": "The fleet's config: the object a stack file of "
                                                         "agentfleet's reference project holds as `fleet` "
                                                         "(docs/configuration.md)."}},
    "requiredInputs": ["fleet"],
    "properties": {
        "agents": {"type": "object", "additionalProperties": ANY,
                   "description": "Each agent's endpoint by name: host, port, user, pinned known_hosts line, "
                                  "identity, remote, branch, ssh_config."},
        "agentPrivateKeys": {"type": "object", "additionalProperties": {"type": "string"}, "secret": True,
                             "description": "Each agent's operator key (OpenSSH private key) by name."},
    },
    "required": ["agents", "agentPrivateKeys"],
}


def schema() -> dict[str, Any]:
    return {
        "name": PACKAGE,
        "version": __version__,
        "displayName": "agentfleet",
        "description": "Isolated AI coding agents (Docker containers, Lima or Multipass VMs, Kubernetes pods), "
                       "each with its own git identity, credentials, workspace and SSH endpoint.",
        "keywords": ["agents", "git", "docker", "lima", "multipass", "kubernetes", "kind/component"],
        "resources": {FLEET: FLEET_RESOURCE, **{type_token(kind): _resource(kind) for kind in KINDS}},
        "language": {"python": {"respectSchemaVersion": True}},
    }


def schema_json() -> str:
    return json.dumps(schema(), indent=2, sort_keys=True)
