"""The fleet as typed, validated objects: the one place that says what a valid stack config is.

Why all checks live here: a bad config must fail `pulumi preview` and `pulumi up` with one message
per problem (stack, agent, field, what is wrong, what would be right) before any resource exists.
`load_fleet` either returns a complete `FleetSpec` or raises `FleetConfigError` listing every
problem it found.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

from agentfleet.contract import BACKENDS
from agentfleet.sshkeys import NOT_A_PRIVATE_KEY, host_key_name, load_private_key

DEFAULT_BACKEND = "docker"
# Every pattern is used with fullmatch: `$` would also accept a trailing newline.
AGENT_NAME = re.compile(r"[a-z]([a-z0-9-]{0,30}[a-z0-9])?")
DOCKER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# user@domain: a dot-atom local part (RFC 5322, and any non-ASCII letter: RFC 6531), a domain of
# two or more labels. Leaves out quoted local parts and `"`, `;`, `<`, `>`, which git mangles.
_LOCAL_CHAR = r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f\s])"
_DOMAIN_LABEL = r"[^\W_](?:[\w-]*[^\W_])?"
EMAIL = re.compile(rf"{_LOCAL_CHAR}+(?:\.{_LOCAL_CHAR}+)*@{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})+")
MEMORY = re.compile(r"(\d+)\s*(m|mb|mib|g|gb|gib)?", re.IGNORECASE)
HOSTNAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
URL_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._~+-]*")
# git's scp-like form: [user@]host:path, a colon before any slash.
SCP_REMOTE = re.compile(r"(?:(?P<user>[^@/]*)@)?(?P<host>\[[^\]/]*\]|[^:/@\[\]]*):(?P<path>.*)")
URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")  # git's is_url(); else scp form or a path
URL_REMOTE = re.compile(r"[^:/]*://(?:(?P<user>[^@/]*)@)?(?P<host>\[[^\]/]*\]|[^:/@\[\]]*)(?::(?P<port>\d{1,5}))?(?P<path>/.*|)")
# `name::address` makes git run git-remote-<name> (ext:: runs any command, fd:: reads a descriptor).
REMOTE_HELPER = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*::")
PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+")  # Debian policy 5.6.1: no option, version or release
# What git strips from either end of an identity when it writes a commit (ident.c: crud), and the
# delimiters it drops from inside one.
GIT_IDENT_STRIPS = frozenset(".,:;<>\"\\'")
GIT_IDENT_DROPS = frozenset("<>")
# What git check-ref-format refuses anywhere in a branch name.
BRANCH_REFUSED = frozenset(" ~^:?*[\\")
_UNWRITABLE = {"Cc": "control character", "Cs": "lone surrogate", "Zl": "line separator", "Zp": "paragraph separator"}
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
    "egress", "allow", "dns",
}
DEFAULTABLE_FIELDS = AGENT_FIELDS - {"name", "identity", "ssh_port", "branch"}
FLEET_FIELDS = {"defaults", "agents", "attach_networks", "port_base", "shared_objects", "hosts", "kubernetes"}
CLUSTER_FIELDS = {"kubeconfig", "context", "namespace", "node_address", "service_type", "storage_class", "image",
                  "image_pull_policy", "image_pull_secrets", "create_namespace"}
# How an agent's sshd is reached: a port on every node, or the address of the cluster's load balancer.
SERVICE_TYPES = ("NodePort", "LoadBalancer")
PULL_POLICIES = ("IfNotPresent", "Never", "Always")
HOST_FIELDS = {"address", "known_hosts", "identity_file", "endpoint_address", "attach_networks"}
LOCAL_HOST = "local"
FLEET_CLUSTER = "kubernetes"  # the host name of the fleet's own `kubernetes:` cluster
HOST_NAME = re.compile(r"[a-z][a-z0-9-]{0,30}")
K8S_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
RESOURCE_FIELDS = {"cpus", "memory", "pids", "disk"}
CREDENTIAL_KINDS = ("generate", "ssh_key", "https_token")  # SharedObjects also knows "none"
EGRESS_MODES = ("restricted", "open")
# An `allow` entry: host:port, optionally /tcp or /udp; the host a name, *.name, an address or a
# range (10.0.0.0/24, [2001:db8::/32]).
ALLOW_ENTRY = re.compile(r"(?P<host>[^:\[\]]*|\[[^\]]*\]):(?P<port>\d{1,5})(?:/(?P<protocol>tcp|udp))?")
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
class Remote:
    """Where an agent pushes: the URL as given plus the parts that policy and checks need."""

    url: str
    scheme: str  # "ssh" or "https"
    host: str
    port: int


@dataclass(frozen=True)
class Credential:
    """How the agent authenticates to its remote. `secret` holds the value read from config."""

    kind: str  # one of CREDENTIAL_KINDS
    config_key: Optional[str] = None
    secret: Optional[str] = field(default=None, repr=False)


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

    def backends(self) -> set[str]:
        return {agent.backend for agent in self.agents}


SecretReader = Callable[[str], Optional[str]]


class _Problems:
    """Collects problems with their location, so one run reports all of them."""

    def __init__(self, stack: str) -> None:
        self.stack = stack
        self.items: list[str] = []

    def add(self, agent: Optional[str], field_name: str, message: str) -> None:
        where = f'stack "{self.stack}"' + (f', agent "{agent}"' if agent else "")
        self.items.append(f'{where}, field "{field_name}": {message}')


def _closest(word: str, choices: set[str]) -> str:
    import difflib

    match = difflib.get_close_matches(word, sorted(choices), n=1)
    return f'; did you mean "{match[0]}"?' if match else f"; valid fields: {', '.join(sorted(choices))}"


def _check_unknown(raw: Mapping[str, Any], allowed: set[str], problems: _Problems, agent: Optional[str], prefix: str) -> None:
    for key in raw:
        if key not in allowed:
            problems.add(agent, f"{prefix}{key}", f"unknown field{_closest(str(key), allowed)}")


def parse_memory_mib(value: Any) -> Optional[int]:
    """'512m', '2g', '2GiB' or a number of MiB -> MiB; None when it is not a size."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    match = MEMORY.fullmatch(str(value).strip())
    if not match or int(match.group(1)) == 0:
        return None
    unit = (match.group(2) or "m").lower()
    return int(match.group(1)) * (1024 if unit.startswith("g") else 1)


