"""Git's own record of the git processes in an agent: its trace2 event files, read and paired.

Every agent's /etc/gitconfig sets `trace2.eventTarget` to TRACE_DIR, so every git process,
whoever starts it (the agent over SSH, cloud-init, a plain `ssh` login), writes its JSON events
to a file of its own there. Reading them is one command over the client's connection; turning
each process's `start` and `exit` events into one GitProcess is a pure function, tested from
files real git wrote.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from datetime import datetime

from agentfleet.audit import parse_time
from agentfleet.connection import Connection
from agentfleet.contract import TRACE2_DIR as TRACE_DIR
from agentfleet.result import Result, tail

NO_TRACE_DIR = 3  # what read_command exits with when the directory is missing
READ_TIMEOUT = 60.0
_EVENTS = ("start", "exit", "atexit", "signal")  # all a process's entry needs; regions etc. stay behind


def read_command(directory: str = TRACE_DIR) -> str:
    """A shell line printing the start/exit/atexit/signal events of every trace file.

    grep ends every line it prints with a newline, so the unfinished last line of a file git is
    still writing cannot run into the next file's first; git writes "event" as the first key.
    Anyone may add files to the directory: grep -r follows no symlinks and skips FIFOs in it.
    """
    where = shlex.quote(directory)
    pattern = shlex.quote(r'^\{"event":"(' + "|".join(_EVENTS) + ')"')
    return f"test -d {where} || exit {NO_TRACE_DIR}; grep -rhE {pattern} {where}; test $? -le 1"


@dataclass(frozen=True)
class GitProcess:
    """One git process as its trace tells it; exit_status is None if it recorded no exit."""

    sid: str
    started: datetime
    argv: tuple[str, ...]
    exit_status: int | None
    duration_s: float | None
    signal: int | None = None

    @property
    def depth(self) -> int:
        """0 for a git command someone ran, n for one git started n levels down (a sid per level)."""
        return self.sid.count("/")


def parse_events(text: str) -> list[GitProcess]:
    """The processes in trace2 EVENT lines, by start time; lines that are not events are skipped."""
    seen: dict[str, dict[str, dict[str, object]]] = {}
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") in _EVENTS and isinstance(event.get("sid"), str):
            seen.setdefault(event["sid"], {}).setdefault(event["event"], event)
    processes = [process for sid, events in seen.items() if (process := _process(sid, events))]
    return sorted(processes, key=lambda process: process.started)


def _process(sid: str, events: dict[str, dict[str, object]]) -> GitProcess | None:
    """None without a well-formed start event (a file cut short, or not git's)."""
    start = events.get("start", {})
    argv, when = start.get("argv"), start.get("time")
    if not (isinstance(argv, list) and all(isinstance(word, str) for word in argv) and isinstance(when, str)):
        return None
    try:
        started = parse_time(when)
    except ValueError:
        return None
    ended = events.get("atexit") or events.get("exit") or events.get("signal") or {}
    code, elapsed, signo = ended.get("code"), ended.get("t_abs"), ended.get("signo")
    return GitProcess(
        sid,
        started,
        tuple(argv),
        code if type(code) is int else None,
        float(elapsed) if isinstance(elapsed, (int, float)) else None,
        signo if type(signo) is int else None,
    )


@dataclass(frozen=True)
class AgentTrace:
    """What one agent's trace directory held; problem says why it may be incomplete."""

    agent: str
    processes: tuple[GitProcess, ...]
    problem: str | None = None


def judge_read(agent: str, result: Result) -> AgentTrace:
    """The processes read_command printed, and anything that kept it from reading them all."""
    if result.exit_status == NO_TRACE_DIR:
        return AgentTrace(
            agent,
            (),
            f"no git trace directory {TRACE_DIR}, so its git commands are not on record "
            "(made before git tracing? `pulumi up` re-creates it)",
        )
    problem = None
    if not result.ok:
        said = tail(result.stderr) or f"exit status {result.exit_status}"
        problem = f"some git traces could not be read: {said}"
    return AgentTrace(agent, tuple(parse_events(result.stdout)), problem)


def read_trace(connection: Connection) -> AgentTrace:
    return judge_read(connection.name, connection.run(read_command(), cwd="/", timeout=READ_TIMEOUT))
