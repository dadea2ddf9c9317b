"""The Docker side of agentfleet's resources: containers, volumes, networks and images through
the Docker Engine API (the `docker` SDK), on the local engine or remote ones over SSH, created,
read back, changed in place and removed.

Why the API and not the CLI: one connection per engine instead of a process per call, and the
same code reaches remote engines (engines.py pins their host keys). Secrets travel in
request bodies only: the cloud-config is copied into the created container as a NoCloud seed
(`put_archive`) before it starts, and the shared objects' credential likewise; neither is ever
in arguments, environment or labels.

Where a thing lives: its fields name the engines of the fleet's hosts (`engines`, a hint) and
its host (`engine_host` when the config says, else the `placement` hint); once made, the engine
it was made on is recorded (`engine`) and used from then on, so a new default placement (a host
added) moves nothing that exists.
"""

from __future__ import annotations

import io
import json
import socket
import tarfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Optional

from docker.errors import APIError, NotFound
from docker.types import Mount

from agentfleet.contract import CLONE_GATE, LOGIN_UID
from agentfleet.throttle import held_for
from components.backends.docker.engines import (
    LINK_ERRORS,
    Engine,
    EngineError,
    HostClient,
    ensure_image,
    has_image,
    held_ports,
    open_client,
    refused_create,
)
from components.backends.docker.pool import MEMBER_LABEL, adopt_policy, as_claimed, claim, claimed_member
from components.backends.docker.policy import (
    POLICY_GATE,
    RECORD_DIR,
    PolicyError,
    apply_policy,
    create_policy,
    joined,
    policed_state,
    policy_name,
    remove_policy,
    start_policy,
    wait_for_policy,
)
from components.hostkey import HostKeyTimeout, wait_for_host_key
from components.reconciled import Driver

READY_TIMEOUT_S = 180
SEED_DIR = "var/lib/cloud/seed/nocloud"
MIB = 1024 * 1024
CPU_PERIOD = 100_000
LOG_TAIL = 30
# Waits inside the container until $2 exists (sshd's pid file, or cloud-init's result), then prints
# cloud-init's result if it is there: one exec, where polling from the host would cost an exec (a
# runc process) per try; the tries are counted, not the clock read, so each try is one process
# (`sleep`), competing less with the boot.
WAIT_FOR_BOOT = """tries=$(( ($1 - $(date +%s)) * 20 ))
until [ -e "$2" ]; do
    [ "$tries" -gt 0 ] || exit 124
    tries=$((tries - 1))
    sleep 0.05
done
[ ! -e /run/cloud-init/result.json ] || cat /run/cloud-init/result.json"""
SSHD_PID = "/run/sshd.pid"
CLOUD_INIT_RESULT = "/run/cloud-init/result.json"
CLOUD_INIT_RESULT_DATA = "/var/lib/cloud/data/result.json"  # where CLOUD_INIT_RESULT links to
# How the agent's boot goes (images/agentfleet-cloud-init): its cloud-init waits for the policy
# container's gate, and sshd starts before cloud-init's final stage (this driver waits for
# cloud-init's result itself, below).
BOOT_ENVIRONMENT = {"AGENTFLEET_POLICY_GATE": POLICY_GATE, "AGENTFLEET_SSHD_EARLY": "1"}


def boot_environment(fields: dict[str, Any]) -> dict[str, str]:
    """A warm pool member keeps cloud-init imported and waiting for its claim (AGENTFLEET_CLAIMABLE,
    images/agentfleet-cloud-init); nothing in it is secret."""
    member = MEMBER_LABEL in fields["labels"]
    return {**BOOT_ENVIRONMENT, **({"AGENTFLEET_CLAIMABLE": "1"} if member else {})}


# The first-boot clone's gate (images/agent-files/first-clone): wait until the script waits for its
# turn (exit 0) or cloud-init ended without that (exit 1: no clone to make, a workspace kept). The
# answer is the exit status, not output, which an exec may lose (cloud_init_result).
WAIT_FOR_GATE = """deadline=$1 gate=$2
until [ -e "$gate/waiting" ] || [ -e /run/cloud-init/result.json ]; do
    [ "$(date +%s)" -lt "$deadline" ] || exit 124
    sleep 0.05
done
[ -e "$gate/waiting" ]"""
# Its turn: admit it, and return once the clone ended (or cloud-init did, should the script die).
ADMIT = """deadline=$1 gate=$2
touch "$gate/admitted"
until [ -e "$gate/done" ] || [ -e /run/cloud-init/result.json ]; do
    [ "$(date +%s)" -lt "$deadline" ] || exit 124
    sleep 0.05
done"""
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


