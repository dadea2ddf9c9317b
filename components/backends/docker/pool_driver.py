"""A host's warm pool as a resource (`DockerPool`): its members booted, read back and removed.
What a member is and how it is claimed: pool.py."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

from docker.errors import APIError, NotFound

from components.backends.docker.driver import ContainerDriver, client, engine_of, unless_unreachable
from components.backends.docker.pool import POOL_LABEL, member_fields, members
from components.cloudinit import pool_document
from components.keys import generate_ed25519
from components.reconciled import Driver

FILLERS = 4  # members booted at once (each boot is mostly CPU: cloud-init)


class PoolDriver(Driver):
    """`size` reads as the healthy members there; making or updating the pool removes the
    unhealthy or misshapen members and boots new ones until `size` are there. Claimed members
    are the agents' (renamed) and no longer counted."""

    replacing = frozenset({"engine_host"})
    changing = frozenset({"name", "size", "member", "shape", "agents", "state"})
    outputs = frozenset({"engine", "members"})
    hints = frozenset({"engines", "placement"})

    def create(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        engine = engine_of(fields)
        docker = client(engine)
        healthy = {c.name for c in members(docker, name, fields["shape"])}
        for stale in members(docker, name, healthy=False):
            if stale.name not in healthy:
                remove_member(engine, stale.name)
        remove_orphans(engine, name)
        template = {**fields["member"], "engine": engine}
        missing = int(fields["size"]) - len(healthy)
        if missing > 0:
            with ThreadPoolExecutor(max_workers=FILLERS) as pool:
                healthy |= set(pool.map(lambda _: boot_member(template, name), range(missing)))
        return {"state": "present", "engine": engine, "members": sorted(healthy)}

    @unless_unreachable
    def read(self, name: str, fields: dict[str, Any]) -> Optional[dict[str, Any]]:
        healthy = sorted(c.name for c in members(client(engine_of(fields)), name, fields["shape"]))
        return {"size": len(healthy), "members": healthy, "engine": engine_of(fields), "state": "present"}

    def update(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        return self.create(name, fields, secret)

    def delete(self, name: str, fields: dict[str, Any]) -> None:
        engine = engine_of(fields)
        for member in members(client(engine), name, healthy=False):
            remove_member(engine, member.name)
        remove_orphans(engine, name)


def boot_member(template: dict[str, Any], pool: str) -> str:
    """Boot one member (its workspace volume, policy and agent containers); returns its name."""
    member = f"{pool}.{secrets.token_hex(4)}"
    private_key, public_key = generate_ed25519(f"{member}@agentfleet-pool")
    fields = member_fields(template, pool, member, public_key)
    client(template["engine"]).volumes.create(fields["workspace_volume"], labels=fields["labels"])
    try:
        ContainerDriver().create(member, fields, pool_document(private_key, public_key))
    except Exception:
        remove_member(template["engine"], member)
        raise
    return member


def remove_member(engine: dict[str, Any], member: str) -> None:
    """A member's containers and workspace volume."""
    ContainerDriver().delete(member, {"engine": engine})
    try:
        client(engine).api.remove_volume(f"{member}-workspace", force=True)
    except NotFound:
        pass


def remove_orphans(engine: dict[str, Any], pool: str) -> None:
    """Workspace volumes of members whose containers were removed out of band: mounted by no
    container (a claimed member's volume is its agent's, mounted, and its agent's to remove)."""
    docker = client(engine)
    for volume in docker.volumes.list(filters={"label": f"{POOL_LABEL}={pool}", "dangling": True}):
        if volume.name.startswith(f"{pool}."):
            try:
                docker.api.remove_volume(volume.name)
            except (NotFound, APIError):  # taken into use meanwhile
                pass
