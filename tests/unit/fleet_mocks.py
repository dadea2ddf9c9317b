"""Pulumi mocks that answer the fleet's resources the way the real providers would."""

from __future__ import annotations

import pulumi

from components.keys import generate_ed25519

VM_ADDRESS = "10.108.7.23"
APP_TOKEN, APP_TOKEN_EXPIRES = "ghs_mockInstallationToken", 1_800_003_600.0


class FleetMocks(pulumi.runtime.Mocks):
    """Keys get real key pairs; containers and VMs answer with the endpoint their drivers read
    back; every resource is recorded by name for the assertions."""

    def __init__(self) -> None:
        self.resources: dict[str, pulumi.runtime.MockResourceArgs] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.resources[args.name] = args
        outputs = dict(args.inputs)
        if args.typ.endswith(":SshKeyPair"):
            outputs["private_key"], outputs["public_key"] = generate_ed25519(args.inputs["comment"])
        if args.typ.endswith(":DockerContainer"):
            outputs.update(host=args.inputs.get("bind_address", "127.0.0.1"), port=args.inputs.get("port", 22555))
        if args.typ.endswith(":AppToken"):  # a GitHub App installation token, as the driver reads it back
            outputs.update(token=APP_TOKEN, expires_at=APP_TOKEN_EXPIRES)
        if args.typ.endswith(("Vm")):
            outputs.update(host=VM_ADDRESS, port=22)
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


def mocks_for_module(mocks: FleetMocks, stack: str):
    """Set these mocks for one test module; whatever mocks were set before come back afterwards.
    Use as the body of a module-scoped autouse fixture: `yield from mocks_for_module(...)`."""
    from pulumi.runtime.mocks import MockMonitor
    from pulumi.runtime.settings import get_monitor

    before = get_monitor()
    project, previous_stack = pulumi.get_project(), pulumi.get_stack()
    pulumi.runtime.set_mocks(mocks, project="agentfleet", stack=stack)
    yield mocks
    if isinstance(before, MockMonitor):
        pulumi.runtime.set_mocks(before.mocks, project=project, stack=previous_stack, monitor=before)
