"""Docker engines a fleet places agents on: the local one, or remote ones reached over SSH.

Why this module exists: a remote engine is reached the way Docker itself reaches it
(`ssh://user@host[:port]`, then `docker system dial-stdio` on the remote side), but the Docker
SDK's own ssh:// support trusts ~/.ssh/known_hosts and ~/.ssh/config and takes keys from
~/.ssh or an agent. A fleet must trust only the host key pinned in its config and log in only
with the operator key it was given, so here the SDK's adapter gets a paramiko client that has
exactly one pinned key (RejectPolicy for anything else) and the operator key in memory: nothing
is read from ~/.ssh, nothing is written to disk, nothing goes into argv or the environment.

Open one client per batch of work (`with open_client(engine) as client:`); a client does not
reconnect after its host went away.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

import docker
import docker.errors
import paramiko
import requests
from docker.transport.sshconn import SSHHTTPAdapter

from agentfleet.sshkeys import describe_key, host_key_name, load_private_key, parse_known_hosts

LOCAL = "local"
CONNECT_TIMEOUT = 10.0  # TCP connect, SSH banner and authentication, each
API_TIMEOUT = 60.0  # one Docker API call (an image load streams, so this bounds each read)
# What a broken, refused or unanswered link raises on the way (paramiko, sockets, HTTP over SSH).
LINK_ERRORS = (paramiko.SSHException, OSError, EOFError, requests.RequestException)


class EngineError(Exception):
    """One line naming the host and what to do; `host` is the host's name in the fleet config."""

    def __init__(self, host: str, message: str) -> None:
        self.host = host
        super().__init__(message)


@dataclass(frozen=True)
class SshTarget:
    """Where `ssh://user@host[:port]` points."""

    user: str
    host: str
    port: int = 22

    @classmethod
    def parse(cls, address: str) -> SshTarget:
        """Parse an ssh:// address; raise ValueError saying what a valid one looks like."""
        hint = "use ssh://user@host or ssh://user@host:port"
        parts = urlsplit(address)
        if parts.scheme != "ssh":
            raise ValueError(f"{address!r} is neither {LOCAL!r} nor an ssh:// address; {hint}")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.password:
            raise ValueError(f"{address!r} has more than user, host and port; {hint}")
        try:
            port = 22 if parts.port is None else parts.port
        except ValueError:
            port = 0
        if not 1 <= port <= 65535:
            raise ValueError(f"{address!r} has an invalid port; {hint} with a port from 1 to 65535")
        if not parts.username:
            raise ValueError(f"{address!r} names no user; {hint}")
        if not parts.hostname:
            raise ValueError(f"{address!r} names no host; {hint}")
        return cls(parts.username, parts.hostname, port)

    @property
    def address(self) -> str:
        return f"ssh://{self.user}@{self.host}" + ("" if self.port == 22 else f":{self.port}")

    @property
    def host_key_name(self) -> str:
        """The name OpenSSH and paramiko look up in known_hosts for this host and port."""
        return host_key_name(self.host, self.port)


@dataclass(frozen=True)
class Engine:
    """One Docker engine as the fleet config names it: `local`, or ssh:// with a pinned host key
    (known_hosts lines) and the operator's private key (OpenSSH text; a secret, never printed)."""

    name: str
    address: str = LOCAL
    known_hosts: str | None = None
    private_key: str | None = field(default=None, repr=False)

    @property
    def is_local(self) -> bool:
        return self.address == LOCAL

    def describe(self) -> str:
        """How messages name it: `host "gpu-1" (ssh://ops@10.0.0.5)`."""
        return f'host "{self.name}"' + ("" if self.is_local else f" ({self.address})")

    def ssh_target(self) -> SshTarget:
        """The target, pinned key and operator key, checked; raise EngineError on any problem."""
        try:
            target = SshTarget.parse(self.address)
        except ValueError as exc:
            raise self.error(str(exc)) from None
        self.pinned_keys(target)
        self.operator_key()
        return target

    def pinned_keys(self, target: SshTarget) -> Mapping[str, paramiko.PKey]:
        """The pinned keys for the target's host and port, by key type."""
        scan = f"ssh-keyscan -p {target.port} {target.host}" if target.port != 22 else f"ssh-keyscan {target.host}"
        if not self.known_hosts:
            raise self.error(f"has no pinned host key; add its known_hosts line (check `{scan}` out of band)")
        try:
            keys = parse_known_hosts(self.known_hosts).lookup(target.host_key_name)
        except ValueError as exc:
            raise self.error(f"known_hosts is not usable ({exc}); give a line as `{scan}` prints it") from None
        if not keys:
            raise self.error(f"known_hosts has no key for {target.host_key_name}; give its line as `{scan}` prints it")
        return keys

    def operator_key(self) -> paramiko.PKey:
        if not self.private_key:
            raise self.error("has no operator private key to log in with")
        try:
            return load_private_key(self.private_key)
        except ValueError as exc:
            raise self.error(f"the operator key is {exc}") from None

    def error(self, message: str) -> EngineError:
        return EngineError(self.name, f"{self.describe()}: {message}")


