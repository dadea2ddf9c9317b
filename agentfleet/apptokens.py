"""`agentfleet exec`'s side of GitHub App tokens: before a command runs in an agent that pushes
with App tokens, the agent's token is minted again when fewer than REFRESH_MARGIN are left.

Why here: exec is how the operator (and the tools driving agents) run git in agents, so refreshing
before each command makes a push through agentfleet never meet an expired token, without a
daemon or a key in the agent. The App's key comes from the stack output `forge` (a secret, read
with the other secrets); the new token goes to the agent's ~/.git-credentials on the command's
standard input, never its command line. What is kept on this machine is only each token's expiry
(`app-tokens.json` in the stack's directory), so the next exec knows without asking anyone.

Which token the agent holds: the one exec wrote last, unless a `pulumi up` wrote its own since.
`up` writes the token of the agent's `AppToken` resource whenever it applies the agent's
cloud-config (at create, and again on any change to it), and the stack output `forge` carries that
token's expiry (`app.expires`). Every `up` reads a token with less than REFRESH_MARGIN left as gone
and mints a new one (a new expiry) before it writes anything; so exec, which mints only when the
agent's token is due, records the expiry of up's token it minted over: while the outputs still say
that expiry, no `up` has written since (it would have minted first), and exec's own token is the
agent's; once they say another, up's token is.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Mapping
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


@dataclass(frozen=True)
class Minted:
    """A token exec wrote into an agent: when it expires, and the expiry of the token `up` had
    written (the outputs' `app.expires`; None: unknown) when exec minted it."""

    expires_at: float
    over: Optional[float]


@dataclass
class TokenRefresh:
    """Refreshes the tokens of `agents`, keeping their expiry in `record` (None: only in memory).
    `upped`: the expiry of each agent's token as `pulumi up` last wrote it (the outputs)."""

    forge: Forge
    app: GitHubApp
    agents: frozenset[str]
    record: Optional[Path] = None
    clock: Clock = time.time
    upped: Mapping[str, float] = field(default_factory=dict)
    _minted: dict[str, Minted] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.record is not None and self.record.is_file():
            try:
                self._minted = {name: Minted(float(entry["expires_at"]), _number(entry.get("over")))
                                for name, entry in json.loads(self.record.read_text()).items()}
            except (ValueError, AttributeError, TypeError, KeyError):
                self._minted = {}  # a damaged (or older) record: the outputs' expiry holds

    def expiry(self, name: str) -> Optional[float]:
        """When the token the agent holds expires (None: unknown): exec's, unless an `up` wrote
        its own since (the outputs name another expiry than the one exec minted over)."""
        upped = self.upped.get(name)
        minted = self._minted.get(name)
        return minted.expires_at if minted is not None and minted.over == upped else upped

    def before(self, connection: Runs) -> bool:
        """Mints the agent a fresh token when its own is due; whether it did."""
        name = connection.name
        now = self.clock()
        if name not in self.agents or not token_due(self.expiry(name), now):
            return False
        token = mint(self.app, self.forge, now)
        line = f"https://x-access-token:{token.token}@{_host(connection)}\n"
        result = connection.run(WRITE_CREDENTIAL, cwd=HOME, stdin=line.encode())
        if getattr(result, "exit_status", 0) != 0:
            return False  # the command that follows reports the agent's trouble
        self._minted[name] = Minted(token.expires_at, self.upped.get(name))
        if self.record is not None:
            self.record.parent.mkdir(parents=True, exist_ok=True)
            entries = {agent: {"expires_at": m.expires_at, "over": m.over} for agent, m in self._minted.items()}
            self.record.write_text(json.dumps(entries, indent=1) + "\n")
        return True


def _number(value: object) -> Optional[float]:
    if value is not None and not isinstance(value, (int, float)):
        raise ValueError(f"{value!r} is not an expiry")
    return None if value is None else float(value)


def _host(connection: Runs) -> str:
    """The host of the agent's https remote (github.com, or a GitHub Enterprise host)."""
    remote = getattr(getattr(connection, "endpoint", None), "remote", None) or "https://github.com/"
    return remote.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]


def app_from_output(forge: Mapping[str, Any]) -> Optional[GitHubApp]:
    """The GitHub App of the stack output `forge` (its `app`), or None."""
    app = forge.get("app")
    if not isinstance(app, Mapping):
        return None
    # The outputs do not say which config key held the key: a refusal's hint names the field instead.
    return GitHubApp(int(app["id"]), int(app["installation"]), "<the config key forge.app.private_key names>",
                     app["private_key"])


def refresh_from_outputs(raw: object, directory: Optional[Path]) -> Optional[TokenRefresh]:
    """The refresh the stack's outputs call for (output `forge` with an `app`), or None."""
    forge = raw.get(FORGE_OUTPUT) if isinstance(raw, Mapping) else None
    app = app_from_output(forge) if isinstance(forge, Mapping) else None
    if app is None:
        return None
    assert isinstance(forge, Mapping)
    expires = forge["app"].get("expires") or {}  # outputs of an `up` before agentfleet exported it: none
    return TokenRefresh(Forge("github", forge["api"], forge["repository"], forge.get("token") or ""), app,
                        frozenset(forge["app"]["agents"]), None if directory is None else directory / RECORD,
                        upped={name: float(value) for name, value in expires.items() if value is not None})
