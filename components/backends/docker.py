"""How one agent becomes a Docker container: the commands that create, wait for and remove it.

Why these choices (see DESIGN.md): the cloud-config reaches the container on stdin through
`docker exec -i`, never in argv, environment or labels; the SSH port is fixed for the container's
life and bound to 127.0.0.1 unless configured; capabilities are dropped to what sshd and
cloud-init need; the workspace is a named volume that outlives the container.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pulumi

from components.backends import Endpoint, MachineContext, machine
from components.command import LocalCommand
from components.cloudinit import SHARED_OBJECTS
from components.image import agent_image_tag
from components.spec import AgentSpec, SharedObjects

CREATE_SCRIPT = (Path(__file__).resolve().parent / "docker-create.sh").read_text()
MIRROR_SCRIPT = (Path(__file__).resolve().parent / "docker-mirror.sh").read_text()
WORKSPACE_MOUNT = "/home/agent/workspace"
READY_TIMEOUT_S = 180
# What cloud-init and sshd need, measured: sshd privilege separation and chroot, user creation,
# file ownership. Everything else is dropped.
CAPABILITIES = ("CHOWN", "SETUID", "SETGID", "SYS_CHROOT", "AUDIT_WRITE", "DAC_OVERRIDE", "FOWNER")


def capabilities(agent: AgentSpec) -> tuple[str, ...]:
    """Root in the container also needs NET_ADMIN to apply a restricted egress policy at boot."""
    return CAPABILITIES + (("NET_ADMIN",) if agent.egress == "restricted" else ())


def network_name(context: MachineContext) -> str:
    return f"agentfleet-{context.stack}"


def volume_name(context: MachineContext, agent: str) -> str:
    return f"{context.machine_name(agent)}-workspace"


def endpoint_host(agent: AgentSpec) -> str:
    """The address a client dials: the bound address, or loopback when bound to all."""
    return "127.0.0.1" if agent.bind_address == "0.0.0.0" else agent.bind_address


def network_commands(context: MachineContext) -> tuple[list[str], list[str]]:
    create = ["docker", "network", "create", *context.labels(), network_name(context)]
    return create, ["docker", "network", "rm", network_name(context)]


def shared_objects_volume(context: MachineContext) -> str:
    return f"agentfleet-{context.stack}-shared-objects"


def shared_objects_commands(context: MachineContext, shared: SharedObjects,
                            image: str | None = None) -> tuple[list[str], list[str]]:
    """Create (the credential on stdin) and delete argv of the fleet's shared objects: a volume
    holding `git clone --mirror` of the remote, made once by a throwaway container of the
    agents' image (default: the agent image)."""
    volume = shared_objects_volume(context)
    create = [
        "sh", "-c", MIRROR_SCRIPT, "docker-mirror", volume, f"{volume}-clone", shared.credential.kind,
        shared.remote.url, "\n".join(shared.known_hosts),
        " ".join((network_name(context), *context.attach_networks)), image or agent_image_tag(), *context.labels(),
    ]
    return create, ["docker", "volume", "rm", "--force", volume]


def shared_objects_stdin(shared: SharedObjects) -> str | None:
    """What the mirror's create command reads: the key (OpenSSH wants its final newline) or token."""
    secret = shared.credential.secret
    if not secret:
        return None
    return secret.rstrip("\n") + "\n" if shared.credential.kind == "ssh_key" else secret


def volume_commands(context: MachineContext, agent: AgentSpec) -> tuple[list[str], list[str]]:
    volume = volume_name(context, agent.name)
    create = ["docker", "volume", "create", *context.labels(agent.name), volume]
    return create, ["docker", "volume", "rm", "--force", volume]


def create_options(context: MachineContext, agent: AgentSpec) -> list[str]:
    """`docker create` options for one agent: identity, endpoint, workspace, limits, privileges."""
    options = [
        "--hostname", agent.name,
        "--network", network_name(context),
        "--restart", "unless-stopped",
        "--publish", f"{agent.bind_address}:{agent.ssh_port}:22",
        "--mount", f"type=volume,src={volume_name(context, agent.name)},dst={WORKSPACE_MOUNT}",
        *(["--mount", f"type=volume,src={shared_objects_volume(context)},dst={SHARED_OBJECTS},readonly"]
          if agent.name in context.shared_objects else []),
        "--cap-drop", "ALL",
        *[arg for cap in capabilities(agent) for arg in ("--cap-add", cap)],
        "--security-opt", "no-new-privileges",
        "--memory", f"{agent.resources.memory_mib}m",
        "--cpus", f"{agent.resources.cpus:g}",
        "--pids-limit", str(agent.resources.pids),
        *context.labels(agent.name),
    ]
    return [*options, agent.image or agent_image_tag()]


def container_commands(
    context: MachineContext, agent: AgentSpec, host_public_key: str
) -> tuple[list[str], list[str]]:
    """Create (reads the cloud-config on stdin, prints the endpoint JSON) and delete argv."""
    container = context.machine_name(agent.name)
    create = [
        "sh", "-c", CREATE_SCRIPT, "docker-create",
        container, container, endpoint_host(agent), str(agent.ssh_port), host_public_key,
        str(READY_TIMEOUT_S), " ".join(context.attach_networks), *create_options(context, agent),
    ]
    return create, ["docker", "rm", "--force", container]


def provision(
    agent: AgentSpec,
    context: MachineContext,
    user_data: pulumi.Output[str],
    host_public_key: pulumi.Output[str],
    opts: pulumi.ResourceOptions,
) -> pulumi.Output[Endpoint]:
    """The workspace volume and the container; returns the endpoint the container answers on."""
    volume_create, volume_delete = volume_commands(context, agent)
    volume = LocalCommand(
        f"{agent.name}-workspace",
        create=volume_create,
        delete=volume_delete,
        opts=pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(retain_on_delete=agent.retain_workspace)
        ),
    )
    return machine(
        f"{agent.name}-container",
        host_public_key.apply(lambda key: container_commands(context, agent, key)),
        user_data,
        pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[volume])),
    )


def missing_tools() -> list[str]:
    if shutil.which("docker") is None:
        return ["docker (install Debian's docker.io, or run scripts/setup)"]
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return ["a running Docker daemon (start dockerd, or run scripts/setup)"]
    if shutil.which("ssh-keyscan") is None:
        return ["ssh-keyscan (install openssh-client)"]
    return []


def port_conflicts(agents: list[AgentSpec], context: MachineContext) -> list[str]:
    """Agents whose SSH port is held by something other than their own container on this host.

    One `docker ps` per agent, run side by side: in series they cost a fleet of 20 about a
    second of every preview and up."""

    def holders(agent: AgentSpec) -> list[str]:
        return subprocess.run(
            ["docker", "ps", "-a", "--filter", f"publish={agent.ssh_port}", "--format", "{{.Names}}"],
            capture_output=True, text=True,
        ).stdout.split()

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
