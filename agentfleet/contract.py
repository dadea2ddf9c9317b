"""The contract between the Pulumi program and the client, defined once and imported by both.

Why one module: the program writes each agent's endpoint output and lays out the guest; the
client reads those outputs and runs commands in that layout. A field or a path named in two
places drifts apart; here it cannot.
"""

from __future__ import annotations

from typing import NotRequired, Optional, TypedDict

# What an agent's machine can be.
BACKENDS = ("docker", "lima", "multipass", "kubernetes")
# Whether root in an agent's machine is root of its host (AgentOutput.user_namespace):
# "remapped": no, a user namespace maps it to an unprivileged uid of the host (a Docker engine with
# userns-remap, a pod with hostUsers: false); "none": yes, it shares the host's user namespace
# (its capabilities still limit it); "vm": not applicable, the agent has a kernel of its own.
USER_NAMESPACES = ("remapped", "none", "vm")

# The guest's layout, the same on every backend.
LOGIN_USER = "agent"
LOGIN_UID = 1000  # cloud-init/agent.yaml
HOME = f"/home/{LOGIN_USER}"
GIT_CREDENTIALS_PATH = f"{HOME}/.git-credentials"  # an https remote's token, read by `credential.helper store`
WORKSPACE = f"{HOME}/workspace"
TRACE2_DIR = "/var/log/agentfleet/git-trace2"
# What the egress policy refused (cloud-init/agentfleet_denied.py writes it, root's, rotated once).
# A directory of its own: Docker agents mount their policy container's record there read-only.
DENIED_RECORD = "/var/log/agentfleet/egress/denied.jsonl"
EGRESS_RULESET = "/etc/agentfleet/egress.nft"
# The first-boot clone's gate (images/agent-files/first-clone): the Docker driver puts `required` there
# before the machine starts; the script says `waiting`, clones once it finds `admitted` (the remote
# host had a free slot, `forge_connections`), and says `done` when it ends.
CLONE_GATE = "/var/lib/agentfleet-clone-gate"


class AgentIdentity(TypedDict):
    name: str
    email: str


class ForgeGate(TypedDict):
    """How many network git operations against remote host `host` the fleet runs at once: the
    Docker driver's hint (first clones at boot) and each agent's output (the client's commands)."""

    host: str
    connections: int


class AgentOutput(TypedDict):
    """One agent in the stack output `agents`: what the client needs to reach and describe it."""

    backend: str
    host: str
    port: int
    user: str
    known_hosts: str  # the pinned host key line
    identity: AgentIdentity
    remote: Optional[str]
    branch: str
    workspace: Optional[str]
    remote_public_key: Optional[str]  # a generated key to register as a deploy key
    ssh_config: str  # an OpenSSH Host block using the files `agentfleet ssh-config` writes
    base: Optional[str]  # the fleet's base branch; None: the remote's default branch
    warn_behind: Optional[int]  # `exec` warns when the base lags the remote by more; None: never
    forge_gate: Optional[ForgeGate]  # None: no remote
    user_namespace: Optional[str]  # one of USER_NAMESPACES; None: not read back yet


class AppOutput(TypedDict):
    """The GitHub App of the stack output `forge`: its key signs the JWTs that mint agents' tokens."""

    id: int
    installation: int
    private_key: str
    agents: list[str]  # the agents that push with its tokens
    expires: dict[str, float]  # agent -> when the token `pulumi up` wrote into it expires (epoch seconds)


class ForgeOutput(TypedDict):
    """The stack output `forge` (a secret, for its token): where `agentfleet pr` opens pull requests."""

    kind: str
    api: str
    repository: str
    token: str  # "" when the fleet has none (a GitHub App opens its pull requests)
    app: NotRequired[AppOutput]  # a GitHub App: `agentfleet exec` refreshes these agents' tokens with it


# The stack outputs: `agents` (name -> AgentOutput), `agent_private_keys` (a secret) and, with a
# `forge:` in the fleet config, `forge` (a secret).
AGENTS_OUTPUT = "agents"
PRIVATE_KEYS_OUTPUT = "agent_private_keys"
FORGE_OUTPUT = "forge"


def deploy_key_title(stack: str, agent: str) -> str:
    """The title of an agent's deploy key on the forge: `pulumi up` and `deploy-keys` agree on it."""
    return f"agentfleet {stack}/{agent}"


def ssh_config_block(name: str, host: str, port: int, stack: str) -> str:
    """An OpenSSH Host block; key and known_hosts paths are where `agentfleet ssh-config` writes them."""
    directory = f".agentfleet/{stack}"
    return "\n".join([
        f"Host {name}",
        f"  HostName {host}",
        f"  Port {port}",
        f"  User {LOGIN_USER}",
        f"  IdentityFile {directory}/keys/{name}",
        "  IdentitiesOnly yes",
        f"  UserKnownHostsFile {directory}/known_hosts",
        "  StrictHostKeyChecking yes",
    ]) + "\n"
