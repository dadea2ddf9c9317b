"""How one agent becomes a Docker container, and what a Docker fleet shares (its network, the
shared objects).

Why these choices (see DESIGN.md): the cloud-config reaches the container as a NoCloud seed in
the API's request body, never in argv, environment or labels; the SSH port is fixed for the
container's life and bound to 127.0.0.1 unless configured; capabilities are dropped to what sshd
and cloud-init need; the workspace is a named volume that outlives the container. Every piece is
a `Reconciled` resource driven by docker_engine.py, so refresh sees it and up heals it.
"""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pulumi

from agentfleet.contract import WORKSPACE
from components.backends import Endpoint, MachineContext
from components.cloudinit import SHARED_OBJECTS
from components.image import agent_image_tag
from components.reapply import in_place_fields
from components.reconciled import Reconciled
from components.spec import AgentSpec, FleetSpec

ENGINE = "components.backends.docker_engine"
# What cloud-init and sshd need, measured: sshd privilege separation and chroot, user creation,
# file ownership. Everything else is dropped.
CAPABILITIES = ("CHOWN", "SETUID", "SETGID", "SYS_CHROOT", "AUDIT_WRITE", "DAC_OVERRIDE", "FOWNER")
RESTART_POLICY = "unless-stopped"


class DockerContainer(Reconciled, module="agentfleet", name="DockerContainer"):
    DRIVER = f"{ENGINE}:ContainerDriver"
    OUTPUTS = frozenset({"host"})
    host: pulumi.Output[str]
    port: pulumi.Output[int]


class DockerVolume(Reconciled, module="agentfleet", name="DockerVolume"):
    DRIVER = f"{ENGINE}:VolumeDriver"


class DockerNetwork(Reconciled, module="agentfleet", name="DockerNetwork"):
    DRIVER = f"{ENGINE}:NetworkDriver"


class SharedObjectsVolume(Reconciled, module="agentfleet", name="SharedObjects"):
    DRIVER = f"{ENGINE}:MirrorDriver"


def capabilities(agent: AgentSpec) -> tuple[str, ...]:
    """Root in the container also needs NET_ADMIN to apply the egress policy; every agent gets it,
    so that `egress` changes in place. The agent user has no capabilities either way."""
    return CAPABILITIES + ("NET_ADMIN",)


def network_name(context: MachineContext) -> str:
    return f"agentfleet-{context.stack}"


def volume_name(context: MachineContext, agent: str) -> str:
    return f"{context.machine_name(agent)}-workspace"


def shared_objects_volume(context: MachineContext) -> str:
    return f"agentfleet-{context.stack}-shared-objects"


def endpoint_host(agent: AgentSpec) -> str:
    """The address a client dials: the bound address, or loopback when bound to all."""
    return "127.0.0.1" if agent.bind_address == "0.0.0.0" else agent.bind_address


def container_fields(context: MachineContext, agent: AgentSpec) -> dict[str, Any]:
    """Everything that defines one agent's container, as the resource's inputs."""
    return {
        "name": context.machine_name(agent.name),
        "image": agent.image or agent_image_tag(),
        "hostname": agent.name,
        "network": network_name(context),
        "extra_networks": list(context.attach_networks),
        "bind_address": agent.bind_address,
        "port": agent.ssh_port,
        "endpoint_host": endpoint_host(agent),
        "workspace_volume": volume_name(context, agent.name),
        "workspace_mount": WORKSPACE,
        "shared_objects_volume": shared_objects_volume(context) if agent.name in context.shared_objects else None,
        "shared_objects_mount": SHARED_OBJECTS,
        "capabilities": sorted(capabilities(agent)),
        "memory_mib": agent.resources.memory_mib,
        "cpus": agent.resources.cpus,
        "pids": agent.resources.pids,
        "restart": RESTART_POLICY,
        "labels": context.labels(agent.name),
        "state": "running",
        **in_place_fields(agent),
    }


class DockerBackend:
    def missing_tools(self) -> list[str]:
        from components.backends.docker_engine import engine

        try:
            engine().ping()
        except Exception:  # noqa: BLE001 - any failure means the same thing here
            return ["a running Docker daemon (start dockerd, or run scripts/setup)"]
        return []

    def preflight(self, fleet: FleetSpec, agents: list[AgentSpec]) -> list[str]:
        return port_conflicts(agents, MachineContext(fleet.stack, fleet.attach_networks))

    def fleet_resources(self, fleet: FleetSpec, context: MachineContext,
                        opts: pulumi.ResourceOptions) -> dict[str, list[pulumi.Resource]]:
        """The stack's network; the shared objects before the agents that mount them."""
        name = network_name(context)
        network = DockerNetwork(f"fleet-network", {"name": name, "labels": context.labels(), "state": "present"},
                                opts=opts)
        needs: dict[str, list[pulumi.Resource]] = {a.name: [network] for a in fleet.agents if a.backend == "docker"}
        sharing = [a for a in fleet.agents if a.name in context.shared_objects]
        if fleet.shared_objects is not None and sharing:
            shared = fleet.shared_objects
            secret = shared.credential.secret
            mirror = SharedObjectsVolume("fleet-shared-objects", {
                "name": shared_objects_volume(context),
                "remote": shared.remote.url,
                "kind": shared.credential.kind,
                "known_hosts": list(shared.known_hosts),
                "networks": [name, *context.attach_networks],
                "image": sharing[0].image or agent_image_tag(),
                "labels": context.labels(),
                "state": "present",
            }, secret=secret, opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
                depends_on=[network],
                # Kept while a kept workspace borrows from it.
                retain_on_delete=any(a.retain_workspace for a in sharing))))
            for agent in sharing:
                needs[agent.name].append(mirror)
        return needs

    def provision(self, agent: AgentSpec, context: MachineContext, user_data: pulumi.Output[str],
                  host_public_key: pulumi.Output[str], opts: pulumi.ResourceOptions) -> pulumi.Output[Endpoint]:
        """The workspace volume and the container; returns the endpoint the container answers on."""
        volume = DockerVolume(
            f"{agent.name}-workspace",
            {"name": volume_name(context, agent.name), "labels": context.labels(agent.name), "state": "present"},
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(retain_on_delete=agent.retain_workspace)),
        )
        container = DockerContainer(
            f"{agent.name}-container",
            {**container_fields(context, agent), "host_public_key": host_public_key},
            secret=user_data,
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[volume])),
        )
        return pulumi.Output.all(container.host, container.port).apply(
            lambda values: Endpoint(host=values[0], port=int(values[1])))


BACKEND = DockerBackend()


def port_conflicts(agents: list[AgentSpec], context: MachineContext) -> list[str]:
    """Agents whose SSH port is held by something other than their own container on this host."""
    from components.backends.docker_engine import engine

    client = engine()

    def holders(agent: AgentSpec) -> list[str]:
        return [c.name for c in client.containers.list(all=True, filters={"publish": str(agent.ssh_port)})]

    with ThreadPoolExecutor(max_workers=8) as pool:
        found = list(pool.map(holders, agents))
    problems = []
    for agent, names in zip(agents, found):
        others = [name for name in names if name != context.machine_name(agent.name)]
        if others or (not names and not _port_free(agent.bind_address, agent.ssh_port)):
            holder = f"container {others[0]}" if others else "another process"
            problems.append(
                f'stack "{context.stack}", agent "{agent.name}": port {agent.ssh_port} is taken on this '
                f"host by {holder}; set `ssh_port` for this agent to a free port"
            )
    return problems


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
