"""Loading a stack's fleet config object (`<project>:fleet`): all at once, so one run reports every problem
(stack, agent, field, what is wrong, what would be right) before any resource exists."""

from __future__ import annotations

import hashlib
import ipaddress
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from agentfleet.contract import BACKENDS
from agentfleet.forge import FORGE_KINDS, GITHUB_API, Forge
from agentfleet.githubapp import GitHubApp, key_problem
from agentfleet.sshkeys import NOT_A_PRIVATE_KEY, host_key_name
from agentfleet.throttle import DEFAULT_FORGE_CONNECTIONS
from components.spec.model import (
    AGENT_FIELDS,
    BASE_FIELDS,
    BRANCH_PREFIX,
    CLONE_FIELDS,
    CLUSTER_FIELDS,
    CREDENTIAL_KINDS,
    DEFAULT_BACKEND,
    DEFAULT_PORT_BASE,
    DEFAULTABLE_FIELDS,
    EGRESS_MODES,
    FLEET_CLUSTER,
    FLEET_FIELDS,
    APP_FIELDS,
    FORGE_FIELDS,
    FORGE_USER_FIELDS,
    GITHUB_KNOWN_HOSTS,
    HOST_FIELDS,
    LOCAL_HOST,
    MAX_POOL_SIZE,
    POOL_FIELDS,
    PORT_RANGE,
    PORT_SPAN,
    PULL_POLICIES,
    RESOURCE_FIELDS,
    SERVICE_TYPES,
    AgentSpec,
    BaseSpec,
    CloneSpec,
    ClusterSpec,
    Credential,
    Destination,
    FleetConfigError,
    FleetSpec,
    ForgeUser,
    GitIdentity,
    HostSpec,
    Remote,
    Resources,
    SharedObjects,
)
from components.spec.values import (
    AGENT_NAME,
    API_URL,
    CLONE_FILTER,
    DOCKER_NAME,
    EMAIL,
    FORGE_LOGIN,
    HOST_NAME,
    K8S_NAME,
    PACKAGE,
    REPOSITORY,
    allow_entry,
    branch_problem,
    identity_problem,
    is_ipv4,
    is_private_key,
    parse_memory_mib,
    parse_remote,
    unwritable,
)

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

def _stable_port(stack: str, name: str, base: int) -> int:
    digest = hashlib.sha256(f"{stack}/{name}".encode()).digest()
    return base + int.from_bytes(digest[:4], "big") % PORT_SPAN


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
        if "clone" in entry and merged.get("remote") is None:
            problems.add(name, "clone", "shapes the first clone of a remote, and this agent has no `remote` (it "
                         "starts an empty repository); add a remote or remove clone")
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
    base = _load_base(raw.get("base"), agents, problems)
    forge = _load_forge(raw.get("forge"), agents, problems, read_secret)
    app = _load_app(raw.get("forge"), agents, problems, read_secret) if forge is not None else None
    connections = _load_forge_connections(raw.get("forge_connections", DEFAULT_FORGE_CONNECTIONS), problems)
    pool_size = _load_pool(raw.get("pool"), hosts, problems)
    _check_forge_users(agents, raw.get("forge") is not None, problems)
    if problems.items:
        raise FleetConfigError(problems.items)
    return FleetSpec(stack=stack, agents=tuple(agents), attach_networks=tuple(networks), shared_objects=shared,
                     hosts=tuple(hosts), port_base=port_base, base=base, forge=forge, app=app,
                     forge_connections=connections, pool_size=pool_size)


def _load_pool(raw: Any, hosts: list[HostSpec], problems: _Problems) -> int:
    """`pool: {size: N}`: N booted Docker agents without identity kept on each Docker host."""
    if raw is None:
        return 0
    if not isinstance(raw, Mapping):
        problems.add(None, "pool", f"{raw!r} is not a mapping; use `pool: {{size: 4}}`")
        return 0
    _check_unknown(raw, POOL_FIELDS, problems, None, "pool.")
    size = raw.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_POOL_SIZE:
        problems.add(None, "pool.size", f"{size!r} is not a pool size; use an integer from 0 to {MAX_POOL_SIZE} "
                     "(booted agents kept on each Docker host)")
        return 0
    if size and not any(host.backend == "docker" for host in hosts):
        problems.add(None, "pool", "the fleet has no Docker host to keep a pool on")
    return size