class HostClient(docker.DockerClient):
    """A Docker SDK client that knows which configured engine it talks to (for messages)."""

    def __init__(self, engine: Engine, api: docker.APIClient) -> None:
        # DockerClient.__init__ only builds an APIClient from its arguments; this one is given.
        self.engine = engine
        self.api = api

    def __enter__(self) -> HostClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @cached_property
    def remaps_users(self) -> bool:
        """Whether the engine runs with userns-remap (its containers' root is an unprivileged uid
        of the host). Asked once: an engine changes it only with a restart under another data
        root, where none of the containers made before exist."""
        return "name=userns" in (self.info().get("SecurityOptions") or [])


class _PinnedSSHAdapter(SSHHTTPAdapter):
    """The SDK's ssh:// transport with trust and credentials given, not read from ~/.ssh."""

    def __init__(self, target: SshTarget, pinned: Mapping[str, paramiko.PKey], pkey: paramiko.PKey,
                 connect_timeout: float, timeout: float) -> None:
        self._target, self._pinned, self._pkey = target, pinned, pkey
        self._connect_timeout = connect_timeout
        super().__init__(target.address, timeout=timeout)  # connects at once

    def _create_paramiko_client(self, base_url: str) -> None:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        for kind, key in self._pinned.items():
            client.get_host_keys().add(self._target.host_key_name, kind, key)
        self.ssh_client = client
        self.ssh_params = {
            "hostname": self._target.host,
            "port": self._target.port,
            "username": self._target.user,
            "pkey": self._pkey,
            "allow_agent": False,
            "look_for_keys": False,
            "timeout": self._connect_timeout,
            "banner_timeout": self._connect_timeout,
            "auth_timeout": self._connect_timeout,
            "channel_timeout": self._connect_timeout,
        }


class _PinnedSSHAPIClient(docker.APIClient):
    """APIClient over a _PinnedSSHAdapter, wired the way APIClient wires its own ssh:// adapter."""

    def __init__(self, adapter: _PinnedSSHAdapter, timeout: float) -> None:
        # The placeholder socket is never contacted: the version is given, and every request
        # goes to the ssh mount below (the same prefix and base_url the SDK uses for ssh://).
        super().__init__(base_url="unix:///nonexistent/docker.sock", version=docker.constants.MINIMUM_DOCKER_API_VERSION,
                         timeout=timeout)
        self._custom_adapter = adapter
        self.mount("http+docker://ssh", adapter)
        self.base_url = "http+docker://ssh"
        self._version = self._retrieve_server_version()


def open_client(engine: Engine, connect_timeout: float = CONNECT_TIMEOUT, timeout: float = API_TIMEOUT) -> HostClient:
    """A client of the engine's Docker daemon, after one successful API call (its version).

    Raises EngineError, one line naming the host, when the address, pinned key or operator key
    is unusable, the host is unreachable, its key differs from the pinned one, the operator key
    is refused, or Docker does not answer there.
    """
    if engine.is_local:
        return _open_local(engine, timeout)
    target = engine.ssh_target()
    pinned, pkey = engine.pinned_keys(target), engine.operator_key()
    try:
        adapter = _PinnedSSHAdapter(target, pinned, pkey, connect_timeout, timeout)
    except paramiko.BadHostKeyException as exc:
        raise engine.error(
            f"its host key is {describe_key(exc.key)}, not the pinned {describe_key(exc.expected_key)}; "
            f"refusing to connect. If the host was reinstalled, check its new key out of band and update its known_hosts"
        ) from None
    except paramiko.AuthenticationException:
        raise engine.error(
            f"the operator key ({describe_key(pkey)}) was refused for user {target.user}; "
            f"add its public key to that user's ~/.ssh/authorized_keys on the host"
        ) from None
    except LINK_ERRORS as exc:
        raise engine.error(
            f"cannot reach {target.host}:{target.port} ({_link_reason(exc, connect_timeout)}); "
            f"is the host up and sshd listening there?"
        ) from None
    try:
        api = _PinnedSSHAPIClient(adapter, timeout)
    except (docker.errors.DockerException, *LINK_ERRORS) as exc:
        problem = _remote_docker_problem(adapter, exc)
        adapter.close()
        raise engine.error(f"sshd answered but Docker did not ({problem}); "
                           f"is dockerd running there, and may {target.user} use it (`docker version` as {target.user})?") from None
    return HostClient(engine, api)


