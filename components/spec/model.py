"""The fleet as typed values: which fields a stack config may set, and the frozen specs load_fleet
builds from it, so backends read checked attributes and never raw config."""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import Iterable, Optional

from agentfleet.forge import Forge
from agentfleet.githubapp import GitHubApp
from agentfleet.throttle import DEFAULT_FORGE_CONNECTIONS

DEFAULT_BACKEND = "docker"
PORT_RANGE = (1024, 65535)
DEFAULT_PORT_BASE = 22000
PORT_SPAN = 2000

# GitHub's published SSH host keys: the default known_hosts for an agent's remote.
GITHUB_KNOWN_HOSTS = (
    "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
    "github.com ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZMy7opKgwFB9nkt5YRrYMjNuG5N87uRgg6CLrpxxrE/gs0n8qXgzA2XkzI8ANk+ZxH+JjpdM=",
)

AGENT_FIELDS = {
    "name", "backend", "identity", "remote", "branch", "credential", "known_hosts",
    "resources", "ssh_port", "bind_address", "image", "retain_workspace", "packages", "host",
    "egress", "allow", "dns", "clone", "forge_user",
}
DEFAULTABLE_FIELDS = AGENT_FIELDS - {"name", "identity", "ssh_port", "branch"}
FLEET_FIELDS = {"defaults", "agents", "attach_networks", "port_base", "shared_objects", "hosts", "kubernetes", "base",
                "forge", "forge_connections", "pool"}
POOL_FIELDS = {"size"}
MAX_POOL_SIZE = 200  # booted members per host: each holds two containers, a port and ~40 MiB
BRANCH_PREFIX = "agent/"  # an agent's own branch is agent/<name> unless it names another
BASE_FIELDS = {"branch", "warn_behind"}
DEFAULT_WARN_BEHIND = 20  # commits the base may lag behind the remote before `agentfleet exec` says so
FORGE_FIELDS = {"kind", "api", "repository", "token", "app"}
APP_FIELDS = {"id", "installation", "private_key"}
FORGE_USER_FIELDS = {"name", "token"}
CLUSTER_FIELDS = {"kubeconfig", "context", "namespace", "node_address", "service_type", "storage_class", "image",
                  "image_pull_policy", "image_pull_secrets", "create_namespace"}
# How an agent's sshd is reached: a port on every node, or the address of the cluster's load balancer.
SERVICE_TYPES = ("NodePort", "LoadBalancer")
PULL_POLICIES = ("IfNotPresent", "Never", "Always")
HOST_FIELDS = {"address", "known_hosts", "identity_file", "endpoint_address", "attach_networks"}
LOCAL_HOST = "local"
FLEET_CLUSTER = "kubernetes"  # the host name of the fleet's own `kubernetes:` cluster
RESOURCE_FIELDS = {"cpus", "memory", "pids", "disk"}
CLONE_FIELDS = {"depth", "filter"}
CREDENTIAL_KINDS = ("generate", "ssh_key", "https_token")  # SharedObjects also knows "none"
EGRESS_MODES = ("restricted", "open")
PROTOCOLS = ("tcp", "udp")


class FleetConfigError(ValueError):
    """Every problem found in one stack's fleet config, each naming stack, agent and field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid fleet config:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class GitIdentity:
    name: str
    email: str


@dataclass(frozen=True)
class Resources:
    cpus: float = 1.0
    memory_mib: int = 1024
    pids: int = 512
    disk_gib: int = 10


@dataclass(frozen=True)
class CloneSpec:
    """How an agent's first clone fetches its remote: `depth` commits of history per branch (None:
    all of it), `filter` the objects it leaves on the remote until needed (None: none, e.g.
    "blob:none"). Only a first clone reads it: a workspace keeps the clone it was made with."""

    depth: Optional[int] = None
    filter: Optional[str] = None


@dataclass(frozen=True)
class Remote:
    """Where an agent pushes: the URL as given plus the parts that policy and checks need."""

    url: str
    scheme: str  # "ssh" or "https"
    host: str
    port: int
    path: str = ""  # the repository's path on the host, without a leading '/' or a trailing .git


@dataclass(frozen=True)
class Credential:
    """How the agent authenticates to its remote. `secret` holds the value read from config."""

    kind: str  # one of CREDENTIAL_KINDS
    config_key: Optional[str] = None
    secret: Optional[str] = field(default=None, repr=False)


@dataclass(frozen=True)
class ForgeUser:
    """The forge account (a machine user) an agent pushes as: its generated key becomes this user's
    SSH key, registered with the user's own API token (`token`, read from config key `config_key`)."""

    name: str
    config_key: str
    token: str = field(repr=False)


