"""Backends: how one agent's machine is created, read, changed and destroyed, behind one interface.

Every backend is a package whose backend.py offers a `BACKEND` object with the shape of
`Backend` (registry.py loads it), so the Fleet and Agent components treat Docker, Lima and
Multipass alike: what this machine lacks to drive it, what it checks before anything is
created, the fleet-level resources its agents need, and each agent's machine (a `Reconciled`
resource whose `host` and `port` outputs are the SSH endpoint, and whose `user_namespace` says
whether root in it is root of its host).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, TypedDict

import pulumi

from agentfleet.contract import ForgeGate
from agentfleet.throttle import DEFAULT_FORGE_CONNECTIONS
from components.spec import AgentSpec, FleetSpec


class Endpoint(TypedDict):
    host: str
    port: int
    user_namespace: str | None  # agentfleet.contract.USER_NAMESPACES, as read back from the machine


@dataclass(frozen=True)
class MachineContext:
    """What every machine of one stack shares."""

    stack: str
    attach_networks: tuple[str, ...] = ()
    # Agents that mount the fleet's shared objects (FleetSpec.shares_objects).
    shared_objects: frozenset[str] = frozenset()
    fleet: FleetSpec | None = None  # hosts, placement, port range

    def machine_name(self, agent: str) -> str:
        """The name of an agent's container or VM: unique per stack, the same in create and delete."""
        return f"agentfleet-{self.stack}-{agent}"

    def forge_gate(self, agent: AgentSpec) -> dict[str, Any]:
        """`forge_gate` for a machine's inputs where the agent has a remote: the provider holds one
        of that host's slots while the machine's first clone runs (agentfleet/throttle.py)."""
        if agent.remote is None:
            return {}
        connections = self.fleet.forge_connections if self.fleet else DEFAULT_FORGE_CONNECTIONS
        return {"forge_gate": ForgeGate(host=agent.remote.host, connections=connections)}

    def labels(self, agent: str | None = None) -> dict[str, str]:
        labels = {"agentfleet.stack": self.stack}
        return {**labels, "agentfleet.agent": agent} if agent else labels


class Backend(Protocol):
    # Whether the agent's cloud-config carries its egress policy (applied inside the machine by
    # its root), or the backend applies it out of the machine's reach.
    policy_in_machine: bool

    def missing_tools(self) -> list[str]:
        """What this machine lacks to drive the backend, each with what to install."""

    def preflight(self, fleet: FleetSpec, agents: list[AgentSpec]) -> list[str]:
        """Problems `up` would hit with these agents (ports taken, ...), each naming the agent."""

    def fleet_resources(self, fleet: FleetSpec, context: MachineContext,
                        opts: pulumi.ResourceOptions) -> dict[str, list[pulumi.Resource]]:
        """Resources the backend's agents share, as what each agent (by name) must wait for."""

    def runs_agent_image(self, agent: AgentSpec, context: MachineContext) -> bool:
        """Whether the agent's machine runs the agent image this recipe builds (images/), which
        has the files every agent has alike (cloudinit.shared_files): its cloud-config leaves them out."""

    def provision(self, agent: AgentSpec, context: MachineContext, user_data: pulumi.Output[str],
                  host_public_key: pulumi.Output[str], opts: pulumi.ResourceOptions) -> pulumi.Output[Endpoint]:
        """The agent's machine (children of the Agent); returns where its sshd answers."""