LOCAL_ENGINE = {"name": "local", "address": "local"}
DEFAULT_IDENTITY = "~/.ssh/id_ed25519"
_clients: dict[str, HostClient] = {}
_locks: dict[str, threading.Lock] = {}
# Ports this process chose per engine, by container name: a container being created holds its
# port before the engine lists it, so the next choice on that engine must not take it again.
_chosen: dict[str, dict[str, int]] = {}
_clients_lock = threading.Lock()


def engine_of(fields: dict[str, Any]) -> dict[str, Any]:
    """The engine a thing lives on: recorded once made, else the one its host names."""
    if fields.get("engine"):
        return fields["engine"]
    if "engines" not in fields:
        return LOCAL_ENGINE
    return fields["engines"][fields.get("engine_host") or fields["placement"]]


def client(engine: dict[str, Any] = LOCAL_ENGINE) -> HostClient:
    """One client per engine for the whole provider process; remote ones trust only the pinned
    key and log in with the operator's key file (read here, never put in state or arguments)."""
    with _clients_lock:
        if engine["address"] not in _clients:
            key_file = Path(engine.get("identity_file") or DEFAULT_IDENTITY).expanduser()
            private_key = None if engine["address"] == "local" else _read_key(engine["name"], key_file)
            _clients[engine["address"]] = open_client(
                Engine(engine["name"], engine["address"], "\n".join(engine.get("known_hosts") or []) or None,
                       private_key), timeout=READY_TIMEOUT_S + 30)
        return _clients[engine["address"]]


def engine_lock(engine: dict[str, Any]) -> threading.Lock:
    """Serialises choosing a free port on one engine (the container is made outside it)."""
    with _clients_lock:
        return _locks.setdefault(engine["address"], threading.Lock())


def claim_port(docker: HostClient, engine: dict[str, Any], name: str, fields: dict[str, Any]) -> int:
    """Container `name`'s port: the declared one, else a free one no other create of this process took."""
    if fields.get("port"):
        return int(fields["port"])
    with engine_lock(engine):
        chosen = _chosen.setdefault(engine["address"], {})
        chosen.pop(name, None)  # made again (replaced): its old port is the engine's to report
        port = choose_port(docker, int(fields["preferred_port"]), int(fields["port_base"]), int(fields["port_span"]),
                           known=chosen)
        chosen[name] = port
        return port


def _read_key(host: str, path: Path) -> str:
    try:
        return path.read_text()
    except OSError as error:
        raise EngineError(host, f'host "{host}": cannot read the operator key {path} ({error.strerror}); '
                                "set `identity_file` for the host") from None


def tar_of(files: dict[str, tuple[bytes, int]], directories: dict[str, int], owner: int = 0) -> bytes:
    """A tar archive of directories (owned by uid `owner`) and root-owned files with the given modes."""
    buffer = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path, mode in directories.items():
            entry = tarfile.TarInfo(path)
            entry.type, entry.mode, entry.mtime, entry.uid, entry.gid = tarfile.DIRTYPE, mode, now, owner, owner
            archive.addfile(entry)
        for path, (content, mode) in files.items():
            entry = tarfile.TarInfo(path)
            entry.size, entry.mode, entry.mtime = len(content), mode, now
            archive.addfile(entry, io.BytesIO(content))
    return buffer.getvalue()


def mount_parents(mounts: tuple[str, ...]) -> dict[str, int]:
    """The directories above a container's mount points, as root's 0755 entries of an archive to
    upload before it first starts. Why: on an engine with userns-remap, that upload makes a mount's
    missing parents (the agent's home above its workspace) owned by the host's root, which is
    nobody in the container's user namespace (Docker 20.10), so root there could not make them its
    own. Listed in the upload, they are the container's root's, as a start without it makes them."""
    return {str(parent).lstrip("/"): 0o755 for mount in mounts for parent in reversed(PurePosixPath(mount).parents)
            if parent != PurePosixPath("/")}


