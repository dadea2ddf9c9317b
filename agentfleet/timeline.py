"""`agentfleet audit`'s one view of two records: the operator's log and git's trace in each agent.

Both turn into Entries, merged by time; pure functions, so they are tested without a machine.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from agentfleet.audit import AuditRecord, format_time, parse_time, redact
from agentfleet.trace2 import AgentTrace, GitProcess

OPERATOR = "operator"
GIT = "git"
_RELATIVE = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class Entry:
    """One command on record: source is OPERATOR (run through the client) or GIT (traced in the agent).

    exit_status is None when the command never finished (error says why); operator is the local
    user for OPERATOR entries; depth > 0 marks a git process started by another git process.
    """

    time: datetime
    agent: str
    source: str
    command: str
    exit_status: int | None
    duration_s: float | None
    error: str | None = None
    operator: str | None = None
    depth: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "time": format_time(self.time),
            "agent": self.agent,
            "source": self.source,
            "command": self.command,
            "exit_status": self.exit_status,
            "duration_s": self.duration_s,
            "error": self.error,
            "operator": self.operator,
            "depth": self.depth,
        }


def operator_entry(record: AuditRecord) -> Entry:
    return Entry(
        record.time,
        record.agent,
        OPERATOR,
        record.command,
        record.exit_status,
        record.duration_s,
        record.error,
        record.operator,
    )


def git_entry(agent: str, process: GitProcess) -> Entry:
    if process.exit_status is not None:
        error = None
    elif process.signal is not None:
        error = f"killed by signal {process.signal}"
    else:
        error = "no exit on record (still running, or killed)"
    command = redact(shlex.join(process.argv))
    return Entry(
        process.started,
        agent,
        GIT,
        command,
        process.exit_status,
        process.duration_s,
        error,
        depth=process.depth,
    )


def timeline(
    records: Iterable[AuditRecord],
    traces: Iterable[AgentTrace],
    stack: str,
    agents: Collection[str],
    since: datetime | None = None,
) -> list[Entry]:
    """The stack's records and the traces of these agents, from since on, by time."""
    entries = [
        operator_entry(record) for record in records if record.stack == stack and record.agent in agents
    ]
    entries += [git_entry(trace.agent, process) for trace in traces for process in trace.processes]
    kept = [entry for entry in entries if entry.agent in agents and (since is None or entry.time >= since)]
    return sorted(kept, key=lambda entry: entry.time)


def parse_since(text: str, now: datetime) -> datetime:
    """`10m`, `2h`, `1d`, `1w` (or s) before now, or an ISO time (local unless it has an offset)."""
    relative = _RELATIVE.fullmatch(text.strip())
    if relative:
        amount, unit = relative.groups()
        return now - timedelta(**{_UNITS[unit]: int(amount)})
    try:
        return parse_time(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO time nor an age such as 10m, 2h, 1d") from None
