"""The warm pool: Docker agents booted ahead of need, with no identity, claimed by new agents.

Why a pool: booting an agent (its policy container, cloud-init, sshd) is most of the time a new
agent takes; a member has done all of that already. A new agent claims one and gets its identity,
operator key, pinned host key, remote credential, policy and first clone through the in-place
update path (apply.py's `claim_in_place`), which is a fraction of a boot.

How (see docs/configuration.md, "A warm pool"):
- A member is an agent's pair of containers (driver.py's ContainerDriver) named
  `<pool>.<hex>` (a dot: no agent's machine name has one), booted from a document with no
  operator key, a throwaway host key and no clone, its policy closed (no egress at all), and its
  own workspace volume. Its labels say the pool (POOL_LABEL) and its shape (SHAPE_LABEL): the
  fields fixed at creation (image, limits, capabilities, network, mounts) that an agent must
  share to claim it.
- The claim is a rename of the member's container by name to the agent's machine name, one at
  a time per engine in the provider: a rename by a name already gone fails, so two agents of
  one `up` never claim the same member. The
  agent's workspace is then the member's volume (the DockerVolume resource records it as
  `volume`), and it stays the agent's through replacements like any workspace.
- The pool is a resource per Docker host (`DockerPool`) that depends on the agents there: its
  `agents` input changes when agents are added, so the same `up` refills it after the claims;
  its refresh reads how many healthy members there are (`size`), and `up` heals the difference.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any, Optional

from docker.errors import APIError, NotFound

from components.backends import MachineContext
from components.backends.docker.policy import policed_state, policy_name
from components.spec import AgentSpec, FleetSpec, HostSpec

POOL_LABEL = "agentfleet.pool"  # the pool a member was made by (kept by a claimed agent's container)
SHAPE_LABEL = "agentfleet.pool.shape"
MEMBER_LABEL = "agentfleet.pool.member"  # the member's own name, kept after the claim renamed it
# The container fields fixed at creation that a claiming agent must share with the member.
SHAPED = ("image", "network", "capabilities", "memory_mib", "cpus", "pids", "restart", "workspace_mount",
          "shared_objects_mount")


def pool_name(context: MachineContext, host: HostSpec) -> str:
    return f"agentfleet-{context.stack}-pool" + ("" if host.is_local else f"-{host.name}")


def shape(container: dict[str, Any]) -> str:
    """What a member fits: a digest of the container fields fixed at creation."""
    return hashlib.sha256(json.dumps({key: container.get(key) for key in SHAPED}, sort_keys=True).encode()
                          ).hexdigest()[:16]


def claimable(fleet: FleetSpec, agent: AgentSpec) -> bool:
    """Whether a new agent may come from the pool: a fleet with one, and nothing the member's
    creation fixed otherwise (an explicit port or bind address, packages, the shared objects'
    mount), nor a workspace kept across its removal (taken up again by its own name, so such an
    agent boots fresh)."""
    return (fleet.pool_size > 0 and agent.backend == "docker" and agent.ssh_port is None
            and agent.bind_address is None and not agent.packages and not agent.retain_workspace
            and not fleet.shares_objects(agent))


def pool_hint(fleet: FleetSpec, context: MachineContext, agent: AgentSpec, container: dict[str, Any]) -> dict[str, Any]:
    """The workspace volume's `pool` hint: which pool to claim from and the shape to fit, or
    nothing (the agent boots fresh)."""
    if not claimable(fleet, agent):
        return {}
    return {"pool": {"name": pool_name(context, fleet.host(fleet.placement(agent))), "shape": shape(container)}}


def member_fields(template: dict[str, Any], pool: str, member: str, host_public_key: str) -> dict[str, Any]:
    """A member's container fields: the template's, under its own name, hostname and volume."""
    suffix = member.rsplit(".", 1)[-1]
    labels = {**template["labels"], POOL_LABEL: pool, SHAPE_LABEL: shape(template), MEMBER_LABEL: member}
    span = int(template["port_span"])
    return {**template, "name": member, "hostname": f"pool-{suffix}", "workspace_volume": f"{member}-workspace",
            "labels": labels, "host_public_key": host_public_key,
            "preferred_port": int(template["port_base"]) + int(suffix, 16) % span}


def claim(docker, pool: dict[str, str], machine: str, lock: threading.Lock) -> Optional[str]:
    """Claim a running member of the pool's shape for `machine` (renames its containers);
    returns the member's workspace volume, or None when no member is free. A rename by the old
    name fails once the member was renamed; two renames of one container at the same moment may
    both succeed (the engine looks the name up before it locks the container), so the claims of
    one provider (one `up`; Pulumi locks the stack) take the engine's `lock` in turn."""
    for member in members(docker, pool["name"], shape_digest=pool["shape"]):
        with lock:
            try:
                docker.api.rename(member.name, machine)
            except (NotFound, APIError):
                continue
        adopt_policy(docker, member.labels[MEMBER_LABEL], machine)
        return f"{member.labels[MEMBER_LABEL]}-workspace"
    return None


def adopt_policy(docker, member: str, machine: str) -> None:
    """The claimed member's policy container under the agent's name (again, after an
    interrupted claim)."""
    try:
        docker.api.rename(policy_name(member), policy_name(machine))
    except NotFound:
        pass


def members(docker, pool: str, shape_digest: Optional[str] = None, healthy: bool = True) -> list:
    """The pool's unclaimed members (their agent containers): running ones under their policy,
    or (healthy False) all of them."""
    labels = [f"{POOL_LABEL}={pool}"] + ([f"{SHAPE_LABEL}={shape_digest}"] if shape_digest else [])
    found = [c for c in docker.containers.list(all=not healthy, filters={"label": labels})
             if c.name.startswith(f"{pool}.") and "agentfleet.policy" not in c.labels]
    return [c for c in found if not healthy or _policed(docker, c)]


def _policed(docker, container) -> bool:
    try:
        policy = docker.containers.get(policy_name(container.name)).attrs
    except NotFound:
        return False
    return policed_state(container.attrs, policy) == "running"


def claimed_member(docker, machine: str):
    """The container named `machine` when it is a claimed member (the workspace volume claims it,
    the container resource gives it its agent: again, harmlessly, after an interrupted run)."""
    try:
        container = docker.containers.get(machine)
    except NotFound:
        return None
    return container if MEMBER_LABEL in container.labels else None


def as_claimed(labels: dict[str, str], fields: dict[str, Any], read: dict[str, Any]) -> dict[str, Any]:
    """What is read of a container, where a claimed member cannot be its agent's (fixed at its
    creation): its hostname and its `agentfleet.agent` label, which its name stands for."""
    if MEMBER_LABEL not in labels or labels.get(MEMBER_LABEL) == fields.get("name"):
        return read
    agent = {key: value for key, value in fields["labels"].items() if key == "agentfleet.agent"}
    return {**read, "hostname": fields["hostname"], "labels": {**read["labels"], **agent}}