def _load_forge_connections(raw: Any, problems: _Problems) -> int:
    """`forge_connections: N`, the network git operations at once per remote host (at least 1)."""
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        problems.add(None, "forge_connections", f"{raw!r} is not a number of connections; use an integer of at "
                     f"least 1 (network git operations at once per remote host), or leave it out for "
                     f"{DEFAULT_FORGE_CONNECTIONS}")
        return DEFAULT_FORGE_CONNECTIONS
    return raw


def _load_base(raw: Any, agents: list[AgentSpec], problems: _Problems) -> BaseSpec:
    """`base: main`, or `base: {branch: main, warn_behind: 20}` (warn_behind false: never warn).
    The base is nobody's own branch: the agents' guard refuses pushes to it."""
    if raw is None:
        return BaseSpec()
    fields = {"branch": raw} if isinstance(raw, str) else raw
    if not isinstance(fields, Mapping):
        problems.add(None, "base", f"{raw!r} is not a branch or a mapping; use `base: main` or "
                     "`base: {branch: main, warn_behind: 20}`")
        return BaseSpec()
    _check_unknown(fields, BASE_FIELDS, problems, None, "base.")
    branch = fields.get("branch")
    if branch is not None:
        problem = branch_problem(branch) if isinstance(branch, str) else "is not text"
        owner = next((agent.name for agent in agents if agent.branch == branch), None)
        if problem:
            problems.add(None, "base.branch", f"{branch!r} {problem}; use a branch name such as main, or leave "
                         "it out for the remote's default branch")
        elif owner:
            problems.add(None, "base.branch", f"{branch!r} is the own branch of agent {owner!r}; the base is "
                         "the branch every agent's work merges into")
    warn = fields.get("warn_behind", BaseSpec.warn_behind)
    if warn is False:
        warn = None
    elif isinstance(warn, bool) or not isinstance(warn, int) or warn < 0:
        problems.add(None, "base.warn_behind", f"{warn!r} is not a number of commits; use an integer of at "
                     "least 0, or false to never warn")
        warn = BaseSpec.warn_behind
    return BaseSpec(branch, warn)


def _load_forge(raw: Any, agents: list[AgentSpec], problems: _Problems, read_secret: SecretReader) -> Optional[Forge]:
    """`forge: {kind: github|gitea, api: URL, repository: owner/name, token: <config key>}`: where the
    agents' generated keys are registered as deploy keys and pull requests are opened. Every agent
    whose key is registered must have its remote on that repository."""
    if raw is None:
        return None
    example = "`forge: {kind: github, repository: owner/name, token: <config key>}`"
    if not isinstance(raw, Mapping):
        problems.add(None, "forge", f"must be a mapping: {example}")
        return None
    before = len(problems.items)
    _check_unknown(raw, FORGE_FIELDS, problems, None, "forge.")
    kind = raw.get("kind")
    if kind not in FORGE_KINDS:
        problems.add(None, "forge.kind", f"{kind!r} is not a forge this fleet can drive; use one of {', '.join(FORGE_KINDS)}")
    api = raw.get("api", GITHUB_API if kind == "github" else None)
    if not isinstance(api, str) or not API_URL.fullmatch(api) or unwritable(api):
        problems.add(None, "forge.api", f"{api!r} is not the forge's API address; use e.g. {GITHUB_API} (GitHub, "
                     "the default) or http://HOST:3000/api/v1 (Gitea)")
    repository = raw.get("repository")
    if not isinstance(repository, str) or not REPOSITORY.fullmatch(repository):
        problems.add(None, "forge.repository", f"{repository!r} is not a repository; use owner/name")
    # With a GitHub App and no deploy key to register, the App's tokens do all: no API token needed.
    deploy_keys = [agent.name for agent in agents if agent.generates_remote_key and agent.forge_user is None]
    token = None
    if raw.get("token") is not None or raw.get("app") is None:
        token = _load_token(raw.get("token"), None, "forge.token", "forge_token", problems, read_secret)
    elif deploy_keys:
        problems.add(None, "forge.token", f"agents {', '.join(deploy_keys)} have generated keys to register as deploy "
                     "keys, which needs the forge's API token (a GitHub App's installation token cannot): "
                     "`pulumi config set --secret forge_token` and `token: forge_token`, or give them https remotes")
    if len(problems.items) > before:
        return None
    for agent in agents:
        remote = agent.remote
        minted = raw.get("app") is not None and agent.credential.kind == "generate" and remote is not None
        if (agent.generates_remote_key or minted) and remote is not None and remote.path.lower() != repository.lower():
            what = "deploy key is registered" if agent.generates_remote_key else "App token is minted for"
            problems.add(agent.name, "remote", f"is the repository {remote.path!r}, but forge.repository is "
                         f"{repository!r}, where the agent's {what}; point the remote there")
    return Forge(kind=kind, api=api.rstrip("/"), repository=repository, token=token or "")


