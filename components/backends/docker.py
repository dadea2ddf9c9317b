"""How one agent becomes a Docker container: the commands that create, wait for and remove it.

Why these choices (see DESIGN.md): the cloud-config reaches the container on stdin through
`docker exec -i`, never in argv, environment or labels; the SSH port is fixed for the container's
life and bound to 127.0.0.1 unless configured; capabilities are dropped to what sshd and
cloud-init need; the workspace is a named volume that outlives the container.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi

from components.command import LocalCommand
from components.image import agent_image_tag
from components.spec import AgentSpec

CREATE_SCRIPT = (Path(__file__).resolve().parent / "docker-create.sh").read_text()
WORKSPACE_MOUNT = "/home/agent/workspace"
READY_TIMEOUT_S = 180
# What cloud-init and sshd need, measured: sshd privilege separation and chroot, user creation,
# file ownership. Everything else is dropped.
CAPABILITIES = ("CHOWN", "SETUID", "SETGID", "SYS_CHROOT", "AUDIT_WRITE", "DAC_OVERRIDE", "FOWNER")


@dataclass(frozen=True)
class DockerNames:
    """Names of one stack's Docker objects, derived in one place so create and delete agree."""

    stack: str

    @property
    def network(self) -> str:
        return f"agentfleet-{self.stack}"

    def container(self, agent: str) -> str:
        return f"agentfleet-{self.stack}-{agent}"

    def volume(self, agent: str) -> str:
        return f"agentfleet-{self.stack}-{agent}-workspace"

    def labels(self, agent: str | None = None) -> list[str]:
        labels = ["--label", "agentfleet.stack=" + self.stack]
        return labels + (["--label", "agentfleet.agent=" + agent] if agent else [])


def endpoint_host(agent: AgentSpec) -> str:
    """The address a client dials: the bound address, or loopback when bound to all."""
    return "127.0.0.1" if agent.bind_address == "0.0.0.0" else agent.bind_address


def network_commands(names: DockerNames) -> tuple[list[str], list[str]]:
    create = ["docker", "network", "create", *names.labels(), names.network]
    return create, ["docker", "network", "rm", names.network]


def volume_commands(names: DockerNames, agent: AgentSpec) -> tuple[list[str], list[str]]:
    volume = names.volume(agent.name)
    create = ["docker", "volume", "create", *names.labels(agent.name), volume]
    return create, ["docker", "volume", "rm", "--force", volume]


def create_options(names: DockerNames, agent: AgentSpec) -> list[str]:
    """`docker create` options for one agent: identity, endpoint, workspace, limits, privileges."""
    options = [
        "--hostname", agent.name,
        "--network", names.network,
        "--restart", "unless-stopped",
        "--publish", f"{agent.bind_address}:{agent.ssh_port}:22",
        "--mount", f"type=volume,src={names.volume(agent.name)},dst={WORKSPACE_MOUNT}",
        "--cap-drop", "ALL",
        *[arg for cap in CAPABILITIES for arg in ("--cap-add", cap)],
        "--security-opt", "no-new-privileges",
        "--memory", f"{agent.resources.memory_mib}m",
        "--cpus", f"{agent.resources.cpus:g}",
        "--pids-limit", str(agent.resources.pids),
        *names.labels(agent.name),
    ]
    return [*options, agent.image or agent_image_tag()]


def container_commands(
    names: DockerNames, agent: AgentSpec, host_public_key: str, attach_networks: tuple[str, ...]
) -> tuple[list[str], list[str]]:
    """Create (reads the cloud-config on stdin, prints the endpoint JSON) and delete argv."""
    container = names.container(agent.name)
    create = [
        "sh", "-c", CREATE_SCRIPT, "docker-create",
        container, container, endpoint_host(agent), str(agent.ssh_port), host_public_key,
        str(READY_TIMEOUT_S), " ".join(attach_networks), *create_options(names, agent),
    ]
    return create, ["docker", "rm", "--force", container]


def provision(
    agent: AgentSpec,
    names: DockerNames,
    user_data: pulumi.Output[str],
    host_public_key: pulumi.Output[str],
    attach_networks: tuple[str, ...],
    opts: pulumi.ResourceOptions,
) -> LocalCommand:
    """The workspace volume and the container; the container's stdout is the endpoint JSON."""
    volume_create, volume_delete = volume_commands(names, agent)
    volume = LocalCommand(
        f"{agent.name}-workspace",
        create=volume_create,
        delete=volume_delete,
        opts=pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(retain_on_delete=agent.retain_workspace)
        ),
    )
    create_and_delete = host_public_key.apply(
        lambda key: container_commands(names, agent, key, attach_networks)
    )
    return LocalCommand(
        f"{agent.name}-container",
        create=create_and_delete.apply(lambda commands: commands[0]),
        delete=create_and_delete.apply(lambda commands: commands[1]),
        stdin=user_data,
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[volume])),
    )
