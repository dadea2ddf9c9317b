"""The Docker side of agentfleet's resources: containers, volumes and networks through the
Docker Engine API (the `docker` SDK), created, read back, changed in place and removed.

Why the API and not the CLI: one connection per engine instead of a process per call, and the
same code reaches remote engines. Secrets travel in request bodies only: the cloud-config is
copied into the created container as a NoCloud seed (`put_archive`) before it starts, and the
shared objects' credential likewise; neither is ever in arguments, environment or labels.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
import time
from typing import Any, Optional

import docker
from docker.errors import APIError, NotFound
from docker.types import Mount

from components.hostkey import HostKeyTimeout, wait_for_host_key

READY_TIMEOUT_S = 180
SEED_DIR = "var/lib/cloud/seed/nocloud"
MIB = 1024 * 1024
CPU_PERIOD = 100_000
LOG_TAIL = 30
# Waits inside the container until cloud-init's last stage wrote its result and sshd runs: one
# exec, where polling from the host would cost an exec (a runc process) per try.
WAIT_FOR_BOOT = """deadline=$1
until [ -e /run/cloud-init/result.json ] && [ -e /run/sshd.pid ]; do
    [ "$(date +%s)" -lt "$deadline" ] || exit 124
    sleep 0.05
done
cat /run/cloud-init/result.json"""
# Runs in the throwaway container that fills the shared objects volume: the credential was
# copied to /run/agentfleet-credential before it started; it is removed before git runs long.
MIRROR_CLONE = """set -eu
kind=$1 remote=$2 known_hosts=$3
umask 077
dir=$(mktemp -d)
case $kind in
    ssh_key)
        mv /run/agentfleet-credential "$dir/key"
        printf '%s\\n' "$known_hosts" >"$dir/known_hosts"
        export GIT_SSH_COMMAND="ssh -i $dir/key -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=$dir/known_hosts"
        set --
        ;;
    https_token)
        host=${remote#https://}
        printf 'https://x-access-token:%s@%s\\n' "$(cat /run/agentfleet-credential)" "${host%%/*}" >"$dir/store"
        rm -f /run/agentfleet-credential
        set -- -c "credential.helper=store --file=$dir/store"
        ;;
    *) set -- ;;
esac
umask 022
git "$@" clone --mirror --quiet "$remote" /mirror
rm -rf "$dir"
"""


class DockerError(Exception):
    """The engine refused or the container never became ready; the message names the thing."""


_clients: dict[str, docker.DockerClient] = {}
_clients_lock = threading.Lock()


def engine() -> docker.DockerClient:
    """One client per engine address for the whole provider process (DOCKER_HOST, else local)."""
    address = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    with _clients_lock:
        if address not in _clients:
            _clients[address] = docker.DockerClient(base_url=address, max_pool_size=64, timeout=READY_TIMEOUT_S)
        return _clients[address]


def tar_of(files: dict[str, tuple[bytes, int]], directories: dict[str, int]) -> bytes:
    """A tar archive of root-owned directories and files with the given modes."""
    buffer = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path, mode in directories.items():
            entry = tarfile.TarInfo(path)
            entry.type, entry.mode, entry.mtime = tarfile.DIRTYPE, mode, now
            archive.addfile(entry)
        for path, (content, mode) in files.items():
            entry = tarfile.TarInfo(path)
            entry.size, entry.mode, entry.mtime = len(content), mode, now
            archive.addfile(entry, io.BytesIO(content))
    return buffer.getvalue()


def seed_archive(instance_id: str, hostname: str, user_data: str) -> bytes:
    """cloud-init's NoCloud seed, readable by root only."""
    meta = f"instance-id: {instance_id}\nlocal-hostname: {hostname}\n"
    return tar_of(
        {f"{SEED_DIR}/user-data": (user_data.encode(), 0o600), f"{SEED_DIR}/meta-data": (meta.encode(), 0o600)},
        {SEED_DIR: 0o700},
    )


def _exists(collection: str, name: str) -> bool:
    """Whether the engine has the volume or network (`collection`: "volumes" or "networks")."""
    try:
        getattr(engine(), collection).get(name)
        return True
    except NotFound:
        return False


PRESENT = {"state": "present"}


def _ignore_missing(action) -> None:
    try:
        action()
    except NotFound:
        pass


