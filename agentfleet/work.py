"""An agent's work, committed and not, read over SSH for `overlaps` without pushing anything.

The uncommitted changes become a commit of their own inside the agent: `git add -A` into a
copy of the index (GIT_INDEX_FILE), `git write-tree`, `git commit-tree` with HEAD as parent.
No ref points at it and the agent's branch, index and worktree stay as they were; git's gc
removes it in time. The script then sends the objects that commit adds to the base as a pack
(base64 on stdout: the connection carries text), so the operator's side can merge them.
"""

from __future__ import annotations

import base64
import binascii
import shlex
from dataclasses import dataclass, replace

from agentfleet.result import Result
from agentfleet.status import AgentStatus, parse_status, script_fields, status_script

PATHS_MARKER = "\npaths\n"  # what precedes the NUL-separated changed paths, the output's last part

# Runs after status_script, which set $base_commit; the work commit's author is agentfleet, so
# it is never mistaken for the agent's own.
_WORK = r"""[ -n "$base_commit" ] || {{ echo 'work_error no base commit to compare with'; exit 0; }}
head=$(git rev-parse -q --verify HEAD) || {{ echo 'work_error no commit yet'; exit 0; }}
index=$(mktemp) || exit 1
trap 'rm -f "$index"' EXIT
cp "$(git rev-parse --git-path index)" "$index" 2>/dev/null || rm -f "$index"
tree=$(GIT_INDEX_FILE=$index git add -A && GIT_INDEX_FILE=$index git write-tree) || exit 1
work=$head
if [ "$tree" != "$(git rev-parse "$head^{{tree}}")" ]; then
  work=$(GIT_AUTHOR_NAME=agentfleet GIT_AUTHOR_EMAIL=agentfleet@localhost GIT_COMMITTER_NAME=agentfleet \
    GIT_COMMITTER_EMAIL=agentfleet@localhost git commit-tree "$tree" -p "$head" -m {message}) || exit 1
fi
printf 'work %s\n' "$work"
printf 'pack '
printf '%s\n^%s\n' "$work" "$base_commit" | git pack-objects --revs --stdout -q | base64 -w 0 || exit 1
printf '\npaths\n'
git diff --name-only --no-renames -z "$(git merge-base "$base_commit" "$work")" "$work"
"""


def work_script(base: str | None = None) -> str:
    """status_script, then the work commit, its pack and the paths it changes since the base."""
    return status_script(base) + _WORK.format(message=shlex.quote("agentfleet: uncommitted work"))


def history_script(commit: str) -> str:
    """A pack of commit and all it reaches, base64: the base every work pack leaves out."""
    return f"printf '%s\\n' {shlex.quote(commit)} | git pack-objects --revs --stdout -q | base64 -w 0"


@dataclass(frozen=True)
class AgentWork:
    """An agent's work as one commit: HEAD, or a commit on HEAD holding the uncommitted changes.

    paths are those it changes since it left the base (base...commit); pack holds the objects
    the operator lacks after the base's history.
    """

    name: str
    commit: str
    base: str
    base_commit: str
    paths: frozenset[str]
    pack: bytes


def parse_work(name: str, backend: str, result: Result) -> AgentStatus | AgentWork:
    """The agent's work, or its status when that says why there is none (no repository, no base)."""
    top, marked, paths = result.stdout.partition(PATHS_MARKER)
    status = parse_status(name, backend, Result(result.command, result.exit_status, top, result.stderr))
    fields = script_fields(top)
    if status.error or not marked or status.base_commit is None:
        problem = fields.get("work_error") or "its work could not be read"
        return status if status.error else replace(status, error=problem)
    try:
        pack = base64.b64decode(fields.get("pack", ""), validate=True)
    except binascii.Error:
        return replace(status, error="its work arrived garbled (not base64)")
    return AgentWork(name, fields["work"], status.base or "", status.base_commit, frozenset(filter(None, paths.split("\0"))), pack)


def decode_history(result: Result) -> bytes:
    """The pack history_script printed; raises ValueError when it printed none."""
    if not result.ok:
        raise ValueError(result.stderr.strip() or f"exit status {result.exit_status}")
    return base64.b64decode(result.stdout.strip(), validate=True)
