"""`agentfleet exec`'s warning that an agent works on a stale base: one line on stderr when the
agent's HEAD lacks more of the base branch on the remote than the fleet allows (`base.warn_behind`).

Why cheap: it runs after the command, in the same SSH connection, as one short script that reads
refs only, and fetches the base into its remote-tracking ref (as `status` does) only when the
workspace fetched nothing for FETCH_MINUTES: most calls touch no network. After the command,
not beside it: its fetch then never races a `git fetch` or `git pull` the command runs. A check
that fails says nothing: the warning is a hint, the command's own outcome is what counts.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentfleet.connection import Connection
from agentfleet.errors import AgentfleetError
from agentfleet.status import REMOTE, find_base, script_fields

FETCH_MINUTES = 5
LAG_TIMEOUT = 20.0
_FETCH_TIMEOUT = 10  # seconds; a remote that does not answer costs this, once per FETCH_MINUTES

_SCRIPT = r"""export GIT_TRACE2_EVENT=0 LC_ALL=C GIT_TERMINAL_PROMPT=0
git rev-parse -q --verify HEAD >/dev/null 2>&1 || exit 0
{find_base}[ -n "$(find "$(git rev-parse --git-path FETCH_HEAD)" -mmin -{minutes} 2>/dev/null)" ] ||
  timeout {fetch_timeout} git fetch -q {remote} "+refs/heads/$base:refs/remotes/{remote}/$base" >/dev/null 2>&1
printf 'base %s\nbehind %s\n' "$base" "$(git rev-list --count "HEAD..refs/remotes/{remote}/$base" 2>/dev/null)"
"""


def lag_script(base: str | None) -> str:
    """Prints `base NAME` and `behind N` (empty when the base is unknown here); nothing without a commit."""
    return _SCRIPT.format(find_base=find_base(base), minutes=FETCH_MINUTES, fetch_timeout=_FETCH_TIMEOUT,
                          remote=REMOTE)


@dataclass(frozen=True)
class BaseLag:
    agent: str
    base: str
    behind: int
    allowed: int

    def warning(self) -> str:
        commits = "commit" if self.behind == 1 else "commits"
        return (f"agentfleet: {self.agent} is {self.behind} {commits} behind {self.base} on the remote "
                f"(the fleet allows {self.allowed}); rebase or merge {REMOTE}/{self.base}\n")


def parse_lag(agent: str, allowed: int, stdout: str) -> BaseLag | None:
    """The lag lag_script printed, when it is more than allowed."""
    fields = script_fields(stdout)
    behind = fields.get("behind", "")
    if not fields.get("base") or not behind.isdigit() or int(behind) <= allowed:
        return None
    return BaseLag(agent, fields["base"], int(behind), allowed)


def base_warning(connection: Connection) -> str | None:
    """The warning line for this agent, or None: no threshold, not behind that far, or no answer."""
    endpoint = connection.endpoint
    if endpoint.warn_behind is None:
        return None
    try:
        done = connection.run(lag_script(endpoint.base), timeout=LAG_TIMEOUT)
    except AgentfleetError:
        return None
    lag = parse_lag(endpoint.name, endpoint.warn_behind, done.stdout) if done.ok else None
    return None if lag is None else lag.warning()