def _open_local(engine: Engine, timeout: float) -> HostClient:
    try:
        api = docker.APIClient(version="auto", timeout=timeout, **docker.utils.kwargs_from_env())
    except docker.errors.DockerException as exc:
        raise engine.error(f"the local Docker engine does not answer ({_first_line(exc)}); "
                           f"start dockerd (scripts/setup does) or set DOCKER_HOST") from None
    return HostClient(engine, api)


def _link_reason(exc: BaseException, connect_timeout: float) -> str:
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return "connection refused"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"no answer within {connect_timeout:g} s"
    if isinstance(exc, socket.gaierror):
        return "cannot resolve the name"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return _first_line(exc) or type(exc).__name__


def _remote_docker_problem(adapter: _PinnedSSHAdapter, exc: BaseException) -> str:
    """What `docker system dial-stdio` said on the host (its last stderr line), else the error."""
    try:
        transport = adapter.ssh_client.get_transport() if adapter.ssh_client else None
        if transport is not None and transport.is_active():
            channel = transport.open_session(timeout=5)
            channel.settimeout(5)
            channel.exec_command("docker version --format '{{.Server.APIVersion}}'")
            stderr = channel.makefile_stderr("rb").read().decode(errors="replace").strip()
            channel.close()
            if stderr:
                return stderr.splitlines()[-1]
    except LINK_ERRORS:
        pass
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass(frozen=True)
class EngineFacts:
    """What a preflight reports about one engine."""

    host: str
    reachable: bool
    server_version: str | None = None
    api_version: str | None = None
    os: str | None = None
    arch: str | None = None
    problem: str | None = None


def engine_facts(client: HostClient) -> EngineFacts:
    """Ask the engine for its version; an engine that stopped answering is reported, not raised."""
    engine = client.engine
    try:
        version = client.version()
    except (docker.errors.DockerException, *LINK_ERRORS) as exc:
        return EngineFacts(engine.name, False, problem=f"{engine.describe()}: Docker stopped answering ({_first_line(exc)})")
    return EngineFacts(engine.name, True, version.get("Version"), version.get("ApiVersion"),
                       version.get("Os"), version.get("Arch"))


@dataclass(frozen=True)
class ImageTransfer:
    """The outcome of ensure_image on one host."""

    host: str
    tag: str
    transferred: bool
    size: int = 0  # bytes streamed
    seconds: float = 0.0


_transfer_locks: dict[tuple[str, str], threading.Lock] = {}
_transfer_locks_guard = threading.Lock()


def _transfer_lock(address: str, tag: str) -> threading.Lock:
    with _transfer_locks_guard:
        return _transfer_locks.setdefault((address, tag), threading.Lock())


