"""Fleet: every agent of one stack, plus what they share (the Docker network).

Why outputs are split: `agents` holds what anyone may read (endpoints, pinned host keys,
identities); `agent_private_keys` holds the operator keys and is a Pulumi secret as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import pulumi

from components.agent import Agent, AgentArgs
from components.backends import MachineContext, docker
from components.command import LocalCommand
from components.spec import FleetSpec


@dataclass
class FleetArgs:
    spec: FleetSpec


class Fleet(pulumi.ComponentResource):
    agents: pulumi.Output[dict[str, Any]]
    agent_private_keys: pulumi.Output[dict[str, str]]

    def __init__(self, name: str, args: FleetArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("agentfleet:index:Fleet", name, None, opts)
        spec = args.spec
        sharing = [agent for agent in spec.agents if spec.shares_objects(agent)]
        context = MachineContext(spec.stack, spec.attach_networks, frozenset(a.name for a in sharing))
        # Docker agents join the stack's network, so they wait for it; VM agents do not.
        depends_on = {backend: [] for backend in spec.backends()}
        if "docker" in depends_on:
            create, delete = docker.network_commands(context)
            depends_on["docker"] = [LocalCommand(f"{name}-network", create=create, delete=delete,
                                                 opts=pulumi.ResourceOptions(parent=self))]
        shared_objects = []
        if spec.shared_objects is not None and sharing:
            # Made once, before the agents that mount it; kept while a kept workspace borrows from it.
            create, delete = docker.shared_objects_commands(context, spec.shared_objects, sharing[0].image)
            secret = docker.shared_objects_stdin(spec.shared_objects)
            shared_objects = [LocalCommand(
                f"{name}-shared-objects", create=create, delete=delete,
                stdin=pulumi.Output.secret(secret) if secret else None,
                opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on["docker"],
                                            retain_on_delete=any(a.retain_workspace for a in sharing)))]
        agents = {
            agent.name: Agent(agent.name, AgentArgs(agent, context), pulumi.ResourceOptions(
                parent=self,
                depends_on=depends_on[agent.backend] + (shared_objects if agent.name in context.shared_objects else [])))
            for agent in spec.agents
        }
        self.agents = pulumi.Output.all(**{n: a.endpoint for n, a in agents.items()})
        self.agent_private_keys = pulumi.Output.secret(
            pulumi.Output.all(**{n: a.private_key for n, a in agents.items()})
        )
        self.register_outputs({"agents": self.agents, "agent_private_keys": self.agent_private_keys})
