"""How one agent becomes a Docker container, and what a Docker fleet shares (its network, the
shared objects).

Why these choices (see DESIGN.md): the cloud-config reaches the container as a NoCloud seed in
the API's request body, never in argv, environment or labels; the SSH port is fixed for the
container's life and bound to 127.0.0.1 unless configured; capabilities are dropped to what sshd
and cloud-init need, and the egress policy runs in a policy container whose network namespace the
agent's container joins (policy.py), out of its reach; the workspace is a named volume that outlives the container. Every piece is
a `Reconciled` resource driven by driver.py, so refresh sees it and up heals it.
"""

from __future__ import annotations

import socket
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pulumi

from agentfleet.contract import WORKSPACE, ForgeGate
from components.backends import Endpoint, MachineContext
from components.backends.docker.policy import policy_fields, policy_name
from components.backends.docker.pool import claimable, pool_hint, pool_name, shape
from components.cloudinit import SHARED_OBJECTS
from components.image import agent_image_tag
from components.reapply import in_place_fields
from components.reconciled import Reconciled
from components.spec import LOCAL_HOST, PORT_SPAN, AgentSpec, FleetSpec, HostSpec

# What cloud-init and sshd need, measured: sshd privilege separation and chroot, user creation,
# file ownership. Everything else is dropped.
CAPABILITIES = ("CHOWN", "SETUID", "SETGID", "SYS_CHROOT", "AUDIT_WRITE", "DAC_OVERRIDE", "FOWNER")
RESTART_POLICY = "unless-stopped"


class DockerContainer(Reconciled):
    KIND = "DockerContainer"
    host: pulumi.Output[str]
    port: pulumi.Output[int]
    user_namespace: pulumi.Output[str]


class DockerVolume(Reconciled):
    KIND = "DockerVolume"
    volume: pulumi.Output[str]


class DockerNetwork(Reconciled):
    KIND = "DockerNetwork"


class DockerImage(Reconciled):
    KIND = "DockerImage"


class SharedObjectsVolume(Reconciled):
    KIND = "SharedObjects"


class DockerPool(Reconciled):
    KIND = "DockerPool"


def network_name(context: MachineContext) -> str:
    return f"agentfleet-{context.stack}"


def volume_name(context: MachineContext, agent: str) -> str:
    return f"{context.machine_name(agent)}-workspace"


def shared_objects_volume(context: MachineContext) -> str:
    return f"agentfleet-{context.stack}-shared-objects"


def fleet_of(context: MachineContext) -> FleetSpec:
    """The context's fleet; a context made without one (benches, tests) has the local host only."""
    return context.fleet or FleetSpec(context.stack, (), context.attach_networks, hosts=(
        HostSpec(LOCAL_HOST, attach_networks=context.attach_networks),))


def engine_fields(host: HostSpec) -> dict[str, Any]:
    """How a driver reaches a host's engine: nothing secret (the operator key stays in its file)."""
    fields: dict[str, Any] = {"name": host.name, "address": host.address, "endpoint_address": host.endpoint_address,
                              "attach_networks": list(host.attach_networks)}
    if not host.is_local:
        fields["known_hosts"] = list(host.known_hosts)
        fields["identity_file"] = host.identity_file or "~/.ssh/id_ed25519"
    return fields


def placed(context: MachineContext, agent: AgentSpec) -> dict[str, Any]:
    """Where an agent is made: every host's engine and its placement (hints), or its `host`."""
    fleet = fleet_of(context)
    fields = {"engines": {host.name: engine_fields(host) for host in fleet.hosts_for("docker")}, "placement": fleet.placement(agent)}
    return {**fields, "engine_host": agent.host} if agent.host else fields


def container_fields(context: MachineContext, agent: AgentSpec) -> dict[str, Any]:
    """Everything that defines one agent's container, as the resource's inputs; its port and bind
    address only when the config gives them (else they are chosen on its host when it is made)."""
    fleet = fleet_of(context)
    fields: dict[str, Any] = {
        "name": context.machine_name(agent.name),
        "image": agent.image or agent_image_tag(),
        "hostname": agent.name,
        "network": network_name(context),
        "workspace_volume": volume_name(context, agent.name),
        "workspace_mount": WORKSPACE,
        "shared_objects_mount": SHARED_OBJECTS,
        "capabilities": sorted(CAPABILITIES),
        "memory_mib": agent.resources.memory_mib,
        "cpus": agent.resources.cpus,
        "pids": agent.resources.pids,
        "restart": RESTART_POLICY,
        "labels": context.labels(agent.name),
        "state": "running",
        "preferred_port": agent.preferred_port,
        "port_base": fleet.port_base,
        "port_span": PORT_SPAN,
        "egress": policy_fields(agent),
        **placed(context, agent),
        **in_place_fields(agent),
        **context.forge_gate(agent),
    }
    if agent.name in context.shared_objects:
        fields["shared_objects_volume"] = shared_objects_volume(context)
    if agent.ssh_port is not None:
        fields["port"] = agent.ssh_port
    if agent.bind_address is not None:
        fields["bind_address"] = agent.bind_address
    return fields