def _load_app(forge: Mapping[str, Any], agents: list[AgentSpec], problems: _Problems,
              read_secret: SecretReader) -> Optional[GitHubApp]:
    """`forge.app: {id: N, installation: M, private_key: <config key>}`: the GitHub App whose
    installation tokens agents with an https remote push with (docs/forge.md, "GitHub App tokens")."""
    raw = forge.get("app")
    if raw is None:
        return None
    example = "`app: {id: 123456, installation: 7654321, private_key: github_app_key}`"
    if forge.get("kind") != "github":
        problems.add(None, "forge.app", "only GitHub has Apps; remove forge.app or use kind github")
        return None
    if not isinstance(raw, Mapping):
        problems.add(None, "forge.app", f"must be a mapping: {example}")
        return None
    before = len(problems.items)
    _check_unknown(raw, APP_FIELDS, problems, None, "forge.app.")
    numbers = {}
    for name, where in (("id", "the App's settings page, App ID"),
                        ("installation", "the number ending the installation's settings URL")):
        value = raw.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            problems.add(None, f"forge.app.{name}", f"{value!r} is not a positive number; use {where}")
        numbers[name] = value
    key = raw.get("private_key")
    pem = read_secret(key) if isinstance(key, str) and key else None
    if not isinstance(key, str) or not key:
        problems.add(None, "forge.app.private_key", f"must name the config key of the App's private key (a secret): "
                     f"`pulumi config set --secret github_app_key < app.pem`, then {example}")
    elif not pem:
        problems.add(None, "forge.app.private_key", f"config key {key} is not set; run "
                     f"`pulumi config set --secret {key} < app.pem`")
    elif key_problem(pem):
        problems.add(None, "forge.app.private_key", f"config key {key} {key_problem(pem)}")
    if not any(agent.credential.kind == "generate" and agent.remote and agent.remote.scheme == "https"
               for agent in agents):
        problems.add(None, "forge.app", "no agent has an https remote whose credential the fleet makes, so no "
                     "agent would push with the App's tokens; give agents `remote: https://github.com/owner/name.git`")
    if len(problems.items) > before or pem is None:
        return None
    return GitHubApp(numbers["id"], numbers["installation"], key, pem)


def _load_token(key: Any, agent: Optional[str], field_name: str, example: str, problems: _Problems,
                read_secret: SecretReader) -> Optional[str]:
    """The API token a `token:` field names by its config key (a secret), or None with the problem."""
    if not isinstance(key, str) or not key:
        problems.add(agent, field_name, "must name the config key of the forge's API token (a secret): "
                     f"`pulumi config set --secret {example}` and `token: {example}`")
        return None
    token = read_secret(key)
    if not token:
        problems.add(agent, field_name, f"config key {key} is not set; run `pulumi config set --secret {key}` "
                     "and paste the token on its standard input")
    elif token.strip() != token or any(char.isspace() for char in token):
        problems.add(agent, field_name, f"config key {key} holds whitespace; set the token alone")
    else:
        return token
    return None


