"""`agentfleet exec`'s side of GitHub App tokens: before a command runs in an agent that pushes
with App tokens, the agent's token is minted again when fewer than REFRESH_MARGIN are left.

Why here: exec is how the operator (and the tools driving agents) run git in agents, so refreshing
before each command makes a push through agentfleet never meet an expired token, without a
daemon or a key in the agent. The App's key comes from the stack output `forge` (a secret, read
with the other secrets); the new token goes to the agent's ~/.git-credentials on the command's
standard input, never its command line. What is kept on this machine is only each token's expiry
(`app-tokens.json` in the stack's directory), so the next exec knows without asking anyone.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol

from agentfleet.contract import FORGE_OUTPUT, GIT_CREDENTIALS_PATH, HOME
from agentfleet.forge import Forge
from agentfleet.githubapp import Clock, GitHubApp, mint, token_due

RECORD = "app-tokens.json"
_NEW = f"{GIT_CREDENTIALS_PATH}.new"
# Written whole, then moved over the old file: a concurrent git reads the old token or the new one.
WRITE_CREDENTIAL = f"umask 077 && cat > {shlex.quote(_NEW)} && mv -f {shlex.quote(_NEW)} {shlex.quote(GIT_CREDENTIALS_PATH)}"


class Runs(Protocol):
    name: str

    def run(self, command: str, *, cwd: Optional[str] = None, stdin: Optional[bytes] = None) -> Any: ...


@dataclass
class TokenRefresh:
    """Refreshes the tokens of `agents`, keeping their expiry in `record` (None: only in memory)."""

    forge: Forge
    app: GitHubApp
    agents: frozenset[str]
    record: Optional[Path] = None
    clock: Clock = time.time
    _expiry: dict[str, float] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.record is not None and self.record.is_file():
            try:
                self._expiry = {k: float(v) for k, v in json.loads(self.record.read_text()).items()}
            except (ValueError, AttributeError):
                self._expiry = {}  # a damaged record: every token is minted again, once

    def before(self, connection: Runs) -> bool:
        """Mints the agent a fresh token when its own is due; whether it did."""
        name = connection.name
        now = self.clock()
        if name not in self.agents or not token_due(self._expiry.get(name), now):
            return False
        token = mint(self.app, self.forge, now)
        line = f"https://x-access-token:{token.token}@{_host(connection)}\n"
        result = connection.run(WRITE_CREDENTIAL, cwd=HOME, stdin=line.encode())
        if getattr(result, "exit_status", 0) != 0:
            return False  # the command that follows reports the agent's trouble
        self._expiry[name] = token.expires_at
        if self.record is not None:
            self.record.parent.mkdir(parents=True, exist_ok=True)
            self.record.write_text(json.dumps(self._expiry, indent=1) + "\n")
        return True


def _host(connection: Runs) -> str:
    """The host of the agent's https remote (github.com, or a GitHub Enterprise host)."""
    remote = getattr(getattr(connection, "endpoint", None), "remote", None) or "https://github.com/"
    return remote.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]


def refresh_from_outputs(raw: object, directory: Optional[Path]) -> Optional[TokenRefresh]:
    """The refresh the stack's outputs call for (output `forge` with an `app`), or None."""
    forge = raw.get(FORGE_OUTPUT) if isinstance(raw, dict) else None
    app = forge.get("app") if isinstance(forge, dict) else None
    if not isinstance(app, dict):
        return None
    return TokenRefresh(Forge("github", forge["api"], forge["repository"], forge["token"]),
                        GitHubApp(int(app["id"]), int(app["installation"]), "forge.app.private_key",
                                  app["private_key"]),
                        frozenset(app["agents"]), None if directory is None else directory / RECORD)