def seed_archive(instance_id: str, hostname: str, user_data: str, mounts: tuple[str, ...] = ()) -> bytes:
    """cloud-init's NoCloud seed, readable by root only, and the directories above `mounts`."""
    meta = f"instance-id: {instance_id}\nlocal-hostname: {hostname}\n"
    return tar_of(
        {f"{SEED_DIR}/user-data": (user_data.encode(), 0o600), f"{SEED_DIR}/meta-data": (meta.encode(), 0o600)},
        {**mount_parents(mounts), SEED_DIR: 0o700},
    )


UNREACHABLE = (EngineError, *LINK_ERRORS)


def unless_unreachable(read):
    """A read of a thing on a host that does not answer reports nothing new (not "gone"): the
    preview goes on, and the preflight names the host and its agents."""

    def reading(self, name: str, fields: dict[str, Any]) -> Optional[dict[str, Any]]:
        try:
            return read(self, name, fields)
        except UNREACHABLE:
            with _clients_lock:
                _clients.pop(engine_of(fields)["address"], None)
            return {}

    return reading


def _exists(docker: HostClient, collection: str, name: str) -> bool:
    """Whether the engine has the volume or network (`collection`: "volumes" or "networks")."""
    try:
        getattr(docker, collection).get(name)
        return True
    except NotFound:
        return False


PRESENT = {"state": "present"}


def _ignore_missing(action) -> None:
    try:
        action()
    except NotFound:
        pass


def choose_port(docker: HostClient, preferred: int, base: int, span: int,
                known: Mapping[str, int] | None = None) -> int:
    """The first port from `preferred` on (wrapping within [base, base + span)) that no container
    on the engine holds (`known`: held_ports) and, on the local engine, no other process listens on."""
    held = held_ports(docker, known=known)
    for step in range(span):
        port = base + (preferred - base + step) % span
        if port not in held and (not docker.engine.is_local or _bindable(port)):
            return port
    raise DockerError(f"no free port in {base}-{base + span - 1} on {docker.engine.describe()}; "
                      "set `ssh_port` or another `port_base`")


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def user_namespace(docker: HostClient, host_config: dict[str, Any]) -> str:
    """"remapped" when the engine remaps and the container did not ask for the host's user
    namespace (`--userns=host`), else "none" (agentfleet.contract.USER_NAMESPACES)."""
    return "remapped" if docker.remaps_users and host_config.get("UsernsMode") != "host" else "none"