class DockerBackend:
    # The egress policy runs in each agent's policy container (policy.py), not in its cloud-config.
    policy_in_machine = False

    def runs_agent_image(self, agent: AgentSpec, context: MachineContext) -> bool:
        return agent.image in (None, agent_image_tag())

    def missing_tools(self) -> list[str]:
        from components.backends.docker.driver import client
        from components.backends.docker.engines import EngineError

        try:
            client().ping()
        except (EngineError, Exception):  # noqa: BLE001 - any failure means the same thing here
            return ["a running Docker daemon (start dockerd, or run scripts/setup)"]
        return []

    def preflight(self, fleet: FleetSpec, agents: list[AgentSpec]) -> list[str]:
        return host_problems(fleet, agents)

    def fleet_resources(self, fleet: FleetSpec, context: MachineContext,
                        opts: pulumi.ResourceOptions) -> dict[str, list[pulumi.Resource]]:
        """Per host: the stack's network and (remote hosts) the agent image; the shared objects
        before the agents that mount them."""
        agents = [a for a in fleet.agents if a.backend == "docker"]
        images = sorted({a.image or agent_image_tag() for a in agents})
        per_host: dict[str, list[pulumi.Resource]] = {}
        for host in fleet.hosts_for("docker"):
            suffix = "" if host.is_local else f"-{host.name}"
            engine = engine_fields(host)
            made: list[pulumi.Resource] = [DockerNetwork(f"fleet-network{suffix}", {
                "name": network_name(context), "labels": context.labels(), "state": "present", "engine": engine,
            }, opts=opts)]
            if not host.is_local:
                made += [DockerImage(f"fleet-image-{host.name}-{image.rsplit(':', 1)[-1]}", {
                    "name": image, "engine": engine, "state": "present"}, opts=opts) for image in images]
            per_host[host.name] = made
        needs = {a.name: list(per_host[fleet.placement(a)]) for a in agents}
        sharing = [a for a in agents if a.name in context.shared_objects]
        if fleet.shared_objects is not None and sharing:
            shared = fleet.shared_objects
            for host_name in sorted({fleet.placement(a) for a in sharing}):
                host = fleet.host(host_name)
                mirror = SharedObjectsVolume(f"fleet-shared-objects{'' if host.is_local else '-' + host.name}", {
                    "name": shared_objects_volume(context),
                    "remote": shared.remote.url,
                    "kind": shared.credential.kind,
                    "known_hosts": list(shared.known_hosts),
                    "networks": [network_name(context), *host.attach_networks],
                    "image": sharing[0].image or agent_image_tag(),
                    "labels": context.labels(),
                    "engine": engine_fields(host),
                    "state": "present",
                    "forge_gate": ForgeGate(host=shared.remote.host, connections=fleet.forge_connections),
                }, secret=shared.credential.secret, opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
                    depends_on=per_host[host_name],
                    # Kept while a kept workspace borrows from it.
                    retain_on_delete=any(a.retain_workspace for a in sharing))))
                for agent in sharing:
                    if fleet.placement(agent) == host_name:
                        needs[agent.name].append(mirror)
        return needs

    def provision(self, agent: AgentSpec, context: MachineContext, user_data: pulumi.Output[str],
                  host_public_key: pulumi.Output[str], opts: pulumi.ResourceOptions) -> pulumi.Output[Endpoint]:
        """The workspace volume and the container; returns the endpoint the container answers on."""
        fields = container_fields(context, agent)
        volume = DockerVolume(
            f"{agent.name}-workspace",
            {"name": volume_name(context, agent.name), "labels": context.labels(agent.name), "state": "present",
             "machine": context.machine_name(agent.name), **placed(context, agent),
             **pool_hint(fleet_of(context), context, agent, fields)},
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(retain_on_delete=agent.retain_workspace)),
        )
        # The engine's name of the volume: the claimed member's (a state from before pools: none).
        workspace = volume.volume.apply(lambda name: name or fields["workspace_volume"])
        container = DockerContainer(
            f"{agent.name}-container",
            {**fields, "workspace_volume": workspace, "host_public_key": host_public_key},
            secret=user_data,
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[volume])),
        )
        return pulumi.Output.all(container.host, container.port, container.user_namespace).apply(
            lambda values: Endpoint(host=values[0], port=int(values[1]), user_namespace=values[2]))

    def after_agents(self, fleet: FleetSpec, context: MachineContext, agents: dict[str, pulumi.Resource],
                     opts: pulumi.ResourceOptions) -> list[pulumi.Resource]:
        """Per Docker host, its warm pool (`pool: {size: N}`), after its agents: their claims
        come first, and the pool is refilled in the same `up`."""
        pools: list[pulumi.Resource] = []
        if not fleet.pool_size:
            return pools
        claimable_agents = [a for a in fleet.agents if claimable(fleet, a)]
        for host in fleet.hosts_for("docker"):
            here = [a for a in claimable_agents if fleet.placement(a) == host.name] or claimable_agents
            if not here:
                continue
            template = member_template(context, here, host)
            name = pool_name(context, host)
            pools.append(DockerPool("fleet-pool" + ("" if host.is_local else f"-{host.name}"), {
                "name": name, "size": fleet.pool_size, "member": template, "shape": shape(template),
                "agents": sorted(a.name for a in fleet.agents if a.backend == "docker" and fleet.placement(a) == host.name),
                "state": "present", "engines": {h.name: engine_fields(h) for h in fleet.hosts_for("docker")}, "placement": host.name,
            }, opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=list(agents.values())))))
        return pools