def unwritable(text: str) -> Optional[str]:
    """The first character of text that cannot travel exactly (control characters, line
    breaks, lone surrogates), described for an error message; None when there is none."""
    for char in text:
        kind = _UNWRITABLE.get(unicodedata.category(char))
        if kind:
            return f"the {kind} U+{ord(char):04X}"
    return None


def parse_host(text: str) -> str:
    """A DNS name, IPv4 address or [IPv6] address (brackets removed); ValueError otherwise.

    Nothing else reaches ssh, git or getent as a host: no leading '-' (an option to them)."""
    if text.startswith("[") and text.endswith("]") and "%" not in text:
        try:
            ipaddress.IPv6Address(text[1:-1])
            return text[1:-1]
        except ValueError:
            pass
    elif HOSTNAME.fullmatch(text):
        return text
    raise ValueError(f"has the host {text!r}, which is not a host name or address")


def parse_remote(url: str) -> Remote:
    """ssh://[user@]host[:port]/path, [user@]host:path (scp form) or https://host[:port]/path.

    ValueError says why git would read url as something else: an option, a local path, another
    transport or a remote helper (`ext::` runs any command).
    """
    bad = unwritable(url)
    if bad or any(char.isspace() for char in url):
        raise ValueError(f"contains {bad or 'a space'}; percent-encode spaces in URLs (%20)")
    if url.startswith("-"):
        raise ValueError("starts with '-', which git would read as an option")
    helper = REMOTE_HELPER.match(url)
    if helper:
        raise ValueError(f"makes git run the remote helper git-remote-{helper.group()[:-2]}")
    if URL_SCHEME.match(url):
        return _parse_url_remote(url)
    if ":" not in url.split("/", 1)[0]:
        raise ValueError("is a local path to git (no host: before the first '/')")
    match = SCP_REMOTE.fullmatch(url)
    if not match:
        raise ValueError("is not of the form user@host:path")
    _check_url_user(match.group("user"))
    host = parse_host(match.group("host"))
    path = match.group("path")
    if not path or path.startswith("-"):
        raise ValueError("needs a path after host: that does not start with '-'")
    return Remote(url=url, scheme="ssh", host=host, port=22)


def _parse_url_remote(url: str) -> Remote:
    # Not urlsplit: it drops tabs and newlines and reads '#' as a fragment, which git does not.
    scheme = url.split("://", 1)[0]
    if scheme not in ("ssh", "https"):
        raise ValueError(f"uses the {scheme}:// transport; agents use ssh:// or https://")
    match = URL_REMOTE.fullmatch(url)
    if not match:
        raise ValueError(f"is not of the form {scheme}://[user@]host[:port]/path")
    user = match.group("user")
    if user is not None and ":" in user:
        raise ValueError("holds a password; give it as `credential: {https_token: <config key>}` (a secret)")
    _check_url_user(user)
    host = parse_host(match.group("host")).lower()
    port = int(match.group("port") or (22 if scheme == "ssh" else 443))
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    if not match.group("path").strip("/"):
        raise ValueError("has no repository path")
    return Remote(url=url, scheme=scheme, host=host, port=port)


def _check_url_user(user: Optional[str]) -> None:
    if user is not None and not URL_USER.fullmatch(user):
        raise ValueError(f"user {user!r} is not a login name (letters, digits, '.', '_', '-', not first '-')")


def identity_problem(value: str) -> Optional[str]:
    """Why git would not record value exactly as a commit's author name or email, or None."""
    if not value:
        return "is empty"
    bad = unwritable(value)
    if bad:
        return f"contains {bad}; remove it"
    dropped = sorted({char for char in value if char in GIT_IDENT_DROPS})
    if dropped:
        return f"contains {' and '.join(map(repr, dropped))}, which git drops from names and emails in commits"
    for end, char in (("starts", value[0]), ("ends", value[-1])):
        if ord(char) <= 32 or char in GIT_IDENT_STRIPS:
            return (f"{end} with {char!r}, which git strips from either end of a name or email in commits "
                    "(spaces and . , : ; < > \" \\ ')")
    return None