def _load_forge_user(raw: Any, name: str, problems: _Problems, read_secret: SecretReader) -> Optional[ForgeUser]:
    """`forge_user: {name: <forge user>, token: <config key of that user's API token>}`."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        problems.add(name, "forge_user", f"{raw!r} is not a mapping; name the user and the config key of its "
                     "token: `forge_user: {name: bot-agent-1, token: bot_agent_1_token}`")
        return None
    before = len(problems.items)
    _check_unknown(raw, FORGE_USER_FIELDS, problems, name, "forge_user.")
    login = raw.get("name")
    if not isinstance(login, str) or not FORGE_LOGIN.fullmatch(login):
        problems.add(name, "forge_user.name", f"{login!r} is not a user name on a forge; use the machine "
                     "account's login, e.g. bot-agent-1")
    token = _load_token(raw.get("token"), name, "forge_user.token", "bot_agent_1_token", problems, read_secret)
    if len(problems.items) > before or token is None:
        return None
    return ForgeUser(login, raw["token"], token)


def _check_forge_users(agents: list[AgentSpec], has_forge: bool, problems: _Problems) -> None:
    """A forge user is who the agent's generated key is registered for: that needs both."""
    for agent in agents:
        if agent.forge_user is None:
            continue
        if not has_forge:
            problems.add(agent.name, "forge_user", "needs the fleet's `forge:` (the forge the user is on); add "
                         "`forge: {kind: gitea, api: ..., repository: owner/name, token: forge_token}`")
        elif not agent.generates_remote_key:
            problems.add(agent.name, "forge_user", "only an agent whose key the fleet generates for an ssh remote "
                         "pushes as a forge user (its key becomes the user's); remove `credential` or forge_user")


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
    elif service_type == "NodePort" and (not isinstance(node_address, str) or not is_ipv4(node_address)):
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
    from components.backends.docker.engines import SshTarget

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
        if not isinstance(endpoint, str) or not is_ipv4(endpoint) or endpoint == "0.0.0.0":
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
    if bind_address is not None and (not isinstance(bind_address, str) or not is_ipv4(bind_address)):
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

    branch = raw.get("branch", f"{BRANCH_PREFIX}{name}")
    problem = branch_problem(branch) if isinstance(branch, str) else "is not text"
    if problem:
        problems.add(name, "branch", f"{branch!r} {problem}; use a name such as {BRANCH_PREFIX}{name}")

    egress = raw.get("egress", "restricted")
    if egress not in EGRESS_MODES:
        problems.add(name, "egress", f"{egress!r} is not an egress mode; use restricted (default: only the remote and `allow` entries) or open")
    allow = _load_allow(raw.get("allow") or [], name, problems)
    dns = _load_dns(raw.get("dns") or [], name, problems)

    host = raw.get("host")
    if host is not None and not isinstance(host, str):
        problems.add(name, "host", f"{host!r} is not a host name; use `local` or a name under `hosts:`")
    forge_user = _load_forge_user(raw.get("forge_user"), name, problems, read_secret)
    clone = _load_clone(raw.get("clone"), name, problems)

    if len(problems.items) > before or identity is None or credential is None:
        return None
    return AgentSpec(
        name=name, backend=backend, identity=identity, remote=remote, branch=branch,
        credential=credential, known_hosts=tuple(known_hosts_raw), resources=resources,
        ssh_port=port, preferred_port=preferred_port, bind_address=bind_address, image=image,
        retain_workspace=retain, packages=tuple(packages), egress=egress, allow=allow, dns=dns, host=host,
        forge_user=forge_user,
        clone=clone,
    )


def _load_clone(raw: Any, name: str, problems: _Problems) -> CloneSpec:
    """`clone: {depth: N, filter: blob:none}`, either or both; an agent's `clone` replaces the
    default's as a whole (`clone: {}`: a full clone)."""
    if raw is None:
        return CloneSpec()
    if not isinstance(raw, Mapping):
        problems.add(name, "clone", f"{raw!r} is not a mapping; use e.g. `clone: {{depth: 1}}` (a shallow "
                     "clone), `clone: {filter: blob:none}` (a partial clone) or both")
        return CloneSpec()
    _check_unknown(raw, CLONE_FIELDS, problems, name, "clone.")
    depth = raw.get("depth")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        problems.add(name, "clone.depth", f"{depth!r} is not a number of commits; use an integer of at least 1, "
                     "or leave it out for all history")
        depth = None
    spec_filter = raw.get("filter")
    if spec_filter is not None and not (isinstance(spec_filter, str) and CLONE_FILTER.fullmatch(spec_filter)):
        problems.add(name, "clone.filter", f"{spec_filter!r} is not a filter a workspace works with; use blob:none "
                     "(file contents fetched when checked out) or blob:limit=<size> such as blob:limit=1m")
        spec_filter = None
    return CloneSpec(depth=depth, filter=spec_filter)


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


def _load_allow(raw: Any, name: str, problems: _Problems) -> tuple[Destination, ...]:
    hint = ("write host:port[/tcp|/udp] with a name, *.name, an address or a range, e.g. pypi.org:443, "
            "*.githubusercontent.com:443, 10.0.0.5:22, 10.0.0.0/24:22/udp or [2001:db8::/32]:443")
    if not isinstance(raw, list):
        problems.add(name, "allow", f"must be a list of entries; {hint}")
        return ()
    allow = []
    for index, entry in enumerate(raw):
        try:
            if not isinstance(entry, str):
                raise ValueError("is not host:port")
            allow.append(allow_entry(entry))
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
    if kind == "ssh_key" and not is_private_key(secret):
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
