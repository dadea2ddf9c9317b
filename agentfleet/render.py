"""How the CLI shows things: pure functions from values to text, tested without a machine."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TextIO

from agentfleet.denied import DeniedEntry
from agentfleet.doctor import Diagnosis, Verdict
from agentfleet.endpoint import AgentEndpoint
from agentfleet.errors import AgentfleetError
from agentfleet.overlaps import Overlaps
from agentfleet.result import Result
from agentfleet.status import AgentStatus
from agentfleet.timeline import Entry
from agentfleet.workspace import CloneOutcome, DeployKey


def ls_record(agent: AgentEndpoint, error: AgentfleetError | None) -> dict[str, object]:
    """One agent for `ls --json` (never its private key); error is why it is unreachable."""
    return {
        "name": agent.name,
        "backend": agent.backend,
        "host": agent.host,
        "port": agent.port,
        "user": agent.user,
        "reachable": error is None,
        "error": None if error is None else str(error),
        "identity": {"name": agent.identity.name, "email": agent.identity.email},
        "remote": agent.remote,
        "branch": agent.branch,
        "workspace": agent.workspace,
        "user_namespace": agent.user_namespace,
    }


def render_ls_json(records: Sequence[Mapping[str, object]]) -> str:
    return json.dumps(list(records), indent=2) + "\n"


def render_ls_table(agents: Sequence[AgentEndpoint], errors: Mapping[str, AgentfleetError | None]) -> str:
    rows = [
        [agent.name, agent.backend, agent.address, "no" if errors[agent.name] else "yes",
         agent.user_namespace or "-", str(agent.identity)]
        for agent in agents
    ]
    return render_table(["NAME", "BACKEND", "ENDPOINT", "REACHABLE", "USERNS", "IDENTITY"], rows)


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n"
        for row in [header, *rows]
    )


def render_status_table(statuses: Sequence[AgentStatus]) -> str:
    """One row per agent; `-` where git could not say (see the errors printed after it)."""
    rows = [
        [
            status.name,
            status.backend,
            _health(status),
            status.branch or "-",
            (status.head or "-")[:10],
            status.base or "-",
            _number(status.ahead),
            _number(status.behind),
            _number(status.uncommitted),
            _minute(status.last_commit),
            _minute(status.last_git_activity),
        ]
        for status in statuses
    ]
    header = ["NAME", "BACKEND", "HEALTH", "BRANCH", "HEAD", "BASE", "AHEAD", "BEHIND", "CHANGED",
              "LAST COMMIT (UTC)", "LAST GIT (UTC)"]
    return render_table(header, rows)


def status_problems(statuses: Sequence[AgentStatus]) -> list[str]:
    """Why a row of the status table is incomplete or stale, one line per problem."""
    problems = [f"{status.name}: {status.error}" for status in statuses if status.error]
    problems += [
        f"{status.name}: cannot fetch {status.base}, ahead/behind count against what it fetched last: "
        f"{status.fetch_error}"
        for status in statuses
        if status.fetch_error
    ]
    return problems


def render_status_json(statuses: Sequence[AgentStatus]) -> str:
    return json.dumps([status.to_json() for status in statuses], indent=2) + "\n"


def render_overlaps(overlaps: Overlaps) -> str:
    """Shared files, then the pairs that share files or conflict, then work the base has outrun."""
    if overlaps.base_commit is None:
        return "no agent's work could be read\n"
    lines = [f"base {overlaps.base} ({overlaps.base_commit[:10]}), {len(overlaps.agents)} agents\n"]
    if overlaps.files:
        rows = [[file.path, ", ".join(file.agents)] for file in overlaps.files]
        lines += ["\n", render_table(["FILE", "CHANGED BY"], rows)]
    pairs = [pair for pair in overlaps.pairs if pair.shared or not pair.clean]
    if pairs:
        rows = [
            [" + ".join(pair.agents), ", ".join(pair.shared) or "-",
             "clean" if pair.clean else "CONFLICT: " + ", ".join(pair.conflicts)]
            for pair in pairs
        ]
        lines += ["\n", render_table(["AGENTS", "BOTH CHANGE", "MERGE"], rows)]
    if overlaps.stale:
        rows = [[agent.name, "CONFLICT: " + ", ".join(agent.base_conflicts)] for agent in overlaps.stale]
        lines += ["\n", render_table(["AGENT", f"MERGE INTO {overlaps.base}"], rows)]
    conflicts = len(overlaps.conflicts) + len(overlaps.stale)
    lines.append(f"\n{conflicts or 'no'} conflict{'' if conflicts == 1 else 's'} predicted\n")
    return "".join(lines)


def _health(status: AgentStatus) -> str:
    if not status.reachable:
        return "unreachable"
    return "error" if status.error else "ok"


def _number(value: int | None) -> str:
    return "-" if value is None else str(value)


def _minute(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def outcome_line(name: str, outcome: Result | AgentfleetError) -> str:
    """Why one agent of `exec --all` failed, or '' if it did not."""
    if isinstance(outcome, AgentfleetError):
        return f"{name}: {outcome}"
    return "" if outcome.ok else f"{name}: exit status {outcome.exit_status}"


def retry_line(name: str, attempt: int, reason: str, wait: float) -> str:
    """The notice `exec --retry` prints before trying a failed command again."""
    return f"agentfleet: {name}: attempt {attempt} failed ({reason}); trying again in {wait:.1f} s\n"


def render_summary(outcomes: Mapping[str, Result | AgentfleetError]) -> str:
    failed = sum(1 for name, outcome in outcomes.items() if outcome_line(name, outcome))
    return f"{len(outcomes) - failed} ok, {failed} failed\n"


class PrefixedLines:
    """Interleaves several agents' output on two streams, whole lines only, each one labelled.

    A line is written once complete, so lines of different agents never mix; what is left
    without a newline at the end is written by finish().
    """

    def __init__(self, names: Sequence[str], out: TextIO, err: TextIO) -> None:
        width = max((len(name) for name in names), default=0)
        self._prefix = {name: f"{name.ljust(width)} | " for name in names}
        self._streams = {"stdout": out, "stderr": err}
        self._partial: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def write(self, name: str, which: str, text: str) -> None:
        with self._lock:
            pending = self._partial.pop((name, which), "") + text
            *lines, rest = pending.split("\n")
            if rest:
                self._partial[(name, which)] = rest
            self._emit(name, which, lines)

    def finish(self, name: str) -> None:
        with self._lock:
            for which in self._streams:
                rest = self._partial.pop((name, which), "")
                if rest:
                    self._emit(name, which, [rest])

    def _emit(self, name: str, which: str, lines: list[str]) -> None:
        if lines:
            stream = self._streams[which]
            stream.write("".join(f"{self._prefix[name]}{line}\n" for line in lines))
            stream.flush()


def render_diagnosis(diagnosis: Diagnosis) -> str:
    agent = diagnosis.agent
    width = max(len(check.name) for check in diagnosis.checks)
    lines = [f"{agent.name} ({agent.backend}, {agent.address})"]
    for check in diagnosis.checks:
        lines.append(f"  {check.verdict.value:<4}  {check.name:<{width}}  {check.detail}")
        if check.verdict is Verdict.FAIL and check.hint:
            lines.append(f"  {'':<4}  {'':<{width}}  hint: {check.hint}")
    return "\n".join(lines) + "\n"


def render_audit_table(entries: Sequence[Entry]) -> str:
    """One line per command; a git process started by another git process is indented under it."""
    rows = [
        [
            entry.time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            entry.agent,
            entry.source,
            "-" if entry.exit_status is None else str(entry.exit_status),
            "-" if entry.duration_s is None else f"{entry.duration_s:.2f}",
            "  " * entry.depth + entry.command + (f"  ({entry.error})" if entry.error else ""),
        ]
        for entry in entries
    ]
    return render_table(["TIME (UTC)", "AGENT", "SOURCE", "EXIT", "SECONDS", "COMMAND"], rows)


def render_denied_table(entries: Sequence[DeniedEntry]) -> str:
    """One line per refusal; a count stands for the refusals over the agent's rate limit."""
    rows = [
        [
            entry.time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            entry.agent,
            entry.protocol or "-",
            entry.destination
            or f"({entry.unrecorded} more refused over the rate limit, not recorded one by one)",
            "-" if entry.port is None else str(entry.port),
        ]
        for entry in entries
    ]
    return render_table(["TIME (UTC)", "AGENT", "PROTOCOL", "DESTINATION", "PORT"], rows)


def render_audit_json(entries: Sequence[Entry] | Sequence[DeniedEntry]) -> str:
    """JSON lines, one entry each (commands or refusals), for tools that read the trail."""
    return "".join(json.dumps(entry.to_json(), ensure_ascii=False) + "\n" for entry in entries)


def render_deploy_keys(keys: Sequence[DeployKey]) -> str:
    """Per key: the remote it is for, then title and key as a deploy-key form asks for them."""
    blocks = [
        f"{key.agent}: {key.remote}\n  title: {key.title}\n  key:   {key.key}\n" for key in keys
    ]
    return (
        "# Add each key as a deploy key of its remote, with write access (GitHub: Settings > "
        "Deploy keys > Add deploy key,\n# tick 'Allow write access'); then `agentfleet clone` "
        "makes the first clones.\n" + "".join(blocks)
    )


def render_clone(outcome: CloneOutcome) -> str:
    line = f"{outcome.agent}: {outcome.state}: {outcome.detail}\n"
    return line + (f"  hint: {outcome.hint}\n" if not outcome.ok and outcome.hint else "")