class ContainerDriver:
    """An agent's container. Limits, restart policy, running state and the cloud-config change in
    place (docker_apply.py); the rest (image, ports, mounts, networks, privileges, packages)
    replaces the container."""

    replacing = frozenset({"image", "hostname", "network", "extra_networks", "bind_address", "port",
                           "workspace_volume", "shared_objects_volume", "capabilities", "labels",
                           "workspace_mount", "shared_objects_mount", "host_public_key", "endpoint_host",
                           "packages"})
    outputs = frozenset({"host"})

    def create(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        client = engine()
        try:
            container = client.containers.create(
                fields["image"], name=name, hostname=fields["hostname"], detach=True,
                network=fields["network"], labels=fields["labels"],
                ports={"22/tcp": (fields["bind_address"], int(fields["port"]))},
                mounts=self._mounts(fields),
                cap_drop=["ALL"], cap_add=list(fields["capabilities"]), security_opt=["no-new-privileges"],
                restart_policy={"Name": fields["restart"]}, **self._limits(fields),
            )
        except APIError as error:
            if error.status_code == 409:
                raise DockerError(f"container {name}: a container of that name exists but is not in this "
                                  f"stack's state (left by an interrupted run?): `docker rm -f {name}`") from None
            raise DockerError(f"container {name}: the engine refused to create it: {error.explanation}") from None
        try:
            for network in fields["extra_networks"]:
                client.networks.get(network).connect(container)
            container.put_archive("/", seed_archive(name, fields["hostname"], secret or ""))
            self._start(container, fields)
        except (DockerError, APIError, HostKeyTimeout) as error:
            logs = container.logs(tail=LOG_TAIL).decode(errors="replace").strip()
            _ignore_missing(lambda: container.remove(force=True))
            detail = getattr(error, "explanation", None) or str(error)
            raise DockerError(f"container {name}: {detail}; the half-made container was removed"
                              + (f"\n--- its last output:\n{logs}" if logs else "")) from None
        return self.read(name, fields) or {}

    def read(self, name: str, fields: dict[str, Any]) -> Optional[dict[str, Any]]:
        try:
            attrs = engine().containers.get(name).attrs
        except NotFound:
            return None
        host, config = attrs["HostConfig"], attrs["Config"]
        binding = ((host.get("PortBindings") or {}).get("22/tcp") or [{}])[0]
        networks = list((attrs["NetworkSettings"].get("Networks") or {}))
        mounts = {m.get("Destination"): m.get("Name") for m in attrs.get("Mounts") or []}
        return {
            "image": config.get("Image"),
            "hostname": config.get("Hostname"),
            "network": host.get("NetworkMode"),
            "extra_networks": [n for n in fields["extra_networks"] if n in networks],
            "bind_address": binding.get("HostIp") or "0.0.0.0",
            "port": int(binding.get("HostPort") or 0),
            "workspace_volume": mounts.get(fields["workspace_mount"]),
            "shared_objects_volume": mounts.get(fields["shared_objects_mount"]),
            "capabilities": sorted(cap.removeprefix("CAP_") for cap in host.get("CapAdd") or []),
            "labels": {k: v for k, v in (config.get("Labels") or {}).items() if k in fields["labels"]},
            "memory_mib": (host.get("Memory") or 0) // MIB,
            "cpus": (host.get("CpuQuota") or 0) / (host.get("CpuPeriod") or CPU_PERIOD),
            "pids": host.get("PidsLimit") or 0,
            "restart": (host.get("RestartPolicy") or {}).get("Name", ""),
            "state": attrs["State"].get("Status", "unknown"),
            "host": fields["endpoint_host"],
        }

    def update(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        client = engine()
        try:
            container = client.containers.get(name)
        except NotFound:
            return self.create(name, fields, secret)
        limits = self._limits(fields)
        body = {
            "Memory": limits["mem_limit"], "MemorySwap": limits["memswap_limit"],
            "CpuPeriod": limits["cpu_period"], "CpuQuota": limits["cpu_quota"],
            "PidsLimit": limits["pids_limit"], "RestartPolicy": {"Name": fields["restart"]},
        }
        # The SDK's update_container knows neither PidsLimit nor MemorySwap-with-Memory in one call.
        api = client.api
        api._result(api._post_json(api._url("/containers/{0}/update", container.id), data=body), True)
        container.reload()
        if container.status != "running":
            try:
                self._start(container, fields)
            except (DockerError, HostKeyTimeout) as error:
                raise DockerError(f"container {name}: started again, but {error}") from None
        from components.backends.docker_apply import apply_in_place

        apply_in_place(container, secret or "")
        return self.read(name, fields) or {}

    def delete(self, name: str, fields: dict[str, Any]) -> None:
        _ignore_missing(lambda: engine().api.remove_container(name, force=True))

    @staticmethod
    def _limits(fields: dict[str, Any]) -> dict[str, Any]:
        memory = int(fields["memory_mib"]) * MIB
        return {"mem_limit": memory, "memswap_limit": memory, "cpu_period": CPU_PERIOD,
                "cpu_quota": int(float(fields["cpus"]) * CPU_PERIOD), "pids_limit": int(fields["pids"])}

    @staticmethod
    def _mounts(fields: dict[str, Any]) -> list[Mount]:
        mounts = [Mount(fields["workspace_mount"], fields["workspace_volume"], type="volume")]
        if fields.get("shared_objects_volume"):
            mounts.append(Mount(fields["shared_objects_mount"], fields["shared_objects_volume"],
                                type="volume", read_only=True))
        return mounts

    @staticmethod
    def _start(container, fields: dict[str, Any]) -> None:
        """Start and wait until cloud-init finished cleanly and sshd offers the pinned key."""
        started = time.monotonic()
        container.start()
        deadline = int(time.time() + READY_TIMEOUT_S)
        status, output = container.exec_run(["sh", "-c", WAIT_FOR_BOOT, "wait-for-boot", str(deadline)])
        text = output.decode(errors="replace")
        if status == 124:
            raise DockerError(f"cloud-init and sshd did not finish starting within {READY_TIMEOUT_S}s")
        if status != 0:
            container.reload()
            state = "stopped during cloud-init" if container.status != "running" else f"exit {status}: {text.strip()}"
            raise DockerError(f"could not wait for cloud-init ({state})")
        errors = json.loads(text).get("v1", {}).get("errors", [])
        if errors:
            raise DockerError(f"cloud-init reported errors: {'; '.join(map(str, errors))}")
        remaining = max(1.0, READY_TIMEOUT_S - (time.monotonic() - started))
        wait_for_host_key(fields["endpoint_host"], int(fields["port"]), fields["host_public_key"], remaining)


class VolumeDriver:
    """A named volume. One deleted out of band reads as `state: "deleted: its content is lost"`,
    so the preview says so before `pulumi up` makes it again, empty."""

    replacing = frozenset({"labels"})
    outputs: frozenset[str] = frozenset()
    GONE = "deleted: its content is lost"

    def create(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        if not _exists("volumes", name):  # a kept workspace (retain_workspace) is taken up again
            engine().volumes.create(name, labels=fields["labels"])
        return PRESENT

    def read(self, name: str, fields: dict[str, Any]) -> Optional[dict[str, Any]]:
        return PRESENT if _exists("volumes", name) else {"state": self.GONE}

    def update(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        return self.create(name, fields, secret)

    def delete(self, name: str, fields: dict[str, Any]) -> None:
        _ignore_missing(lambda: engine().api.remove_volume(name, force=True))


class NetworkDriver:
    """A stack's bridge network; one deleted out of band is made again."""

    replacing = frozenset({"labels"})
    outputs: frozenset[str] = frozenset()

    def create(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        engine().networks.create(name, driver="bridge", labels=fields["labels"])
        return PRESENT

    def read(self, name: str, fields: dict[str, Any]) -> Optional[dict[str, Any]]:
        return PRESENT if _exists("networks", name) else None

    def update(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        return self.create(name, fields, secret)

    def delete(self, name: str, fields: dict[str, Any]) -> None:
        _ignore_missing(lambda: engine().networks.get(name).remove())


class MirrorDriver:
    """The fleet's shared objects: a volume holding `git clone --mirror` of the agents' remote,
    made once by a throwaway container of the agent image. Agents mount it read-only."""

    replacing = frozenset({"remote", "kind", "known_hosts", "networks", "image", "labels", "secret"})
    outputs: frozenset[str] = frozenset()

    def create(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        client = engine()
        client.volumes.create(name, labels=fields["labels"])
        networks = list(fields["networks"])
        cloner = None
        try:
            cloner = client.containers.create(
                fields["image"], entrypoint=["sh", "-c", MIRROR_CLONE, "clone"],
                command=[fields["kind"], fields["remote"], "\n".join(fields["known_hosts"])],
                name=f"{name}-clone", labels=fields["labels"], network=networks[0],
                mounts=[Mount("/mirror", name, type="volume")],
                cap_drop=["ALL"], security_opt=["no-new-privileges"], detach=True,
            )
            for network in networks[1:]:
                client.networks.get(network).connect(cloner)
            if secret:
                credential = secret.rstrip("\n") + "\n" if fields["kind"] == "ssh_key" else secret
                cloner.put_archive("/run", tar_of({"agentfleet-credential": (credential.encode(), 0o600)}, {}))
            cloner.start()
            status = cloner.wait(timeout=READY_TIMEOUT_S)["StatusCode"]
            if status != 0:
                logs = cloner.logs(tail=LOG_TAIL).decode(errors="replace").strip()
                raise DockerError(f"shared objects: git clone --mirror {fields['remote']} failed:\n{logs}")
        except (APIError, DockerError) as error:
            if cloner is not None:
                _ignore_missing(lambda: cloner.remove(force=True))
            _ignore_missing(lambda: client.api.remove_volume(name, force=True))
            raise DockerError(str(error) if isinstance(error, DockerError) else
                              f"shared objects: {error.explanation}") from None
        cloner.remove(force=True)
        return PRESENT

    def read(self, name: str, fields: dict[str, Any]) -> Optional[dict[str, Any]]:
        return PRESENT if _exists("volumes", name) else None

    def update(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        return PRESENT

    def delete(self, name: str, fields: dict[str, Any]) -> None:
        _ignore_missing(lambda: engine().api.remove_volume(name, force=True))
