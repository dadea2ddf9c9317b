"""Where one agent's work stands in git: one shell script run over SSH, its output parsed here.

The script and its parser are two pure functions (tested from recorded outputs); the script
prints `key value` lines, so a missing value is an empty one, never a shifted column. It runs
its own git with GIT_TRACE2_EVENT=0: the agent's git trace then shows the agent's activity,
not the operator's looks at it (the operator's log records the script itself). It touches no
branch, index or worktree: `git status` runs with --no-optional-locks, and the only write is
`git fetch` of the base branch into its remote-tracking ref, so ahead/behind count against the
remote as it is now.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import UTC, datetime

from agentfleet.contract import TRACE2_DIR
from agentfleet.errors import AgentfleetError
from agentfleet.result import Result, tail

REMOTE = "origin"
DEFAULT_BASE = "main"  # when the remote names no default branch
NO_REPOSITORY = 3  # what the script exits with when the workspace holds no git repository
STATUS_TIMEOUT = 120.0

# Sets $base: the fleet's base branch (`base` in its config), else the remote's default as the
# clone recorded it, else as the remote says now.
_FIND_BASE = r"""base={base}
[ -n "$base" ] || {{ base=$(git symbolic-ref -q --short refs/remotes/{remote}/HEAD) && base=${{base#{remote}/}}; }}
[ -n "$base" ] || base=$(git ls-remote --symref {remote} HEAD 2>/dev/null | awk '$1 == "ref:" && $3 == "HEAD" {{sub("^refs/heads/", "", $2); print $2}}')
base=${{base:-{default}}}
"""

_SCRIPT = r"""activity=$(find {trace} -maxdepth 1 -type f -printf '%T@\n' 2>/dev/null | sort -n | tail -n 1)
export GIT_TRACE2_EVENT=0 LC_ALL=C GIT_TERMINAL_PROMPT=0
printf 'activity %s\n' "$activity"
git rev-parse --git-dir >/dev/null 2>&1 || exit {no_repository}
printf 'branch %s\n' "$(git symbolic-ref -q --short HEAD)"
printf 'head %s\n' "$(git rev-parse -q --verify HEAD)"
printf 'committed %s\n' "$(git log -1 --format=%cI 2>/dev/null)"
printf 'uncommitted %s\n' "$(git --no-optional-locks status --porcelain | wc -l)"
{find_base}printf 'base %s\n' "$base"
fetched=$(git fetch -q {remote} "+refs/heads/$base:refs/remotes/{remote}/$base" 2>&1 | sed -n 1p)
printf 'fetch_error %s\n' "$fetched"
base_commit=$(git rev-parse -q --verify "refs/remotes/{remote}/$base^{{commit}}")
printf 'base_commit %s\n' "$base_commit"
if [ -n "$base_commit" ]; then
  printf 'behind_ahead %s\n' "$(git rev-list --left-right --count "$base_commit...HEAD" 2>/dev/null)"
fi
"""


def status_script(base: str | None = None, trace_dir: str = TRACE2_DIR) -> str:
    """The shell script whose output parse_status reads; run in the agent's workspace. base:
    the fleet's base branch, None for the remote's default."""
    return _SCRIPT.format(
        find_base=find_base(base),
        trace=shlex.quote(trace_dir),
        no_repository=NO_REPOSITORY,
        remote=REMOTE,
    )


def find_base(base: str | None) -> str:
    """Shell lines that set $base to the branch work is compared with (see _FIND_BASE)."""
    return _FIND_BASE.format(base=shlex.quote(base or ""), remote=REMOTE, default=DEFAULT_BASE)


@dataclass(frozen=True)
class AgentStatus:
    """One agent as git sees it. error says why the rest is missing (unreachable, no repository);
    fetch_error why ahead/behind may count against a stale base. None means unknown."""

    name: str
    backend: str
    reachable: bool
    error: str | None = None
    branch: str | None = None
    head: str | None = None
    base: str | None = None
    base_commit: str | None = None
    ahead: int | None = None
    behind: int | None = None
    uncommitted: int | None = None
    last_commit: datetime | None = None
    last_git_activity: datetime | None = None
    fetch_error: str | None = None

    def to_json(self) -> dict[str, object]:
        def moment(value: datetime | None) -> str | None:
            return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")

        return {
            "name": self.name,
            "backend": self.backend,
            "reachable": self.reachable,
            "error": self.error,
            "branch": self.branch,
            "head": self.head,
            "base": self.base,
            "base_commit": self.base_commit,
            "ahead": self.ahead,
            "behind": self.behind,
            "uncommitted": self.uncommitted,
            "last_commit": moment(self.last_commit),
            "last_git_activity": moment(self.last_git_activity),
            "fetch_error": self.fetch_error,
        }


def script_fields(stdout: str) -> dict[str, str]:
    """The `key value` lines a script printed; a key printed with no value maps to ''."""
    fields = {}
    for line in stdout.splitlines():
        key, _, value = line.partition(" ")
        if key:
            fields[key] = value.strip()
    return fields


def parse_status(name: str, backend: str, result: Result) -> AgentStatus:
    """The status status_script printed; a failed script is the agent's error, not an exception."""
    fields = script_fields(result.stdout)
    activity = _activity(fields.get("activity", ""))
    if result.exit_status == NO_REPOSITORY:
        return AgentStatus(name, backend, True, "no git repository in the workspace (run `agentfleet clone`)",
                           last_git_activity=activity)
    if not result.ok:
        said = tail(result.stderr) or f"exit status {result.exit_status}"
        return AgentStatus(name, backend, True, f"the status script failed: {said}", last_git_activity=activity)
    behind, _, ahead = fields.get("behind_ahead", "").partition("\t")
    return AgentStatus(
        name,
        backend,
        True,
        branch=fields.get("branch") or None,
        head=fields.get("head") or None,
        base=fields.get("base") or None,
        base_commit=fields.get("base_commit") or None,
        ahead=_count(ahead),
        behind=_count(behind),
        uncommitted=_count(fields.get("uncommitted", "")),
        last_commit=datetime.fromisoformat(fields["committed"]) if fields.get("committed") else None,
        last_git_activity=activity,
        fetch_error=fields.get("fetch_error") or None,
    )


def unreachable_status(name: str, backend: str, error: AgentfleetError) -> AgentStatus:
    return AgentStatus(name, backend, False, str(error))


def _count(text: str) -> int | None:
    return int(text) if text.strip().isdigit() else None


def _activity(text: str) -> datetime | None:
    """The newest trace file's mtime (find's %T@: seconds since the epoch, with a fraction)."""
    try:
        return datetime.fromtimestamp(float(text), UTC) if text else None
    except ValueError:
        return None