def has_image(client: HostClient, tag: str) -> bool:
    try:
        client.api.inspect_image(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def ensure_image(source: HostClient, target: HostClient, tag: str) -> ImageTransfer:
    """Make `tag` present on the target engine, streaming `docker save` from the source into
    `docker load` on the target when it lacks it (no registry, no file on disk). Idempotent per
    tag and host: a target that has the tag is left alone, and concurrent callers in one process
    transfer once."""
    with _transfer_lock(target.engine.address, tag):
        try:
            if has_image(target, tag):
                return ImageTransfer(target.engine.name, tag, transferred=False)
        except (docker.errors.DockerException, *LINK_ERRORS) as exc:
            raise target.engine.error(f"cannot list its images ({_first_line(exc)})") from None
        return _transfer(source, target, tag)


def _transfer(source: HostClient, target: HostClient, tag: str) -> ImageTransfer:
    where = f"sending image {tag} from {source.engine.describe()} to {target.engine.describe()}"
    try:
        wanted = source.api.inspect_image(tag)["Id"]
    except docker.errors.ImageNotFound:
        raise source.engine.error(
            f"has no image {tag} to send to {target.engine.describe()}; build it there first "
            f"(scripts/setup builds the agent image)") from None
    except (docker.errors.DockerException, *LINK_ERRORS) as exc:
        raise source.engine.error(f"cannot read image {tag} ({_first_line(exc)})") from None
    started = time.monotonic()
    archive = _Counted(source.api.get_image(tag, chunk_size=1 << 20))
    try:
        for message in target.api.load_image(archive):
            if message.get("error"):
                raise target.engine.error(f"{where}: the load failed ({message['error']}); run again")
        loaded = target.api.inspect_image(tag)["Id"]
    except EngineError:
        raise
    except (docker.errors.DockerException, *LINK_ERRORS) as exc:
        raise target.engine.error(f"{where}: {_first_line(exc)}; run again (an interrupted load leaves nothing tagged)") from None
    if loaded != wanted:
        raise target.engine.error(f"{where}: loaded {loaded}, expected {wanted}; remove the tag there and run again")
    return ImageTransfer(target.engine.name, tag, True, archive.size, time.monotonic() - started)


class _Counted:
    """Passes a byte stream through, counting it (requests sends an iterable chunked)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.size += len(chunk)
            yield chunk


@dataclass(frozen=True)
class PortHolder:
    """A container that publishes (or, stopped, would publish on start) a host port."""

    container: str  # its name
    host_ip: str  # "" or 0.0.0.0 for every address
    container_port: str  # e.g. "22/tcp"
    running: bool
    labels: Mapping[str, str] = field(default_factory=dict)


def port_holders(client: HostClient, port: int, protocol: str = "tcp") -> list[PortHolder]:
    """Containers on this engine holding host `port`: running ones by their published ports,
    stopped ones by the bindings they take on start. Ports held by processes outside Docker are
    not visible through the Docker API."""
    holders: list[PortHolder] = []
    try:
        for summary in client.api.containers(all=True):
            name = summary["Names"][0].lstrip("/") if summary.get("Names") else summary["Id"][:12]
            labels = summary.get("Labels") or {}
            if summary.get("State") == "running":
                found = published_on(summary.get("Ports") or [], port, protocol)
            else:
                config = client.api.inspect_container(summary["Id"])["HostConfig"]
                found = bound_on(config.get("PortBindings") or {}, port, protocol)
            holders.extend(PortHolder(name, ip, inner, summary.get("State") == "running", labels) for ip, inner in found)
    except (docker.errors.DockerException, *LINK_ERRORS) as exc:
        raise client.engine.error(f"cannot list its containers ({_first_line(exc)})") from None
    return holders


def held_ports(client: HostClient, protocol: str = "tcp", known: Mapping[str, int] | None = None) -> set[int]:
    """Every host port a container on this engine publishes or, stopped, would take on start.
    `known`: ports of containers by name that the caller made itself, so a container it is still
    starting costs no inspect call (one each, while a fleet's creates queue for a port)."""
    held: set[int] = set(known.values()) if known else set()
    try:
        for summary in client.api.containers(all=True):
            if summary.get("State") == "running":
                held.update(entry["PublicPort"] for entry in summary.get("Ports") or []
                            if entry.get("PublicPort") and entry.get("Type", "tcp") == protocol)
                continue
            if known and any(name.lstrip("/") in known for name in summary.get("Names") or []):
                continue
            try:
                bindings = client.api.inspect_container(summary["Id"])["HostConfig"].get("PortBindings") or {}
            except docker.errors.NotFound:  # removed since it was listed
                continue
            for inner, entries in bindings.items():
                if (inner.partition("/")[2] or "tcp") != protocol:
                    continue
                for entry in entries or []:
                    low, _, high = (entry.get("HostPort") or "").partition("-")
                    if low:
                        held.update(range(int(low), int(high or low) + 1))
    except (docker.errors.DockerException, *LINK_ERRORS) as exc:
        raise client.engine.error(f"cannot list its containers ({_first_line(exc)})") from None
    return held


def published_on(ports: Iterable[Mapping[str, Any]], port: int, protocol: str) -> list[tuple[str, str]]:
    """(host IP, container port) pairs of a running container's `Ports` list that use `port`;
    a binding on every address is listed once (Docker shows it for 0.0.0.0 and again for ::)."""
    found = [(entry.get("IP", ""), f"{entry['PrivatePort']}/{protocol}")
             for entry in ports if entry.get("PublicPort") == port and entry.get("Type", "tcp") == protocol]
    return [(ip, inner) for ip, inner in dict.fromkeys(found) if ip != "::" or ("0.0.0.0", inner) not in found]


def bound_on(bindings: Mapping[str, Any], port: int, protocol: str) -> list[tuple[str, str]]:
    """(host IP, container port) pairs of `HostConfig.PortBindings` that take `port` on start;
    a host port may be a range ("8000-8010"), and an empty one is picked by Docker at start."""
    found = []
    for inner, entries in bindings.items():
        if (inner.partition("/")[2] or "tcp") != protocol:
            continue
        for entry in entries or []:
            low, _, high = (entry.get("HostPort") or "").partition("-")
            if low and int(low) <= port <= int(high or low):
                found.append((entry.get("HostIp", ""), inner))
    return found


def refused_create(container: str, engine: str, error: docker.errors.APIError) -> str:
    """Why an engine refused to create a container, and what to do: a name taken by a container
    the stack does not know (left by an interrupted run) is named with the command that removes it."""
    if error.status_code == 409:
        return (f"container {container}: a container of that name exists on {engine} but is not in this "
                f"stack's state (left by an interrupted run?): remove it (`docker rm -f {container}` there)")
    return f"container {container}: {engine} refused to create it: {error.explanation}"
