"""Agent: one coding agent's machine, keys, cloud-config and SSH endpoint.

Why a component: each agent owns its keys (operator, host, remote) and its machine, so adding,
changing or removing one agent touches that agent's resources and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi

from agentfleet.contract import LOGIN_USER, WORKSPACE, AgentOutput, ForgeGate, deploy_key_title, ssh_config_block
from agentfleet.throttle import DEFAULT_FORGE_CONNECTIONS
from agentfleet.sshkeys import host_key_name
from components.backends import Endpoint, MachineContext
from components.backends.registry import backend
from components.apptoken import AppToken
from components.cloudinit import SHARED_OBJECTS, AgentKeys, render_cloud_config
from components.deploykey import DeployKey
from components.keys import SshKeyPair
from components.spec import AgentSpec, BaseSpec


@dataclass
class AgentArgs:
    spec: AgentSpec
    context: MachineContext


class Agent(pulumi.ComponentResource):
    """Outputs: `endpoint` (plain, what the client needs), `private_key` (secret) and, for an agent
    pushing with GitHub App tokens, `token_expires_at`: when the token `up` wrote into it expires."""

    endpoint: pulumi.Output[AgentOutput]
    private_key: pulumi.Output[str]
    token_expires_at: Optional[pulumi.Output[float]]

    def __init__(self, name: str, args: AgentArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("agentfleet:index:Agent", name, None, opts)
        spec = args.spec
        child = pulumi.ResourceOptions(parent=self)
        if spec.egress == "open":
            pulumi.log.warn(f"egress is open: agent {name} may connect to any host", resource=self)

        operator_key = SshKeyPair(f"{name}-operator-key", comment=f"operator@{name}", opts=child)
        host_key = SshKeyPair(f"{name}-host-key", comment=f"{name}@agentfleet-host", opts=child)
        remote_key = (
            SshKeyPair(f"{name}-remote-key", comment=f"{name}@agentfleet", opts=child)
            if spec.generates_remote_key else None
        )
        given_secret = pulumi.Output.secret(spec.credential.secret) if spec.credential.secret else None
        fleet = args.context.fleet
        minted = fleet is not None and fleet.mints_token(spec)
        self.token_expires_at = None
        if minted:  # its https remote's credential: an App installation token, minted before the machine is made
            assert fleet is not None and fleet.forge is not None and fleet.app is not None
            app_token = AppToken(f"{name}-app-token", fleet.forge, fleet.app, name, child)
            given_secret, self.token_expires_at = app_token.token, app_token.expires_at
        https_token = given_secret if spec.credential.kind == "https_token" or minted else None

        base = fleet.base if fleet else BaseSpec()
        connections = fleet.forge_connections if fleet else DEFAULT_FORGE_CONNECTIONS
        reference = SHARED_OBJECTS if spec.name in args.context.shared_objects else None
        machine_kind = backend(spec.backend)
        in_image = machine_kind.runs_agent_image(spec, args.context)
        user_data = pulumi.Output.all(
            operator_key.public_key,
            host_key.private_key,
            host_key.public_key,
            remote_key.private_key if remote_key else given_secret if spec.credential.kind == "ssh_key" else None,
            https_token,
        ).apply(lambda keys: render_cloud_config(spec, AgentKeys(*keys), reference, fleet,
                                                 policy=machine_kind.policy_in_machine, shared=not in_image))

        # With a forge, the key is registered (as a deploy key, or as the agent's forge user's key) before
        # the machine is made: its first clone at boot works.
        machine = child
        if remote_key is not None and fleet is not None and fleet.forge is not None:
            deploy_key = DeployKey(f"{name}-deploy-key", fleet.forge, deploy_key_title(args.context.stack, name),
                                   remote_key.public_key, child, owner=spec.forge_user)
            machine = pulumi.ResourceOptions(parent=self, depends_on=[deploy_key])

        address = machine_kind.provision(
            spec, args.context, pulumi.Output.secret(user_data), host_key.public_key, machine
        )

        self.private_key = pulumi.Output.secret(operator_key.private_key)
        self.endpoint = pulumi.Output.all(
            address, host_key.public_key, remote_key.public_key if remote_key else None
        ).apply(lambda values: agent_output(spec, base, args.context.stack, *values, connections=connections))
        # The values stay attributes only: the stack's outputs already hold them, and a copy in
        # each component's state cost 1.5 KB per agent here and again in the Fleet.
        self.register_outputs({})


def agent_output(spec: AgentSpec, base: BaseSpec, stack: str, address: Endpoint, host_public_key: str,
                 remote_public_key: Optional[str], connections: int = DEFAULT_FORGE_CONNECTIONS) -> AgentOutput:
    host, port = address["host"], int(address["port"])
    key_type, key_body = host_public_key.split()[:2]
    return AgentOutput(
        backend=spec.backend,
        host=host,
        port=port,
        user=LOGIN_USER,
        known_hosts=f"{host_key_name(host, port)} {key_type} {key_body}",
        identity={"name": spec.identity.name, "email": spec.identity.email},
        remote=spec.remote.url if spec.remote else None,
        branch=spec.branch,
        workspace=WORKSPACE,
        remote_public_key=remote_public_key,
        ssh_config=ssh_config_block(spec.name, host, port, stack),
        base=base.branch,
        # Without a remote there is no base to lag behind, and `exec` need not ask.
        warn_behind=base.warn_behind if spec.remote else None,
        forge_gate=ForgeGate(host=spec.remote.host, connections=connections) if spec.remote else None,
        user_namespace=address.get("user_namespace"),
    )