@dataclass(frozen=True)
class Destination:
    """One thing a restricted agent may reach: `host` is a DNS name (its addresses are admitted as
    the agent resolves it), a wildcard `*.example.com` (the names under it, not the name itself)
    or an address range in CIDR form (`10.0.0.5/32` for one address); one port, tcp or udp."""

    host: str
    port: int
    protocol: str = "tcp"

    @property
    def network(self) -> Optional[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """The address range, or None for a name or wildcard."""
        try:
            return ipaddress.ip_network(self.host)
        except ValueError:
            return None

    @property
    def is_wildcard(self) -> bool:
        return self.host.startswith("*.")


@dataclass(frozen=True)
class BaseSpec:
    """The branch the agents' work starts from and merges into. branch None: the remote's default
    branch, as each clone recorded it. warn_behind None: `agentfleet exec` never warns of a stale base."""

    branch: Optional[str] = None
    warn_behind: Optional[int] = DEFAULT_WARN_BEHIND


@dataclass(frozen=True)
class AgentSpec:
    name: str
    backend: str
    identity: GitIdentity
    remote: Optional[Remote]
    branch: str
    credential: Credential
    known_hosts: tuple[str, ...]
    resources: Resources
    ssh_port: Optional[int]  # explicit; else chosen free on the agent's host when it is made
    preferred_port: int  # where the search for a free port starts (stable per stack and agent)
    bind_address: Optional[str]  # explicit; else its host's endpoint address
    image: Optional[str]
    retain_workspace: bool
    packages: tuple[str, ...]
    egress: str = "restricted"
    allow: tuple[Destination, ...] = ()
    # The DNS servers the agent's resolver asks for allowed names (empty: the machine's own).
    dns: tuple[str, ...] = ()
    host: Optional[str] = None  # explicit placement; else the fleet places it (FleetSpec.placement)
    forge_user: Optional[ForgeUser] = None  # set: the forge shows its pushes as this user's (docs/forge.md)
    clone: CloneSpec = CloneSpec()

    @property
    def generates_remote_key(self) -> bool:
        """Whether the fleet generates the key this agent pushes to its (ssh) remote with."""
        return self.credential.kind == "generate" and self.remote is not None and self.remote.scheme == "ssh"


@dataclass(frozen=True)
class ClusterSpec:
    """A Kubernetes cluster `backend: kubernetes` agents run on, as pods."""

    kubeconfig: str  # a path; the file holds credentials, so Pulumi keeps its content as a secret
    namespace: str
    node_address: Optional[str]  # the address operators reach node ports on (NodePort services)
    service_type: str = "NodePort"
    context: Optional[str] = None
    storage_class: Optional[str] = None  # the cluster's default when None
    image: Optional[str] = None  # default: the agent image setup builds (imported into the node)
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()  # Secrets in the namespace that let nodes pull `image`
    create_namespace: bool = True


@dataclass(frozen=True)
class HostSpec:
    """Where the fleet places agents: a Docker engine (the local one, or one reached over SSH the
    way Docker reaches remote engines, trusting only its pinned host key), or a Kubernetes cluster."""

    name: str
    address: str = LOCAL_HOST  # or ssh://user@host[:port]
    known_hosts: tuple[str, ...] = ()
    identity_file: Optional[str] = None  # the operator's key for it (default ~/.ssh/id_ed25519)
    endpoint_address: str = "127.0.0.1"  # where agents' SSH ports bind and the operator dials them
    attach_networks: tuple[str, ...] = ()
    cluster: Optional[ClusterSpec] = None  # set: a cluster, whose agents are pods

    @property
    def is_local(self) -> bool:
        return self.address == LOCAL_HOST and self.cluster is None

    @property
    def backend(self) -> str:
        """The backend whose agents this host runs."""
        return "kubernetes" if self.cluster is not None else "docker"


@dataclass(frozen=True)
class SharedObjects:
    """One read-only mirror of the fleet's remote whose objects every Docker agent on that remote
    borrows (git alternates) instead of keeping its own copy. `credential` reads the remote when
    `pulumi up` makes the mirror (kind "none": a public https remote)."""

    remote: Remote
    credential: Credential
    known_hosts: tuple[str, ...]


@dataclass(frozen=True)
class FleetSpec:
    stack: str
    agents: tuple[AgentSpec, ...]
    attach_networks: tuple[str, ...] = ()
    shared_objects: Optional[SharedObjects] = None
    hosts: tuple[HostSpec, ...] = (HostSpec(LOCAL_HOST),)
    port_base: int = 22000
    base: BaseSpec = BaseSpec()
    forge: Optional[Forge] = None  # set: generated keys become deploy keys there (components/deploykey.py)
    app: Optional[GitHubApp] = None  # set (GitHub): https agents push with its installation tokens
    # Network git operations at once per remote host: first clones at boot, the client's fetches.
    forge_connections: int = DEFAULT_FORGE_CONNECTIONS
    # Booted Docker agents without identity kept on each Docker host, claimed by new agents.
    pool_size: int = 0

    def mints_token(self, agent: AgentSpec) -> bool:
        """Whether this agent pushes with GitHub App installation tokens the fleet mints (components/apptoken.py):
        an https remote whose credential the fleet makes, on a fleet that names an App."""
        return (self.app is not None and agent.credential.kind == "generate" and agent.remote is not None
                and agent.remote.scheme == "https")

    def host(self, name: str) -> HostSpec:
        return next(host for host in self.hosts if host.name == name)

    def hosts_for(self, backend: str) -> tuple[HostSpec, ...]:
        """The hosts that run this backend's agents: Docker engines for Docker agents, clusters for
        Kubernetes agents; Lima and Multipass VMs run on this machine."""
        if backend in ("docker", "kubernetes"):
            return tuple(host for host in self.hosts if host.backend == backend)
        return (self.host(LOCAL_HOST),)

    def placement(self, agent: AgentSpec) -> str:
        """The host an agent is made on: its `host`, else the one rendezvous hashing picks among
        the hosts of its backend. Once made, a Docker agent stays where it was made (its container
        records it) until `host` says otherwise; a Kubernetes agent has one cluster to go to (the
        config asks for `host` when there are more)."""
        if agent.host is not None:
            return agent.host
        return max(self.hosts_for(agent.backend),
                   key=lambda h: hashlib.sha256(f"{self.stack}/{agent.name}@{h.name}".encode()).digest()).name

    def placed(self, agents: Iterable[AgentSpec]) -> dict[HostSpec, list[AgentSpec]]:
        """The agents by the host each is made on, hosts in name order."""
        by_host: dict[str, list[AgentSpec]] = {}
        for agent in agents:
            by_host.setdefault(self.placement(agent), []).append(agent)
        return {self.host(name): by_host[name] for name in sorted(by_host)}

    def shares_objects(self, agent: AgentSpec) -> bool:
        """Whether this agent's first clone borrows the fleet's shared objects."""
        return (self.shared_objects is not None and agent.backend == "docker"
                and agent.remote is not None and agent.remote.url == self.shared_objects.remote.url)

    def registers_key(self, agent: AgentSpec) -> bool:
        """Whether `pulumi up` registers this agent's generated key on the forge (as a deploy key of
        the repository, or as its forge user's SSH key)."""
        return self.forge is not None and agent.generates_remote_key

    def backends(self) -> set[str]:
        return {agent.backend for agent in self.agents}