def branch_problem(branch: str) -> Optional[str]:
    """Why git would refuse branch (git check-ref-format --branch) or read it otherwise, or None."""
    if not branch:
        return "is empty"
    bad = unwritable(branch)
    if bad:
        return f"contains {bad}"
    if branch.startswith("-"):
        return "starts with '-', which git would read as an option"
    if branch in ("HEAD", "@"):
        return "is a name git reserves for the current commit"
    refused = sorted({char for char in branch if char in BRANCH_REFUSED})
    sequences = [part for part in ("..", "@{", "//") if part in branch]
    if refused or sequences:
        return f"contains {', '.join(map(repr, refused + sequences))}, which git refuses in branch names"
    if branch.startswith("/") or branch.endswith(("/", ".")):
        return "starts or ends with '/' or ends with '.', which git refuses"
    if any(part.startswith(".") or part.endswith(".lock") for part in branch.split("/")):
        return "has a part starting with '.' or ending in '.lock', which git refuses"
    return None


def _stable_port(stack: str, name: str, base: int) -> int:
    digest = hashlib.sha256(f"{stack}/{name}".encode()).digest()
    return base + int.from_bytes(digest[:4], "big") % PORT_SPAN


def _is_private_key(text: str) -> bool:
    try:
        load_private_key(text)
        return True
    except ValueError:
        return False


def declared_backends(raw: Any) -> list[str]:
    """The backends a raw fleet config object names (agent, else defaults, else docker), in
    order of first use. Read without validating (setup needs them before it can run Pulumi);
    load_fleet judges the names."""
    if not isinstance(raw, Mapping):
        return []
    defaults = raw.get("defaults")
    fallback = defaults.get("backend", DEFAULT_BACKEND) if isinstance(defaults, Mapping) else DEFAULT_BACKEND
    agents = raw.get("agents")
    named = [agent.get("backend", fallback) for agent in agents if isinstance(agent, Mapping)] if isinstance(agents, list) else []
    return list(dict.fromkeys(str(backend) for backend in named))


def load_fleet(stack: str, raw: Any, read_secret: SecretReader) -> FleetSpec:
    """Turn the stack's fleet config object (`<project>:fleet`) into a FleetSpec, or raise FleetConfigError.

    `read_secret(key)` returns the plain value of the project's config key `<key>` (or None); the
    caller wraps it as a Pulumi secret before it reaches any resource.
    """
    problems = _Problems(stack)
    if not isinstance(raw, Mapping):
        problems.add(None, "fleet", "missing or not a mapping; set the stack's `fleet` config with `agents:` (see stacks/Pulumi.dev.yaml)")
        raise FleetConfigError(problems.items)
    _check_unknown(raw, FLEET_FIELDS, problems, None, "")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        problems.add(None, "defaults", "must be a mapping of agent fields")
        defaults = {}
    for key in defaults:
        if key not in DEFAULTABLE_FIELDS:
            problems.add(None, f"defaults.{key}", f"cannot be a fleet default{_closest(str(key), DEFAULTABLE_FIELDS)}")
    agents_raw = raw.get("agents")
    if not isinstance(agents_raw, list) or not agents_raw:
        problems.add(None, "agents", "the fleet is empty; list at least one agent with `name` and `identity`")
        raise FleetConfigError(problems.items)

    port_base = raw.get("port_base", DEFAULT_PORT_BASE)
    if not isinstance(port_base, int) or not PORT_RANGE[0] <= port_base <= PORT_RANGE[1] - PORT_SPAN:
        problems.add(None, "port_base", f"{port_base!r} is not a port base; use an integer from {PORT_RANGE[0]} to {PORT_RANGE[1] - PORT_SPAN}")
        port_base = DEFAULT_PORT_BASE

    networks = raw.get("attach_networks") or []
    if not isinstance(networks, list) or not all(isinstance(n, str) and DOCKER_NAME.fullmatch(n) for n in networks):
        problems.add(None, "attach_networks", "must be a list of existing Docker network names")
        networks = []

    parsed: list[dict[str, Any]] = []
    seen_names: set[str] = set()
    for index, entry in enumerate(agents_raw):
        if not isinstance(entry, Mapping):
            problems.add(None, f"agents[{index}]", "must be a mapping with at least `name` and `identity`")
            continue
        merged = {**{k: v for k, v in defaults.items() if k in DEFAULTABLE_FIELDS}, **entry}
        if isinstance(defaults.get("resources"), Mapping) and isinstance(entry.get("resources"), Mapping):
            merged["resources"] = {**defaults["resources"], **entry["resources"]}
        name = entry.get("name")
        if not isinstance(name, str) or not AGENT_NAME.fullmatch(name):
            problems.add(None, f"agents[{index}].name", f"{name!r} is not a valid agent name; use 1-32 lowercase letters, digits and '-', starting with a letter")
            continue
        if name in seen_names:
            problems.add(name, "name", "duplicate agent name; every agent needs its own name")
            continue
        seen_names.add(name)
        _check_unknown(entry, AGENT_FIELDS, problems, name, "")
        parsed.append(merged)

    explicit_ports: dict[int, str] = {}
    for merged in parsed:
        port = merged.get("ssh_port")
        if port is None:
            continue
        if isinstance(port, bool) or not isinstance(port, int) or not PORT_RANGE[0] <= port <= PORT_RANGE[1]:
            problems.add(merged["name"], "ssh_port", f"{port!r} is out of range; use an integer from {PORT_RANGE[0]} to {PORT_RANGE[1]}, or leave it out to have one assigned")
        elif port in explicit_ports:
            problems.add(merged["name"], "ssh_port", f"{port} is already the port of agent \"{explicit_ports[port]}\"; give each agent its own port")
        else:
            explicit_ports[port] = merged["name"]

    hosts = _load_hosts(raw.get("hosts"), stack, networks, problems)
    if "kubernetes" in raw:
        cluster = _load_cluster(raw["kubernetes"], "kubernetes", stack, problems)
        if any(host.name == FLEET_CLUSTER for host in hosts):
            problems.add(None, f"hosts.{FLEET_CLUSTER}", f"{FLEET_CLUSTER!r} is the host name of the fleet's "
                         "`kubernetes:` cluster; give this host another name")
        elif cluster is not None:
            hosts.insert(1, HostSpec(FLEET_CLUSTER, cluster=cluster))
    _check_distinct_clusters(hosts, problems)
    agents: list[AgentSpec] = []
    for merged in parsed:
        port = merged.get("ssh_port") if merged["name"] in explicit_ports.values() else None
        agent = _load_agent(merged, port, _stable_port(stack, merged["name"], port_base), problems, read_secret)
        if agent is None:
            continue
        problem = _placement_problem(agent, hosts)
        if problem:
            problems.add(agent.name, "host", problem)
        else:
            agents.append(agent)
    homeless = [a.name for a in agents if a.backend == "kubernetes" and a.host is None
                and not any(host.cluster for host in hosts)]
    if homeless:
        problems.add(None, "kubernetes", f"agents {', '.join(homeless)} have backend kubernetes, but the fleet names "
                     "no cluster; add `kubernetes: {kubeconfig: ~/.kube/config, node_address: <node IP>}`")

    shared = _load_shared_objects(raw.get("shared_objects", False), agents, problems, read_secret)
    if problems.items:
        raise FleetConfigError(problems.items)
    return FleetSpec(stack=stack, agents=tuple(agents), attach_networks=tuple(networks), shared_objects=shared,
                     hosts=tuple(hosts), port_base=port_base)


