"""Fleet: every agent of one stack, plus what each backend's agents share.

Why outputs are split: `agents` holds what anyone may read (endpoints, pinned host keys,
identities); `agent_private_keys` holds the operator keys and is a Pulumi secret as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi

from agentfleet.contract import AgentOutput, AppOutput, ForgeOutput
from components.agent import Agent, AgentArgs
from components.backends import MachineContext
from components.backends.registry import backend
from components.spec import FleetSpec


@dataclass
class FleetArgs:
    spec: FleetSpec


class Fleet(pulumi.ComponentResource):
    agents: pulumi.Output[dict[str, AgentOutput]]
    agent_private_keys: pulumi.Output[dict[str, str]]
    forge: Optional[pulumi.Output[ForgeOutput]]

    def __init__(self, name: str, args: FleetArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("agentfleet:index:Fleet", name, None, opts)
        spec = args.spec
        sharing = frozenset(agent.name for agent in spec.agents if spec.shares_objects(agent))
        context = MachineContext(spec.stack, spec.attach_networks, sharing, spec)
        child = pulumi.ResourceOptions(parent=self)
        needs: dict[str, list[pulumi.Resource]] = {}
        for kind in sorted(spec.backends()):
            needs.update(backend(kind).fleet_resources(spec, context, child))
        agents = {
            agent.name: Agent(agent.name, AgentArgs(agent, context),
                              pulumi.ResourceOptions(parent=self, depends_on=needs.get(agent.name, [])))
            for agent in spec.agents
        }
        # What follows the agents (Docker's warm pools, refilled after their claims).
        self.followers: list[pulumi.Resource] = []
        for kind in sorted(spec.backends()):
            after = getattr(backend(kind), "after_agents", None)
            if after is not None:
                self.followers += after(spec, context, {a.name: agents[a.name] for a in spec.agents
                                                        if a.backend == kind}, child)
        self.agents = pulumi.Output.all(**{n: a.endpoint for n, a in agents.items()})
        self.agent_private_keys = pulumi.Output.secret(
            pulumi.Output.all(**{n: a.private_key for n, a in agents.items()})
        )
        self.forge = None if spec.forge is None else pulumi.Output.secret(forge_output(spec, agents))
        self.register_outputs({})  # the stack exports them; a copy here would double their state


def forge_output(spec: FleetSpec, agents: dict[str, Agent]) -> pulumi.Output[ForgeOutput]:
    """The stack output `forge`; with an App, the expiry of each token `up` wrote into an agent
    (`exec` reads it to know which token the agent holds: agentfleet/apptokens.py)."""
    forge = spec.forge
    assert forge is not None
    output = ForgeOutput(kind=forge.kind, api=forge.api, repository=forge.repository, token=forge.token)
    app = spec.app
    if app is None:
        return pulumi.Output.from_input(output)
    minting = {name: agent.token_expires_at for name, agent in agents.items() if agent.token_expires_at is not None}
    return pulumi.Output.all(**minting).apply(lambda expires: ForgeOutput(
        **output, app=AppOutput(id=app.id, installation=app.installation, private_key=app.private_key,
                                agents=sorted(expires), expires=expires)))
