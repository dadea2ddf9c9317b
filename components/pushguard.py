"""The in-agent guard rail against stepping on others' work: git refuses, inside the agent, a push
to the base branch or to another agent's branch.

Why a system-wide hooks directory: /etc/gitconfig and /usr/local/lib belong to root, so the agent
user cannot drop the hook by accident (a new clone, `rm .git/hooks/*`); what it needs (the agent,
its branch, the base, the guarded branches) sits in the same root-owned config. core.hooksPath
hides every repository's own .git/hooks, so the directory also holds, for each common hook, a
script that runs the repository's own one. Agents' branches are agent/<name> by default: the
whole agent/ namespace is guarded, plus other agents' branches named otherwise, so a fleet that
grows with default names changes no existing agent's document.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from components.gitconfig import Section
from components.spec import BRANCH_PREFIX, AgentSpec, FleetSpec

IMAGES = Path(__file__).resolve().parent.parent / "images"
HOOKS = IMAGES / "agent-files" / "git-hooks"
HOOKS_DIR = "/usr/local/lib/agentfleet/git-hooks"


def repository_hooks() -> tuple[str, ...]:
    """The hooks that run the repository's own one (images/repository-hooks: the agent image links
    them, a VM's cloud-config writes them)."""
    lines = (IMAGES / "repository-hooks").read_text().splitlines()
    return tuple(line for line in lines if line and not line.startswith("#"))


@dataclass(frozen=True)
class PushGuard:
    """What one agent may not push to: `base` (None: the remote's default branch, found in the
    clone) and the `guarded` branch patterns (sh `case` globs), minus its own `branch`."""

    agent: str
    branch: str
    base: Optional[str]
    guarded: tuple[str, ...]

    @classmethod
    def of(cls, agent: AgentSpec, fleet: Optional[FleetSpec]) -> PushGuard:
        others = sorted({other.branch for other in fleet.agents if other.name != agent.name
                         and not other.branch.startswith(BRANCH_PREFIX)}) if fleet else []
        return cls(agent.name, agent.branch, fleet.base.branch if fleet else None, (f"{BRANCH_PREFIX}*", *others))

    def settings(self) -> Section:
        """The `agentfleet` section of /etc/gitconfig the hook reads."""
        base = [("base", self.base)] if self.base else []
        return ("agentfleet", [("agent", self.agent), ("branch", self.branch), *base,
                               *(("guarded", pattern) for pattern in self.guarded)])


def hook_files() -> dict[str, str]:
    """Path -> content of every script in the fleet's hooks directory."""
    chained = (HOOKS / "repository-hook").read_text()
    return {f"{HOOKS_DIR}/pre-push": (HOOKS / "pre-push").read_text(),
            **{f"{HOOKS_DIR}/{name}": chained for name in repository_hooks()}}