def _placement_problem(agent: AgentSpec, hosts: list[HostSpec]) -> Optional[str]:
    """Why an agent cannot go where its `host` (or the lack of one) sends it, if it cannot."""
    def names(backend: str) -> str:
        return ", ".join(h.name for h in hosts if h.backend == backend) or "none yet"

    if agent.host is None:
        clusters = [h.name for h in hosts if h.cluster is not None]
        if agent.backend == "kubernetes" and len(clusters) > 1:
            return f"the fleet has clusters {', '.join(clusters)}; set `host` to the one this agent runs on"
        return None
    host = next((h for h in hosts if h.name == agent.host), None)
    if host is None:
        return (f"{agent.host!r} is not a host of this fleet; use one of {', '.join(h.name for h in hosts)} "
                "(declare others under `hosts:`)")
    if agent.backend in ("lima", "multipass") and host.name != LOCAL_HOST:
        return f"{agent.backend} VMs run on this machine only; remove `host` or set it to {LOCAL_HOST!r}"
    if agent.backend == "kubernetes" and host.cluster is None:
        return (f"host {host.name!r} is a Docker engine; a kubernetes agent runs on a cluster "
                f"(clusters: {names('kubernetes')}; declare one under `kubernetes:` or `hosts.<name>.kubernetes`)")
    if agent.backend == "docker" and host.cluster is not None:
        return (f"host {host.name!r} is a Kubernetes cluster; set `backend: kubernetes` to run this agent there "
                f"as a pod, or name a Docker host ({names('docker')})")
    return None


def _check_distinct_clusters(hosts: list[HostSpec], problems: _Problems) -> None:
    """Two cluster hosts on one namespace of one cluster would make (and delete) the same objects."""
    seen: dict[tuple[str, Optional[str], str], str] = {}
    for host in hosts:
        if host.cluster is None:
            continue
        key = (str(Path(host.cluster.kubeconfig).expanduser()), host.cluster.context, host.cluster.namespace)
        if key in seen:
            problems.add(None, f"hosts.{host.name}", f"is the same cluster and namespace as host {seen[key]!r}; "
                         "give one of them another `namespace`")
        seen.setdefault(key, host.name)


