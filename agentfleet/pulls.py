"""`agentfleet pr`: each agent's pull request from its branch to the repository's base branch.

Why ask the forge and not the agent: the pull request is about what the forge has (the pushed
branch), so an agent need not be up to open one. An open pull request from the branch is shown,
never opened twice; a branch the forge does not have, or one with nothing to merge, is skipped
with what to do. A fleet with a GitHub App opens them with an installation token minted for that
alone (pull requests: write; the App's key from the stack output `forge`, as `exec` reads it),
revoked when `pr` is done: no personal token needed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Optional

from agentfleet.apptokens import app_from_output
from agentfleet.contract import FORGE_OUTPUT
from agentfleet.errors import OutputsInvalid, UsageError
from agentfleet.forge import FORGE_KINDS, Forge, ForgeClient, ForgeError, PullRequest
from agentfleet.githubapp import PULL_PERMISSIONS, GitHubApp, mint, revoke
from agentfleet.outputs import HIDDEN_SECRET


@dataclass(frozen=True)
class PullOutcome:
    """What `pr` did for one agent: "opened", "existing" or "skipped" (then `reason` says why)."""

    agent: str
    branch: str
    base: str
    action: str
    pull: Optional[PullRequest] = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.pull is not None

    def to_json(self) -> dict[str, Any]:
        pull = self.pull
        return {"agent": self.agent, "branch": self.branch, "base": self.base, "action": self.action,
                "number": pull.number if pull else None, "url": pull.url if pull else None,
                "title": pull.title if pull else None, "reason": self.reason or None}

    def line(self) -> str:
        if self.pull is None:
            return f"{self.agent}: skipped: {self.reason}\n"
        said = "opened" if self.action == "opened" else "open"
        return f"{self.agent}: {said} #{self.pull.number} {self.pull.url} ({self.branch} -> {self.base})\n"


def forge_from_outputs(raw: object, source: str) -> tuple[Forge, Optional[GitHubApp]]:
    """The stack's forge (output `forge`) and its GitHub App if it has one, or an error saying how
    to get them. Without an App the forge's token is required."""
    data = raw.get(FORGE_OUTPUT) if isinstance(raw, Mapping) else None
    if data is None:
        raise UsageError(f"{source} has no forge: add `forge:` to its fleet config (docs/forge.md) and run `pulumi up`")
    if data == HIDDEN_SECRET:
        raise OutputsInvalid(source, [f"'{FORGE_OUTPUT}' is hidden ({HIDDEN_SECRET}); read the outputs with --show-secrets"])
    app = app_from_output(data) if isinstance(data, Mapping) else None
    fields = ("kind", "api", "repository") if app is not None else ("kind", "api", "repository", "token")
    if not isinstance(data, Mapping) or not all(isinstance(data.get(key), str) and data[key] for key in fields) \
            or data["kind"] not in FORGE_KINDS:
        raise OutputsInvalid(source, [f"'{FORGE_OUTPUT}' must hold {', '.join(fields)} (kind one of {FORGE_KINDS})"])
    return Forge(data["kind"], data["api"], data["repository"], data.get("token") or ""), app


@contextmanager
def pull_client(raw: object, source: str) -> Iterator[ForgeClient]:
    """The client `pr` asks the forge with: with a GitHub App, an installation token that may open
    pull requests and nothing else (revoked on the way out); without, the fleet's `forge.token`."""
    forge, app = forge_from_outputs(raw, source)
    if app is None:
        yield ForgeClient(forge)
        return
    token = mint(app, forge, permissions=PULL_PERMISSIONS)
    try:
        yield ForgeClient(replace(forge, token=token.token), token_field="forge.app")
    finally:
        revoke(forge, token.token)


def default_title(fleet: str, agent: str, branch: str) -> str:
    return f"agentfleet {fleet}/{agent}: {branch}"


def open_pull(client: ForgeClient, fleet: str, agent: str, branch: str, base: str, title: Optional[str],
              existing: list[PullRequest]) -> PullOutcome:
    """The agent's open pull request into `base` (from `existing`), else a new one if the forge has
    the branch and something to merge."""
    found = next((pull for pull in existing if pull.head == branch and pull.base == base), None)
    if found is not None:
        return PullOutcome(agent, branch, base, "existing", found)
    if branch == base:
        return PullOutcome(agent, branch, base, "skipped", reason=f"its branch is the base branch {base}")
    if not client.branch_exists(branch):
        return PullOutcome(agent, branch, base, "skipped", reason=(
            f"the forge has no branch {branch}; push it first: agentfleet exec {agent} -- git push -u origin {branch}"))
    body = f"The work of agent {agent} of fleet {fleet}, opened by `agentfleet pr`."
    try:
        pull = client.create_pull(branch, base, title or default_title(fleet, agent, branch), body)
    except ForgeError as error:
        if error.status != 422:  # 422: nothing to merge (no commits ahead of the base), as both forges say
            raise
        return PullOutcome(agent, branch, base, "skipped", reason=f"nothing to merge into {base} ({error})")
    return PullOutcome(agent, branch, base, "opened", pull)
