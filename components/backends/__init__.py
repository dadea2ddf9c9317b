"""Backends: how one agent's machine is created, reached and destroyed.

Every backend module offers the same two functions, so the Agent component treats them alike:

- `provision(agent, context, user_data, host_public_key, opts) -> Output[Endpoint]` declares the
  machine (LocalCommand resources, children of the agent) and returns where its sshd answers;
  `user_data` is the agent's cloud-config (a secret, delivered on stdin);
- `missing_tools() -> list[str]` names what this machine lacks to run the backend, with what to
  install, so a stack fails before anything is touched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TypedDict

import pulumi

from components.command import LocalCommand


class Endpoint(TypedDict):
    host: str
    port: int


@dataclass(frozen=True)
class MachineContext:
    """What every machine of one stack shares."""

    stack: str
    attach_networks: tuple[str, ...] = ()
    # Agents that mount the fleet's shared objects (FleetSpec.shares_objects).
    shared_objects: frozenset[str] = frozenset()

    def machine_name(self, agent: str) -> str:
        """The name of an agent's container or VM: unique per stack, the same in create and delete."""
        return f"agentfleet-{self.stack}-{agent}"

    def labels(self, agent: str | None = None) -> list[str]:
        labels = ["--label", f"agentfleet.stack={self.stack}"]
        return labels + (["--label", f"agentfleet.agent={agent}"] if agent else [])


def machine(
    resource_name: str,
    commands: pulumi.Output[tuple[list[str], list[str]]],
    user_data: pulumi.Output[str],
    opts: pulumi.ResourceOptions,
) -> pulumi.Output[Endpoint]:
    """The one LocalCommand that makes an agent's machine from its (create, delete) argv, with
    the cloud-config on stdin; its create command's last line is the endpoint JSON."""
    made = LocalCommand(
        resource_name,
        create=commands.apply(lambda pair: pair[0]),
        delete=commands.apply(lambda pair: pair[1]),
        stdin=user_data,
        opts=opts,
    )
    return made.stdout.apply(parse_endpoint)


def parse_endpoint(stdout: str) -> Endpoint:
    return json.loads(stdout.strip().splitlines()[-1])
