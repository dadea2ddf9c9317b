"""What each agent's egress policy refused, as the agent recorded it: read over the agent's SSH.

The record (cloud-init/agentfleet_denied.py) is root's in the agent and readable by the agent
user, so the client reads it with the same login as every other command, and the agent can
neither hide nor invent a line. Reading is one command; parsing its lines into DeniedEntry and
merging agents by time are pure functions, tested without a machine.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime

from agentfleet.audit import format_time, parse_time
from agentfleet.connection import Connection
from agentfleet.contract import DENIED_RECORD, EGRESS_RULESET
from agentfleet.result import Result, tail

OPEN_EGRESS = 3  # read_command's exit status: no record, and no policy that would refuse anything
NO_RECORD = 4  # a restricted policy, but no record: the agent predates the record
READ_TIMEOUT = 60.0


def read_command(record: str = DENIED_RECORD, ruleset: str = EGRESS_RULESET) -> str:
    """A shell line printing the rotated record, then the current one."""
    path, rules = shlex.quote(record), shlex.quote(ruleset)
    return (f"if ! test -e {path}; then test -e {rules} && exit {NO_RECORD}; exit {OPEN_EGRESS}; fi; "
            f"cat {shlex.quote(record + '.1')} 2>/dev/null; cat {path}")


@dataclass(frozen=True)
class DeniedEntry:
    """One refusal on record. A DNS refusal has protocol "dns", the name (also as destination)
    and no port; an ICMP one no port; a line standing for refusals over the rate limit has
    `unrecorded` (how many) and nothing else but its time."""

    time: datetime
    agent: str
    protocol: str | None
    destination: str | None
    port: int | None
    name: str | None = None
    unrecorded: int | None = None

    def to_json(self) -> dict[str, object]:
        return {"time": format_time(self.time), "agent": self.agent, "protocol": self.protocol,
                "destination": self.destination, "port": self.port, "name": self.name,
                "unrecorded": self.unrecorded}


def _optional(data: dict, key: str, kind: type) -> object:
    value = data.get(key)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise ValueError(f"{key} is {value!r}")
    return value


def parse_entry(agent: str, line: str) -> DeniedEntry:
    """One line of the record; ValueError unless it is one."""
    data = json.loads(line)
    if not isinstance(data, dict) or not isinstance(data.get("time"), str):
        raise ValueError("not a record of a refusal")
    entry = DeniedEntry(parse_time(data["time"]), agent, _optional(data, "protocol", str),
                        _optional(data, "destination", str), _optional(data, "port", int),
                        _optional(data, "name", str), _optional(data, "unrecorded", int))
    if entry.destination is None and entry.unrecorded is None:
        raise ValueError("neither a destination nor a count")
    return entry


@dataclass(frozen=True)
class AgentDenied:
    """What one agent's record held; problem says why it may be missing or incomplete."""

    agent: str
    entries: tuple[DeniedEntry, ...]
    problem: str | None = None


def judge_read(agent: str, result: Result) -> AgentDenied:
    """The entries read_command printed, and anything that kept it from reading them all."""
    if result.exit_status == OPEN_EGRESS:
        return AgentDenied(agent, ())
    if result.exit_status == NO_RECORD:
        return AgentDenied(agent, (), f"no record of refused connections at {DENIED_RECORD} (made before "
                           "agentfleet recorded them? `pulumi up` updates the agent in place)")
    entries, bad = [], 0
    for line in filter(str.strip, result.stdout.splitlines()):
        try:
            entries.append(parse_entry(agent, line))
        except ValueError:
            bad += 1
    problems = [f"{bad} lines of {DENIED_RECORD} are not records, skipped"] if bad else []
    if not result.ok:
        problems.append(f"the record could not be read: {tail(result.stderr) or f'exit status {result.exit_status}'}")
    return AgentDenied(agent, tuple(entries), "; ".join(problems) or None)


def read_denied(connection: Connection) -> AgentDenied:
    return judge_read(connection.name, connection.run(read_command(), cwd="/", timeout=READ_TIMEOUT))


def merged(records: Iterable[AgentDenied], agents: Collection[str], since: datetime | None = None) -> list[DeniedEntry]:
    """The entries of these agents, from since on, by time."""
    entries = [entry for record in records if record.agent in agents for entry in record.entries
               if since is None or entry.time >= since]
    return sorted(entries, key=lambda entry: entry.time)
