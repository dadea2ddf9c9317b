"""One agent's Docker work as a script would do it: the baseline `pulumi up` is measured against.

Why the product's own values: the script must cost what a Docker agent costs and nothing more
or less, so that the difference is what Pulumi and the provider add. It takes the container's
fields from `container_fields` (the resource's inputs) and turns them into `docker create`
options the engine applies alike; the cloud-config is rendered by the product with fresh keys
and travels as the same NoCloud seed archive, copied in before the container starts
(`docker cp - NAME:/`, the CLI's form of the API's archive upload); the wait in the container
for cloud-init and sshd is the backend's own script. One simplification: the script applies the
egress policy inside the agent's container (its root holding NET_ADMIN, the cloud-config carrying
the policy), where the product runs it in a policy container of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.backends import MachineContext
from components.backends.docker.backend import container_fields
from components.backends.docker.driver import CPU_PERIOD, seed_archive
from components.cloudinit import AgentKeys, render_cloud_config
from components.keys import generate_ed25519
from components.spec import AgentSpec

ENDPOINT = "127.0.0.1"


def pinned_fields(context: MachineContext, agent: AgentSpec) -> dict[str, Any]:
    """The container's fields with its port and address settled, as a script has them: the
    agent's `ssh_port` (or where the product's search would start) on 127.0.0.1."""
    return {**container_fields(context, agent), "port": agent.ssh_port or agent.preferred_port,
            "bind_address": agent.bind_address or ENDPOINT}


def create_options(fields: dict[str, Any]) -> list[str]:
    """`docker create` options (and the image) for a container of these fields, as the
    ContainerDriver creates it through the API."""
    options = ["--name", fields["name"], "--hostname", fields["hostname"], "--network", fields["network"],
               "--publish", f"{fields['bind_address']}:{fields['port']}:22/tcp",
               "--mount", f"type=volume,src={fields['workspace_volume']},dst={fields['workspace_mount']}"]
    if fields.get("shared_objects_volume"):
        options += ["--mount", f"type=volume,src={fields['shared_objects_volume']},"
                               f"dst={fields['shared_objects_mount']},readonly"]
    options += ["--cap-drop", "ALL"]
    for capability in [*fields["capabilities"], "NET_ADMIN"]:  # the policy applied inside (see above)
        options += ["--cap-add", capability]
    memory = f"{int(fields['memory_mib'])}m"
    options += ["--security-opt", "no-new-privileges", "--restart", fields["restart"],
                "--memory", memory, "--memory-swap", memory, "--cpu-period", str(CPU_PERIOD),
                "--cpu-quota", str(int(float(fields["cpus"]) * CPU_PERIOD)), "--pids-limit", str(int(fields["pids"]))]
    for key, value in fields["labels"].items():
        options += ["--label", f"{key}={value}"]
    return [*options, fields["image"]]


@dataclass(frozen=True)
class ScriptedAgent:
    """What the script needs for one agent; `seed`, `key` and `known_hosts` are files (0600)."""

    name: str
    port: int
    volume: str
    extra_networks: tuple[str, ...]
    create_options: tuple[str, ...]
    seed: Path
    key: Path
    known_hosts: Path


def prepare(agent: AgentSpec, context: MachineContext, remote_key: str, directory: Path) -> ScriptedAgent:
    """Fresh operator and host keys, the product's cloud-config as a seed archive, and the
    client's key and pinned known_hosts line, written under `directory` (private scratch)."""
    fields = pinned_fields(context, agent)
    operator_private, operator_public = generate_ed25519(f"operator@{agent.name}")
    host_private, host_public = generate_ed25519(f"{agent.name}@host")
    user_data = render_cloud_config(agent, AgentKeys(operator_public, host_private, host_public,
                                                     remote_private_key=remote_key))
    directory.mkdir(parents=True, exist_ok=True)

    def private(name: str, content: bytes) -> Path:
        path = directory / f"{agent.name}.{name}"
        path.write_bytes(content)
        path.chmod(0o600)
        return path

    return ScriptedAgent(
        name=fields["name"], port=int(fields["port"]), volume=fields["workspace_volume"],
        extra_networks=tuple(context.attach_networks), create_options=tuple(create_options(fields)),
        seed=private("seed.tar", seed_archive(fields["name"], fields["hostname"], user_data)),
        key=private("key", operator_private.encode()),
        known_hosts=private("known_hosts", f"[{ENDPOINT}]:{fields['port']} "
                                           f"{' '.join(host_public.split()[:2])}\n".encode()),
    )
