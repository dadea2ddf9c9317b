"""The exceptions agentfleet raises: one root, one subclass per thing a person can act on.

Every message names what failed and what to do next, because the CLI prints it as the
only line a user sees.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


class AgentfleetError(Exception):
    """Root of every expected failure; library errors (paramiko, socket) become one of these."""


class UsageError(AgentfleetError):
    """The options or environment contradict each other or name nothing usable."""


class PulumiError(AgentfleetError):
    """`pulumi stack output` could not be run or failed."""


class StackNotFound(PulumiError):
    """No Pulumi project or no stack of that name, so there are no outputs to read."""


class OutputsInvalid(AgentfleetError):
    """The outputs do not follow the contract (missing or ill-typed fields)."""

    def __init__(self, source: str, problems: Iterable[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        super().__init__(
            f"outputs of {source} are invalid: {'; '.join(self.problems)} (run `pulumi up` to refresh them)"
        )


class UnknownAgent(AgentfleetError):
    """The name is not an agent of this fleet."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = tuple(known)
        listed = ", ".join(self.known) or "none"
        super().__init__(f"no agent named {name!r}; known agents: {listed}")


class Unreachable(AgentfleetError):
    """The agent's SSH endpoint does not answer, or the connection broke."""

    def __init__(self, agent: str, endpoint: str, reason: str) -> None:
        self.agent = agent
        self.endpoint = endpoint
        self.reason = reason
        super().__init__(
            f"{agent}: cannot reach {endpoint} ({reason}); is the agent up? "
            f"Run `agentfleet doctor {agent}`, or `pulumi up`: it starts a stopped machine and re-creates a deleted one"
        )


class HostKeyMismatch(AgentfleetError):
    """The endpoint offered a host key other than the one pinned in the outputs."""

    def __init__(self, agent: str, endpoint: str, offered: str, pinned: str) -> None:
        self.agent = agent
        self.endpoint = endpoint
        super().__init__(
            f"{agent}: the host key of {endpoint} changed: it offers {offered}, the outputs "
            f"pin {pinned}; refused. An agent keeps its pinned key for life, also when `pulumi up` "
            "rebuilds it, so something else answers there: do not connect; find what holds the "
            "port, free it, and run `pulumi up`"
        )


class AuthenticationFailed(AgentfleetError):
    """The endpoint answered but refused the operator key."""

    def __init__(self, agent: str, endpoint: str, user: str) -> None:
        self.agent = agent
        self.endpoint = endpoint
        super().__init__(
            f"{agent}: {endpoint} refused the operator key for user {user!r}: the agent no longer "
            "authorizes the key in the outputs (its ~/.ssh/authorized_keys changed?). Rebuild it with "
            "`pulumi up --replace URN` (its container or VM; `pulumi stack --show-urns` lists them), "
            f"then `agentfleet doctor {agent}`"
        )


class CommandTimeout(AgentfleetError):
    """A remote command ran longer than its timeout; carries what it printed so far."""

    def __init__(self, agent: str, command: str, timeout: float, output_tail: str) -> None:
        self.agent = agent
        self.command = command
        self.timeout = timeout
        self.output_tail = output_tail
        tail = f"; last output: {output_tail}" if output_tail else ""
        super().__init__(f"{agent}: `{command}` timed out after {timeout:g} s{tail}")


class AuditLogError(AgentfleetError):
    """The operator's audit log cannot be opened, appended to or read."""

    def __init__(self, path: Path, message: str) -> None:
        self.path = path
        super().__init__(message)


class LocalGitFailed(AgentfleetError):
    """git on the operator's machine, which `overlaps` merges with, failed or is missing."""

    def __init__(self, command: str, said: str) -> None:
        super().__init__(
            f"`{command}` failed on this machine: {said}; `overlaps` needs git 2.38 or later "
            "(merge-tree --write-tree) on PATH"
        )
