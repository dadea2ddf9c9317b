"""An agent's workspace and the key its remote must accept: `deploy-keys`, `clone`, and the
doctor's workspace check.

With a generated key (credential: generate) the agent's first-boot clone fails until the key is
registered on the remote, and the workspace stays empty. `deploy-keys` lists what to register;
`clone` then runs the agent's own first-boot script again (cloud-init installed it at
FIRST_CLONE), so the clone is exactly the one the agent would have made at boot: same remote,
branch, shared objects and credentials, and never over existing work.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from agentfleet.contract import deploy_key_title
from agentfleet.endpoint import AgentEndpoint
from agentfleet.result import Result, tail

# Where every agent has its first-boot script, images/agent-files/first-clone: in the agent image,
# in a VM's cloud-config (components/cloudinit.py, which takes the path from here).
FIRST_CLONE = "/usr/local/lib/agentfleet/first-clone"
NEUTRAL_DIR = "/"  # the workspace may not exist yet


def repository_command(workspace: str) -> list[str]:
    """Exit 0 iff the workspace holds a git repository."""
    return ["git", "-C", workspace, "rev-parse", "--git-dir"]


def empty_workspace_hint(agent: AgentEndpoint) -> str:
    """What to do about a workspace without a clone: register the key first if that is the cause."""
    if agent.remote is None:
        return f"run its first-boot setup again: agentfleet clone {agent.name}"
    if agent.remote_public_key is not None:
        return f"register its deploy key on the remote (agentfleet deploy-keys), then: agentfleet clone {agent.name}"
    return f"check that its credential may read {agent.remote}, then: agentfleet clone {agent.name}"


@dataclass(frozen=True)
class DeployKey:
    """One generated key to register, as a forge's deploy-key form or API takes it."""

    agent: str
    remote: str
    title: str
    key: str
    read_only: bool = False  # agents push their branches

    def to_json(self) -> dict[str, object]:
        return {
            "agent": self.agent,
            "remote": self.remote,
            "title": self.title,
            "key": self.key,
            "read_only": self.read_only,
        }


def deploy_keys(agents: Iterable[AgentEndpoint], fleet: str) -> list[DeployKey]:
    """The fleet's generated remote keys; agents with their own key or a token have none."""
    return [
        DeployKey(agent.name, agent.remote, deploy_key_title(fleet, agent.name), agent.remote_public_key)
        for agent in agents
        if agent.remote is not None and agent.remote_public_key is not None
    ]


@dataclass(frozen=True)
class CloneOutcome:
    """What `clone` did in one agent: cloned, present (nothing to do), or failed (with a hint)."""

    agent: str
    state: str
    detail: str
    hint: str = ""

    @property
    def ok(self) -> bool:
        return self.state != "failed"


def judge_clone(agent: AgentEndpoint, run: Result, cloned: bool) -> CloneOutcome:
    """The outcome of running FIRST_CLONE (run), given whether the workspace holds a repository now."""
    if cloned:
        what = agent.remote or "a new repository"
        return CloneOutcome(agent.name, "cloned", f"{what} into {agent.workspace} (branch {agent.branch})")
    said = tail(run.stderr) or tail(run.stdout) or f"exit status {run.exit_status}"
    return CloneOutcome(agent.name, "failed", said, empty_workspace_hint(agent))