def _load_cluster(raw: Any, where: str, stack: str, problems: _Problems) -> Optional[ClusterSpec]:
    """`kubernetes: {kubeconfig: PATH, node_address: IP, namespace: ..., storage_class: ...}`: the
    fleet's cluster (`where` is "kubernetes") or a cluster host's (`hosts.<name>.kubernetes`)."""
    before = len(problems.items)
    if not isinstance(raw, Mapping):
        problems.add(None, where, "must be a mapping with `kubeconfig` and `node_address`")
        return None
    _check_unknown(raw, CLUSTER_FIELDS, problems, None, f"{where}.")
    kubeconfig = raw.get("kubeconfig")
    if not isinstance(kubeconfig, str) or not kubeconfig.strip():
        problems.add(None, f"{where}.kubeconfig", "must be the path of a kubeconfig file (e.g. ~/.kube/config)")
    service_type = raw.get("service_type", "NodePort")
    node_address = raw.get("node_address")
    if service_type not in SERVICE_TYPES:
        problems.add(None, f"{where}.service_type", f"{service_type!r}; use NodePort (the default: a port on "
                     "`node_address`) or LoadBalancer (the address the cluster's load balancer gives)")
    elif service_type == "LoadBalancer" and node_address is not None:
        problems.add(None, f"{where}.node_address", "is for NodePort services; with service_type LoadBalancer the "
                     "endpoint is the load balancer's address: remove node_address")
    elif service_type == "NodePort" and (not isinstance(node_address, str) or not _is_ipv4(node_address)):
        problems.add(None, f"{where}.node_address", f"{node_address!r} is not the IPv4 address of a node the "
                     "operator reaches node ports on")
    namespace = raw.get("namespace", f"agentfleet-{stack}".lower())
    if not isinstance(namespace, str) or not K8S_NAME.fullmatch(namespace):
        problems.add(None, f"{where}.namespace", f"{namespace!r} is not a namespace name (a DNS label: a-z 0-9 -)")
    policy = raw.get("image_pull_policy", "IfNotPresent")
    if policy not in PULL_POLICIES:
        problems.add(None, f"{where}.image_pull_policy", f"{policy!r}; use one of {', '.join(PULL_POLICIES)}")
    optional = {key: raw.get(key) for key in ("context", "storage_class", "image")}
    for key, value in optional.items():
        if value is not None and (not isinstance(value, str) or not value.strip() or unwritable(value)
                                  or value.startswith("-") or any(c.isspace() for c in value)):
            problems.add(None, f"{where}.{key}", f"{value!r} is not a {key.replace('_', ' ')} name")
    pull_secrets = raw.get("image_pull_secrets", [])
    if not isinstance(pull_secrets, list) or not all(isinstance(n, str) and K8S_NAME.fullmatch(n) for n in pull_secrets):
        problems.add(None, f"{where}.image_pull_secrets", "must be a list of Secret names in the namespace "
                     "(docker-registry Secrets: `kubectl create secret docker-registry NAME ...`)")
    create = raw.get("create_namespace", True)
    if not isinstance(create, bool):
        problems.add(None, f"{where}.create_namespace", f"{create!r} is not true or false")
    if len(problems.items) > before:
        return None
    return ClusterSpec(kubeconfig=kubeconfig, namespace=namespace, node_address=node_address,
                       service_type=service_type, image_pull_policy=policy, image_pull_secrets=tuple(pull_secrets), create_namespace=create,
                       **optional)


def _load_hosts(raw: Any, stack: str, local_networks: list[str], problems: _Problems) -> list[HostSpec]:
    """`hosts: {name: {address: ssh://user@host[:port], known_hosts: [line], ...}}` for Docker
    engines, `{name: {kubernetes: {...}}}` for clusters; the local engine is always there, as host
    `local`."""
    hosts = [HostSpec(LOCAL_HOST, attach_networks=tuple(local_networks))]
    if raw is None:
        return hosts
    if not isinstance(raw, Mapping):
        problems.add(None, "hosts", "must map host names to `{address: ssh://user@host, known_hosts: [...]}` "
                     "or `{kubernetes: {kubeconfig: ..., node_address: ...}}`")
        return hosts
    from components.engines import SshTarget

    for name, entry in raw.items():
        where = f"hosts.{name}"
        if name == LOCAL_HOST or not isinstance(name, str) or not HOST_NAME.fullmatch(name):
            problems.add(None, where, f"{name!r} is not a host name; use 1-31 lowercase letters, digits and '-' "
                         f"(not {LOCAL_HOST!r}: the local engine is always host {LOCAL_HOST!r})")
            continue
        if not isinstance(entry, Mapping):
            problems.add(None, where, "must be a mapping with `address` and `known_hosts`, or with `kubernetes`")
            continue
        if "kubernetes" in entry:
            _check_unknown(entry, {"kubernetes"}, problems, None, f"{where}.")
            cluster = _load_cluster(entry["kubernetes"], f"{where}.kubernetes", stack, problems)
            if cluster is not None:
                hosts.append(HostSpec(name, cluster=cluster))
            continue
        _check_unknown(entry, HOST_FIELDS, problems, None, f"{where}.")
        try:
            target = SshTarget.parse(str(entry.get("address", "")))
        except ValueError as error:
            problems.add(None, f"{where}.address", str(error))
            continue
        pinned = entry.get("known_hosts")
        if not isinstance(pinned, list) or not pinned or not all(
                isinstance(line, str) and len(line.split()) >= 3 and not unwritable(line) for line in pinned):
            problems.add(None, f"{where}.known_hosts", "must list the host's pinned SSH key as known_hosts lines "
                         f"(check `ssh-keyscan -p {target.port} {target.host}` out of band)")
            continue
        if not any(target.host_key_name in line.split()[0].split(",") for line in pinned):
            problems.add(None, f"{where}.known_hosts", f"has no key for {target.host_key_name}; add its line")
            continue
        identity = entry.get("identity_file")
        if identity is not None and (not isinstance(identity, str) or not identity.strip()):
            problems.add(None, f"{where}.identity_file", "must be the path of the operator's private key for this host")
            continue
        endpoint = entry.get("endpoint_address", target.host)
        if not isinstance(endpoint, str) or not _is_ipv4(endpoint) or endpoint == "0.0.0.0":
            problems.add(None, f"{where}.endpoint_address", f"{endpoint!r} is not an IPv4 address the operator reaches "
                         "the host on (agents' SSH ports bind there; 0.0.0.0 is refused)")
            continue
        networks = entry.get("attach_networks") or []
        if not isinstance(networks, list) or not all(isinstance(n, str) and DOCKER_NAME.fullmatch(n) for n in networks):
            problems.add(None, f"{where}.attach_networks", "must be a list of Docker network names on that host")
            continue
        hosts.append(HostSpec(name, target.address, tuple(pinned), identity, endpoint, tuple(networks)))
    return hosts