BACKEND = DockerBackend()


def member_template(context: MachineContext, agents: list[AgentSpec], host: HostSpec) -> dict[str, Any]:
    """The container fields members are made with: the most common shape among these agents,
    on this host, its policy closed (nothing allowed), no identity, the stack's labels."""
    shapes = Counter(shape(container_fields(context, a)) for a in agents)
    common = next(a for a in agents if shape(container_fields(context, a)) == shapes.most_common(1)[0][0])
    blank = replace(common, egress="restricted", allow=(), dns=(), remote=None, host=host.name)
    fields = container_fields(context, blank)
    for key in ("name", "hostname", "workspace_volume", "preferred_port", "engines", "placement", "engine_host"):
        fields.pop(key, None)
    return {**fields, "labels": context.labels()}


def host_problems(fleet: FleetSpec, agents: list[AgentSpec]) -> list[str]:
    """Per host its agents are placed on: reachable with its pinned key and Docker answering (the
    error names the host and its agents), the agent images at hand, explicit ports free there."""
    from components.backends.docker.driver import client
    from components.backends.docker.engines import EngineError, has_image, held_ports

    problems = []
    by_host = fleet.placed(agents)

    def check(host: HostSpec) -> list[str]:
        placed_agents = by_host[host]
        where = f'stack "{fleet.stack}": host "{host.name}"' + ("" if host.is_local else f" ({host.address})")
        names = ", ".join(a.name for a in placed_agents)
        try:
            docker = client(engine_fields(host))
            docker.ping()
            found = []
            for image in sorted({a.image or agent_image_tag() for a in placed_agents}):
                if not has_image(docker, image) and not has_image(client(), image):
                    found.append(f"{where} (agents {names}): the image {image} is neither there nor on the "
                                 "local engine to send; run scripts/setup (it builds the agent image)")
            held = held_ports(docker)
        except (EngineError, Exception) as error:  # noqa: BLE001 - whatever failed, the host is unusable
            return [f"{where} (agents {names}): {error}"]
        for agent in placed_agents:
            if agent.ssh_port is None:
                continue
            mine = policy_name(context_name(fleet, agent))  # its policy container publishes the port
            holders = [c.name for c in docker.containers.list(all=True, filters={"publish": str(agent.ssh_port)})]
            others = [name for name in holders if name != mine]
            if others or (agent.ssh_port in held and mine not in holders) or (
                    host.is_local and not holders and not _port_free(agent.bind_address or "127.0.0.1", agent.ssh_port)):
                holder = f"container {others[0]}" if others else "another process"
                found.append(f'stack "{fleet.stack}", agent "{agent.name}": port {agent.ssh_port} is taken on host '
                             f'"{host.name}" by {holder}; set `ssh_port` to a free port or leave it out to have one chosen')
        return found

    with ThreadPoolExecutor(max_workers=8) as pool:
        for found in pool.map(check, by_host):
            problems += found
    return problems


def context_name(fleet: FleetSpec, agent: AgentSpec) -> str:
    return MachineContext(fleet.stack).machine_name(agent.name)


def _port_free(address: str, port: int) -> bool:
    """Whether a listener could bind address:port. SO_REUSEADDR, as Docker's proxy binds: a port
    whose only sockets are closed connections in TIME_WAIT (a fleet just destroyed) is free."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
            return True
        except OSError:
            return False