class ContainerDriver(Driver):
    """An agent's container. Limits, restart policy, running state and the cloud-config change in
    place (apply.py); the rest (image, ports, mounts, networks, privileges, packages)
    replaces the container. Its port, when the config gives none, is chosen free on its host when
    it is made and kept."""

    replacing = frozenset({"image", "hostname", "network", "bind_address", "port", "engine_host",
                           "workspace_volume", "shared_objects_volume", "capabilities", "labels",
                           "workspace_mount", "shared_objects_mount", "host_public_key", "packages"})
    changing = frozenset({"name", "memory_mib", "cpus", "pids", "restart", "state", "egress"})
    secret_input = "the agent's cloud-config (user-data), delivered as a NoCloud seed"
    outputs = frozenset({"host", "engine", "user_namespace"})
    chosen = frozenset({"port", "bind_address"})
    hints = frozenset({"engines", "placement", "preferred_port", "port_base", "port_span", "forge_gate"})

    def create(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        engine = engine_of(fields)
        docker = client(engine)
        member = claimed_member(docker, name)
        if member is not None:  # its workspace volume claimed a warm pool member for it
            return self._deliver(docker, member, name, fields, secret)
        remove_policy(docker, name)  # one left behind by an agent's container removed out of band
        bind = fields.get("bind_address") or engine.get("endpoint_address", "127.0.0.1")
        port = claim_port(docker, engine, name, fields)  # two agents of one run never choose the same port
        made = {**fields, "engine": engine, "bind_address": bind, "port": port,
                "host": engine.get("endpoint_address", "127.0.0.1") if bind == "0.0.0.0" else bind}
        try:
            policy = create_policy(docker, name, fields, bind, port, engine)
        except PolicyError as error:
            raise DockerError(f"container {name} on {docker.engine.describe()}: {error}") from None
        container = self._create(docker, name, fields)
        try:
            # RECORD_DIR: the policy container's record, mounted too (volumes_from).
            mounts = (*(mount["Target"] for mount in ContainerDriver._mounts(fields)), RECORD_DIR)
            container.put_archive("/", seed_archive(name, fields["hostname"], secret or "", mounts))
            if fields.get("forge_gate"):
                gate = CLONE_GATE.lstrip("/")
                container.put_archive("/", tar_of({f"{gate}/required": (b"", 0o644)}, {gate: 0o700}, LOGIN_UID))
            # Both start at once: the agent's imports overlap the policy's apply, and its cloud-init
            # waits for the policy's gate (AGENTFLEET_POLICY_GATE) before running anything.
            policy.start()
            self._start(container, made, admit=bool(fields.get("forge_gate")), policy=policy)
        except (DockerError, APIError, HostKeyTimeout, PolicyError) as error:
            logs = container.logs(tail=LOG_TAIL).decode(errors="replace").strip()
            _ignore_missing(lambda: container.remove(force=True))
            remove_policy(docker, name)
            detail = getattr(error, "explanation", None) or str(error)
            raise DockerError(f"container {name} on {docker.engine.describe()}: {detail}; the half-made "
                              "container was removed" + (f"\n--- its last output:\n{logs}" if logs else "")) from None
        return self.read(name, made) or {}

    def _deliver(self, docker: HostClient, container, name: str, fields: dict[str, Any],
                 secret: Optional[str]) -> dict[str, Any]:
        """A claimed member becomes the agent: its policy, then its document (identity, keys,
        first clone) applied in place, and sshd offering the pinned host key. On failure both
        containers go; the next `up` boots the agent fresh on the claimed workspace."""
        from components.backends.docker.apply import claim_in_place

        adopt_policy(docker, container.labels[MEMBER_LABEL], name)
        engine = engine_of(fields)
        try:
            policy = docker.containers.get(policy_name(name))
            owner = self._network_owner(fields, container.attrs, policy.attrs)
            host = engine.get("endpoint_address", "127.0.0.1") if owner["bind_address"] == "0.0.0.0" else owner["bind_address"]
            made = {**fields, "engine": engine, "bind_address": owner["bind_address"], "port": owner["port"], "host": host}
            apply_policy(policy, fields["egress"])
            with held_for(fields.get("forge_gate")):
                claim_in_place(container, secret or "")
            wait_for_host_key(host, int(owner["port"]), fields["host_public_key"], READY_TIMEOUT_S)
        except (NotFound, APIError, PolicyError, DockerError, HostKeyTimeout) as error:
            self.delete(name, {"engine": engine})
            detail = getattr(error, "explanation", None) or str(error)
            raise DockerError(f"container {name} on {docker.engine.describe()}: claiming a warm pool member "
                              f"failed: {detail}; its containers were removed") from None
        return self.read(name, made) or {}

    @staticmethod
    def _create(docker: HostClient, name: str, fields: dict[str, Any]):
        """The agent's container, in its policy container's network namespace: the network, port
        and hostname are that one's; the record of refusals (and the policy's gate) is mounted
        read-only."""
        try:
            return docker.containers.create(
                fields["image"], name=name, detach=True, network_mode=f"container:{policy_name(name)}",
                labels=fields["labels"], mounts=ContainerDriver._mounts(fields),
                volumes_from=[f"{policy_name(name)}:ro"], environment=boot_environment(fields),
                cap_drop=["ALL"], cap_add=list(fields["capabilities"]), security_opt=["no-new-privileges"],
                restart_policy={"Name": fields["restart"]}, **ContainerDriver._limits(fields),
            )
        except APIError as error:
            remove_policy(docker, name)
            raise DockerError(refused_create(name, docker.engine.describe(), error)) from None

    @unless_unreachable
    def read(self, name: str, fields: dict[str, Any]) -> Optional[dict[str, Any]]:
        docker = client(engine_of(fields))
        try:
            attrs = docker.containers.get(name).attrs
        except NotFound:
            return None
        try:
            policy = docker.containers.get(policy_name(name)).attrs
        except NotFound:
            policy = None
        host, config = attrs["HostConfig"], attrs["Config"]
        mounts = {m.get("Destination"): m.get("Name") for m in attrs.get("Mounts") or []}
        return as_claimed(config.get("Labels") or {}, fields, {
            "image": config.get("Image"),
            **self._network_owner(fields, attrs, policy),
            "workspace_volume": mounts.get(fields["workspace_mount"]),
            "shared_objects_volume": mounts.get(fields["shared_objects_mount"]),
            "capabilities": sorted(cap.removeprefix("CAP_") for cap in host.get("CapAdd") or []),
            "labels": {k: v for k, v in (config.get("Labels") or {}).items() if k in fields["labels"]},
            "memory_mib": (host.get("Memory") or 0) // MIB,
            "cpus": (host.get("CpuQuota") or 0) / (host.get("CpuPeriod") or CPU_PERIOD),
            "pids": host.get("PidsLimit") or 0,
            "restart": (host.get("RestartPolicy") or {}).get("Name", ""),
            "state": policed_state(attrs, policy),
            "host": fields["host"],
            "engine": engine_of(fields),
            "user_namespace": user_namespace(docker, host),
        })

    @staticmethod
    def _network_owner(fields: dict[str, Any], agent: dict[str, Any], policy: Optional[dict[str, Any]]) -> dict[str, Any]:
        """The hostname, network and port, which are the policy container's. Gone, its container
        is made again with the declared ones (the `state` says so); an agent of an earlier release,
        without one, has them itself."""
        if policy is None and (agent["HostConfig"].get("NetworkMode") or "").startswith("container:"):
            return {key: fields.get(key) for key in ("hostname", "network", "bind_address", "port")}
        owner = policy or agent
        binding = ((owner["HostConfig"].get("PortBindings") or {}).get("22/tcp") or [{}])[0]
        return {"hostname": owner["Config"].get("Hostname"), "network": owner["HostConfig"].get("NetworkMode"),
                "bind_address": binding.get("HostIp") or "0.0.0.0", "port": int(binding.get("HostPort") or 0)}

    def update(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        docker = client(engine_of(fields))
        try:
            container = docker.containers.get(name)
        except NotFound:
            return self.create(name, fields, secret)
        try:
            policy = docker.containers.get(policy_name(name))
        except NotFound:
            policy = None
        if policy is None or container.attrs["HostConfig"].get("NetworkMode") != f"container:{policy.id}":
            # Its network namespace's owner is gone: a new one cannot be joined, so both are made
            # again (the same port, host key and workspace).
            _ignore_missing(lambda: container.remove(force=True))
            return self.create(name, fields, secret)
        limits = self._limits(fields)
        body = {
            "Memory": limits["mem_limit"], "MemorySwap": limits["memswap_limit"],
            "CpuPeriod": limits["cpu_period"], "CpuQuota": limits["cpu_quota"],
            "PidsLimit": limits["pids_limit"], "RestartPolicy": {"Name": fields["restart"]},
        }
        # The SDK's update_container knows neither PidsLimit nor MemorySwap-with-Memory in one call.
        api = docker.api
        api._result(api._post_json(api._url("/containers/{0}/update", container.id), data=body), True)
        api.update_container(policy.id, restart_policy={"Name": fields["restart"]})
        try:
            if policy.status != "running":
                start_policy(policy)
            apply_policy(policy, fields["egress"])
        except PolicyError as error:
            raise DockerError(str(error)) from None
        container.reload()
        if container.status == "running" and not joined(container.attrs, policy.attrs):
            container.stop()  # in a namespace its policy container left (restarted): join the new one
            container.reload()
        if container.status != "running":
            try:
                self._start(container, {**fields, **(self.read(name, fields) or {})})
            except (DockerError, HostKeyTimeout) as error:
                raise DockerError(f"container {name}: started again, but {error}") from None
        from components.backends.docker.apply import apply_in_place

        apply_in_place(container, secret or "")
        return self.read(name, fields) or {}

    def delete(self, name: str, fields: dict[str, Any]) -> None:
        docker = client(engine_of(fields))
        _ignore_missing(lambda: docker.api.remove_container(name, force=True))
        remove_policy(docker, name)

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
    def _start(container, fields: dict[str, Any], admit: bool = False, policy=None) -> None:
        """Start and wait until cloud-init finished cleanly and sshd offers the pinned key; with
        `admit`, let its first clone go when the remote host has a free slot (time waiting for
        one does not count against the boot's timeout); with `policy` (started just before),
        wait for its policy too."""
        container.start()
        if policy is not None:
            wait_for_policy(policy)
        if admit:
            ContainerDriver._admit(container, fields)
        started = time.monotonic()
        deadline = int(time.time() + READY_TIMEOUT_S)

        def host_key() -> None:
            remaining = max(1.0, READY_TIMEOUT_S - (time.monotonic() - started))
            wait_for_host_key(fields["host"], int(fields["port"]), fields["host_public_key"], remaining)

        # sshd starts before cloud-init's final stage (BOOT_ENVIRONMENT): its key is checked while
        # that stage runs; an agent whose sshd waited for the end (a failed stage) has its result.
        result = ContainerDriver._wait_for(container, SSHD_PID, deadline)
        early = not result
        if early:
            host_key()
            result = ContainerDriver._wait_for(container, CLOUD_INIT_RESULT, deadline)
        errors = cloud_init_result(container, result).get("v1", {}).get("errors", [])
        if errors:
            raise DockerError(f"cloud-init reported errors: {'; '.join(map(str, errors))}")
        if not early:
            host_key()

    @staticmethod
    def _wait_for(container, path: str, deadline: int) -> str:
        """Wait in the container until `path` exists; cloud-init's result if it is there by then."""
        status, output = container.exec_run(["sh", "-c", WAIT_FOR_BOOT, "wait-for-boot", str(deadline), path])
        text = output.decode(errors="replace")
        if status == 124:
            raise DockerError(f"cloud-init and sshd did not finish starting within {READY_TIMEOUT_S}s")
        if status != 0:
            container.reload()
            state = "stopped during cloud-init" if container.status != "running" else f"exit {status}: {text.strip()}"
            raise DockerError(f"could not wait for cloud-init ({state})")
        return text

    @staticmethod
    def _admit(container, fields: dict[str, Any]) -> None:
        """Hold a slot of the remote host from the clone's admission to its end."""
        def run(script: str) -> int:
            deadline = str(int(time.time() + READY_TIMEOUT_S))
            status, _ = container.exec_run(["sh", "-c", script, "gate", deadline, CLONE_GATE])
            if status == 124:
                raise DockerError(f"the first clone's gate: cloud-init did not move within {READY_TIMEOUT_S}s")
            return status

        if run(WAIT_FOR_GATE) != 0:
            return
        with held_for(fields.get("forge_gate")):
            run(ADMIT)


def cloud_init_result(container, printed: str) -> dict[str, Any]:
    """cloud-init's result.json as the boot wait printed it. An exec's output sometimes comes back
    empty although the command printed it (docker/docker-py#2042; a 320-agent run failed once on
    an empty one), so then the file is read again as an archive, a plain response body."""
    try:
        return json.loads(printed)
    except ValueError:
        pass
    stream, _ = container.get_archive(CLOUD_INIT_RESULT_DATA)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
        member = archive.extractfile(archive.getmembers()[0])
        text = member.read().decode(errors="replace") if member else ""
    try:
        return json.loads(text)
    except ValueError:
        raise DockerError(f"cloud-init's result ({CLOUD_INIT_RESULT}) is not JSON: {text[:200]!r}") from None


class VolumeDriver(Driver):
    """A named volume. One deleted out of band reads as `state: "deleted: its content is lost"`,
    so the preview says so before `pulumi up` makes it again, empty. An agent's workspace given
    a `pool` (pool.py) claims a warm pool member when one fits, and is that member's volume:
    `volume` is the engine's name of the volume, `name` the resource's."""

    replacing = frozenset({"labels", "engine_host"})
    changing = frozenset({"name", "state"})
    outputs = frozenset({"engine", "volume"})
    hints = frozenset({"engines", "placement", "pool", "machine"})
    GONE = "deleted: its content is lost"

    def create(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        docker = client(engine_of(fields))
        volume = fields.get("volume") or name
        if not _exists(docker, "volumes", volume):  # a kept workspace (retain_workspace) is taken up again
            first = fields.get("pool") and not fields.get("volume")  # made before: made again as it was
            claimed = claim(docker, fields["pool"], fields["machine"], engine_lock(engine_of(fields))) if first else None
            if claimed is not None:
                return {**PRESENT, "engine": engine_of(fields), "volume": claimed}
            docker.volumes.create(volume, labels=fields["labels"])
        return {**PRESENT, "engine": engine_of(fields), "volume": volume}

    @unless_unreachable
    def read(self, name: str, fields: dict[str, Any]) -> Optional[dict[str, Any]]:
        volume = fields.get("volume") or name
        present = _exists(client(engine_of(fields)), "volumes", volume)
        return {**(PRESENT if present else {"state": self.GONE}), "engine": engine_of(fields), "volume": volume}

    def update(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        return self.create(name, fields, secret)

    def delete(self, name: str, fields: dict[str, Any]) -> None:
        _ignore_missing(lambda: client(engine_of(fields)).api.remove_volume(fields.get("volume") or name, force=True))


class NetworkDriver(Driver):
    """A stack's bridge network on one host; one deleted out of band is made again."""

    replacing = frozenset({"labels", "engine"})
    changing = frozenset({"name", "state"})

    def create(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        client(engine_of(fields)).networks.create(name, driver="bridge", labels=fields["labels"])
        return PRESENT

    @unless_unreachable
    def read(self, name: str, fields: dict[str, Any]) -> Optional[dict[str, Any]]:
        return PRESENT if _exists(client(engine_of(fields)), "networks", name) else None

    def update(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        return self.create(name, fields, secret)

    def delete(self, name: str, fields: dict[str, Any]) -> None:
        _ignore_missing(lambda: client(engine_of(fields)).networks.get(name).remove())


class ImageDriver(Driver):
    """The agent image on a remote host, sent from the local engine (no registry needed) once per
    tag per host. Destroy removes it unless a container there still uses it."""

    replacing = frozenset({"engine"})
    changing = frozenset({"name", "state"})

    def create(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        ensure_image(client(), client(engine_of(fields)), name)
        return PRESENT

    @unless_unreachable
    def read(self, name: str, fields: dict[str, Any]) -> Optional[dict[str, Any]]:
        return PRESENT if has_image(client(engine_of(fields)), name) else None

    def update(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        return self.create(name, fields, secret)

    def delete(self, name: str, fields: dict[str, Any]) -> None:
        try:
            client(engine_of(fields)).api.remove_image(name)
        except NotFound:
            pass
        except APIError as error:
            if error.status_code != 409:  # 409: still used by a container (another stack's)
                raise


class MirrorDriver(Driver):
    """The fleet's shared objects on one host: a volume holding `git clone --mirror` of the
    agents' remote, made once by a throwaway container of the agent image. Agents mount it
    read-only."""

    replacing = frozenset({"remote", "kind", "known_hosts", "networks", "image", "labels", "engine", "secret"})
    changing = frozenset({"name", "state"})
    hints = frozenset({"forge_gate"})
    secret_input = "the credential the mirror is cloned with (an SSH key or an HTTPS token)"

    def create(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        docker = client(engine_of(fields))
        docker.volumes.create(name, labels=fields["labels"])
        networks = list(fields["networks"])
        cloner = None
        try:
            cloner = docker.containers.create(
                fields["image"], entrypoint=["sh", "-c", MIRROR_CLONE, "clone"],
                command=[fields["kind"], fields["remote"], "\n".join(fields["known_hosts"])],
                name=f"{name}-clone", labels=fields["labels"], network=networks[0],
                mounts=[Mount("/mirror", name, type="volume")],
                cap_drop=["ALL"], security_opt=["no-new-privileges"], detach=True,
            )
            for network in networks[1:]:
                docker.networks.get(network).connect(cloner)
            if secret:
                credential = secret.rstrip("\n") + "\n" if fields["kind"] == "ssh_key" else secret
                cloner.put_archive("/run", tar_of({"agentfleet-credential": (credential.encode(), 0o600)}, {}))
            with held_for(fields.get("forge_gate")):
                cloner.start()
                status = cloner.wait(timeout=READY_TIMEOUT_S)["StatusCode"]
            if status != 0:
                logs = cloner.logs(tail=LOG_TAIL).decode(errors="replace").strip()
                raise DockerError(f"shared objects: git clone --mirror {fields['remote']} failed:\n{logs}")
        except (APIError, DockerError) as error:
            if cloner is not None:
                _ignore_missing(lambda: cloner.remove(force=True))
            _ignore_missing(lambda: docker.api.remove_volume(name, force=True))
            raise DockerError(str(error) if isinstance(error, DockerError) else
                              f"shared objects: {error.explanation}") from None
        cloner.remove(force=True)
        return PRESENT

    @unless_unreachable
    def read(self, name: str, fields: dict[str, Any]) -> Optional[dict[str, Any]]:
        return PRESENT if _exists(client(engine_of(fields)), "volumes", name) else None

    def update(self, name: str, fields: dict[str, Any], secret: Optional[str]) -> dict[str, Any]:
        return PRESENT

    def delete(self, name: str, fields: dict[str, Any]) -> None:
        _ignore_missing(lambda: client(engine_of(fields)).api.remove_volume(name, force=True))