def _load_shared_objects(raw: Any, agents: list[AgentSpec], problems: _Problems,
                         read_secret: SecretReader) -> Optional[SharedObjects]:
    """`shared_objects: true`, or `{credential: {ssh_key: KEY} | {https_token: KEY}}`.

    The mirror is made at `pulumi up`, so it needs a credential that can read the remote then:
    the one given in the mapping, else the first key or token given to an agent on that remote
    (a key the fleet generates is not registered anywhere yet)."""
    if raw is False or raw is None:
        return None
    if raw is not True and not (isinstance(raw, Mapping) and set(raw) <= {"credential"}):
        problems.add(None, "shared_objects", "use true, or `{credential: {ssh_key: <config key>}}` "
                     "(or https_token) naming a secret that can read the agents' remote")
        return None
    remotes = {agent.remote.url: agent for agent in agents if agent.remote is not None and agent.backend == "docker"}
    if not remotes:
        if agents:
            problems.add(None, "shared_objects", "no Docker agent has a `remote`; there is nothing to share")
        return None
    if len(remotes) > 1:
        problems.add(None, "shared_objects", f"mirrors one repository, but the agents use {len(remotes)}: "
                     f"{', '.join(sorted(remotes))}; give them one `remote` or turn shared_objects off")
        return None
    url, first = next(iter(remotes.items()))
    assert first.remote is not None
    on_remote = [agent for agent in agents if agent.remote is not None and agent.remote.url == url]
    if isinstance(raw, Mapping):
        sub = _Problems(problems.stack)
        credential = _load_credential(raw.get("credential"), first.remote, "-", sub, read_secret)
        for problem in sub.items:
            problems.items.append(problem.replace(', agent "-", field "', ', field "shared_objects.'))
        if credential is None:
            return None
        if credential.kind == "generate":
            problems.add(None, "shared_objects.credential", "must be a key or token that can read the remote "
                         "now: `{ssh_key: <config key>}` or `{https_token: <config key>}`")
            return None
    else:
        given = [agent.credential for agent in on_remote if agent.credential.kind != "generate"]
        if given:
            credential = given[0]
        elif first.remote.scheme == "https":
            credential = Credential(kind="none")
        else:
            problems.add(None, "shared_objects", f"no credential can read {url} at `pulumi up` (the agents' keys "
                         "are generated and not registered yet); set `shared_objects: {credential: {ssh_key: <config key>}}`")
            return None
    return SharedObjects(remote=first.remote, credential=credential, known_hosts=first.known_hosts)


def _load_agent(raw: Mapping[str, Any], port: Optional[int], preferred_port: int, problems: _Problems,
                read_secret: SecretReader) -> Optional[AgentSpec]:
    name: str = raw["name"]
    before = len(problems.items)

    backend = raw.get("backend", DEFAULT_BACKEND)
    if backend not in BACKENDS:
        problems.add(name, "backend", f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")

    identity = _load_identity(raw.get("identity"), name, problems)

    remote = None
    if raw.get("remote") is not None:
        try:
            if not isinstance(raw["remote"], str):
                raise ValueError("is not text")
            remote = parse_remote(raw["remote"])
        except ValueError as error:
            problems.add(name, "remote", f"{raw['remote']!r} {error}; use ssh://git@host[:port]/path.git, git@host:path.git or https://host/path.git")

    credential = _load_credential(raw.get("credential"), remote, name, problems, read_secret)

    known_hosts_raw = raw.get("known_hosts", list(GITHUB_KNOWN_HOSTS))
    if not isinstance(known_hosts_raw, list) or not all(isinstance(l, str) and len(l.split()) >= 3 and not unwritable(l) for l in known_hosts_raw):
        problems.add(name, "known_hosts", "must be a list of OpenSSH known_hosts lines ('host keytype base64key', one line each), e.g. from `ssh-keyscan HOST`")
        known_hosts_raw = []
    if remote is not None and remote.scheme == "ssh":
        pattern = host_key_name(remote.host, remote.port)
        if not any(pattern in line.split()[0].split(",") for line in known_hosts_raw):
            problems.add(name, "known_hosts", f"no host key for the remote's host {pattern}; add its line (`ssh-keyscan -p {remote.port} {remote.host}`)")

    resources = _load_resources(raw.get("resources") or {}, name, problems)

    bind_address = raw.get("bind_address")
    if bind_address is not None and (not isinstance(bind_address, str) or not _is_ipv4(bind_address)):
        problems.add(name, "bind_address", f"{bind_address!r} is not an IPv4 address; the default (127.0.0.1, or a remote host's endpoint_address) keeps the endpoint private")
    elif backend == "lima" and bind_address not in (None, "127.0.0.1"):
        problems.add(name, "bind_address", "Lima forwards SSH on 127.0.0.1 only; remove bind_address or use the docker backend")

    packages = raw.get("packages") or []
    if not isinstance(packages, list) or not all(isinstance(p, str) and PACKAGE.fullmatch(p) for p in packages):
        problems.add(name, "packages", "must be a list of Debian package names (a-z 0-9 + . -, starting with a letter or digit; no versions or options)")
        packages = []

    retain = raw.get("retain_workspace", False)
    if not isinstance(retain, bool):
        problems.add(name, "retain_workspace", f"{retain!r} is not true or false")

    image = raw.get("image")
    if image is not None and (not isinstance(image, str) or not image.strip() or image.startswith("-")
                              or unwritable(image) or any(char.isspace() for char in image)):
        problems.add(name, "image", "must be an image reference such as agentfleet/agent:latest (no spaces, not starting with '-')")

    branch = raw.get("branch", f"agent/{name}")
    problem = branch_problem(branch) if isinstance(branch, str) else "is not text"
    if problem:
        problems.add(name, "branch", f"{branch!r} {problem}; use a name such as agent/{name}")

    egress = raw.get("egress", "restricted")
    if egress not in EGRESS_MODES:
        problems.add(name, "egress", f"{egress!r} is not an egress mode; use restricted (default: only the remote and `allow` entries) or open")
    allow = _load_allow(raw.get("allow") or [], name, problems)
    dns = _load_dns(raw.get("dns") or [], name, problems)

    host = raw.get("host")
    if host is not None and not isinstance(host, str):
        problems.add(name, "host", f"{host!r} is not a host name; use `local` or a name under `hosts:`")

    if len(problems.items) > before or identity is None or credential is None:
        return None
    return AgentSpec(
        name=name, backend=backend, identity=identity, remote=remote, branch=branch,
        credential=credential, known_hosts=tuple(known_hosts_raw), resources=resources,
        ssh_port=port, preferred_port=preferred_port, bind_address=bind_address, image=image,
        retain_workspace=retain, packages=tuple(packages), egress=egress, allow=allow, dns=dns, host=host,
    )


def _load_identity(raw: Any, name: str, problems: _Problems) -> Optional[GitIdentity]:
    """The git identity, refused unless git would record both values exactly as given."""
    if not isinstance(raw, Mapping) or not raw.get("name") or not raw.get("email"):
        problems.add(name, "identity", "missing git identity; set `identity: {name: ..., email: ...}`")
        return None
    _check_unknown(raw, {"name", "email"}, problems, name, "identity.")
    before = len(problems.items)
    for key in ("name", "email"):
        value = raw[key]
        problem = identity_problem(value) if isinstance(value, str) else "is not text; quote it"
        if problem is None and key == "email" and not EMAIL.fullmatch(value):
            problem = f"is not an email address; expected something like {name}@example.com"
        if problem:
            problems.add(name, f"identity.{key}", f"{value!r} {problem}")
    return GitIdentity(name=raw["name"], email=raw["email"]) if len(problems.items) == before else None


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
        return True
    except ValueError:
        return False


def destination(host: str, port: int, protocol: str = "tcp") -> Destination:
    """A Destination from a host as written (name, *.name, address, range; IPv6 without
    brackets), or ValueError saying why it is none of these."""
    if host.startswith("*."):
        suffix = parse_host(host[2:]).lower()
        if "." not in suffix or _numeric_label(suffix):
            raise ValueError(f"has the wildcard {host!r}; write one for a domain of two or more labels, e.g. *.example.com")
        return Destination(f"*.{suffix}", port, protocol)
    if any(char in host for char in ":/") or host.replace(".", "").isdigit():
        try:
            network = ipaddress.ip_network(host, strict=True)
        except ValueError as error:
            raise ValueError(f"has the address or range {host!r}, which is not one ({error})") from None
        if network.version == 6 and "%" in host:
            raise ValueError(f"has the address {host!r} with a zone")
        return Destination(str(network), port, protocol)
    name = parse_host(host).lower()
    if _numeric_label(name):
        raise ValueError(f"has the host {host!r}, which is neither a name nor an address")
    return Destination(name, port, protocol)


def _numeric_label(name: str) -> bool:
    """Whether the last label is all digits: no top-level domain is, so it is a bad address."""
    return name.rsplit(".", 1)[-1].isdigit()


def _load_allow(raw: Any, name: str, problems: _Problems) -> tuple[Destination, ...]:
    hint = ("write host:port[/tcp|/udp] with a name, *.name, an address or a range, e.g. pypi.org:443, "
            "*.githubusercontent.com:443, 10.0.0.5:22, 10.0.0.0/24:22/udp or [2001:db8::/32]:443")
    if not isinstance(raw, list):
        problems.add(name, "allow", f"must be a list of entries; {hint}")
        return ()
    allow = []
    for index, entry in enumerate(raw):
        match = ALLOW_ENTRY.fullmatch(entry) if isinstance(entry, str) else None
        try:
            if not match or not 1 <= int(match.group("port")) <= 65535:
                raise ValueError("is not host:port")
            host = match.group("host")
            if host.startswith("[") and host.endswith("]"):
                host = host[1:-1]
                if not host or ":" not in host:
                    raise ValueError("is not host:port")
            elif ":" in host:
                raise ValueError("is not host:port")
            allow.append(destination(host, int(match.group("port")), match.group("protocol") or "tcp"))
        except ValueError as error:
            reason = f": it {error}" if str(error) != "is not host:port" else ""
            problems.add(name, f"allow[{index}]", f"{entry!r} is not host:port{reason}; {hint}")
    return tuple(dict.fromkeys(allow))


def _load_dns(raw: Any, name: str, problems: _Problems) -> tuple[str, ...]:
    if not isinstance(raw, list):
        problems.add(name, "dns", f"{raw!r} is not a list; list the DNS servers the agent may ask, e.g. [10.0.0.2]")
        return ()
    servers = []
    for index, entry in enumerate(raw):
        try:
            servers.append(str(ipaddress.ip_address(entry if isinstance(entry, str) else "")))
        except ValueError:
            problems.add(name, f"dns[{index}]", f"{entry!r} is not an IP address; list the DNS servers "
                         "the agent may ask, e.g. [10.0.0.2]")
    return tuple(servers)


def _load_credential(raw: Any, remote: Optional[Remote], name: str, problems: _Problems, read_secret: SecretReader) -> Optional[Credential]:
    if raw is None or raw == "generate":
        return Credential(kind="generate")
    if not isinstance(raw, Mapping) or len(raw) != 1 or next(iter(raw)) not in CREDENTIAL_KINDS[1:]:
        problems.add(name, "credential", "use `generate` (default), `{ssh_key: <config key>}` or `{https_token: <config key>}`; the key names a secret set with `pulumi config set --secret`")
        return None
    kind, key = next(iter(raw.items()))
    secret = read_secret(str(key))
    if not secret:
        problems.add(name, f"credential.{kind}", f"config key {key} is not set; run `pulumi config set --secret {key} < file`")
        return None
    if kind == "ssh_key" and not _is_private_key(secret):
        problems.add(name, f"credential.{kind}", f"config key {key} is {NOT_A_PRIVATE_KEY}")
        return None
    if kind == "https_token" and (remote is None or remote.scheme != "https"):
        problems.add(name, f"credential.{kind}", "an HTTPS token needs an https:// remote")
        return None
    return Credential(kind=kind, config_key=str(key), secret=secret)


def _load_resources(raw: Any, name: str, problems: _Problems) -> Resources:
    if not isinstance(raw, Mapping):
        problems.add(name, "resources", "must be a mapping with cpus, memory, pids, disk")
        return Resources()
    _check_unknown(raw, RESOURCE_FIELDS, problems, name, "resources.")
    result = Resources()
    cpus = raw.get("cpus", result.cpus)
    if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or not 0 < cpus <= 64:
        problems.add(name, "resources.cpus", f"{cpus!r} is not a CPU count; use a number such as 0.5 or 2")
        cpus = result.cpus
    memory = parse_memory_mib(raw.get("memory", result.memory_mib))
    if memory is None or memory < 128:
        problems.add(name, "resources.memory", f"{raw.get('memory')!r} is not a memory size of at least 128m; use e.g. 512m or 2g")
        memory = result.memory_mib
    pids = raw.get("pids", result.pids)
    if isinstance(pids, bool) or not isinstance(pids, int) or pids < 32:
        problems.add(name, "resources.pids", f"{pids!r} is not a process limit; use an integer of at least 32")
        pids = result.pids
    disk = raw.get("disk", result.disk_gib)
    if isinstance(disk, bool) or not isinstance(disk, int) or disk < 2:
        problems.add(name, "resources.disk", f"{disk!r} is not a disk size in GiB; use an integer of at least 2")
        disk = result.disk_gib
    return Resources(cpus=float(cpus), memory_mib=memory, pids=pids, disk_gib=disk)
