"""The operator's audit log: one JSON line per command the client ran, whatever its outcome.

`Connection.run` hands every command to `AuditLog.run`, so the API, `exec`, `exec --all` and
`doctor` are all on record. The log is opened before the command runs (no log, no command) and
each record is one `write` to an O_APPEND descriptor, so records of concurrent commands never
interleave and nothing earlier is rewritten. A record holds the command line, never its output;
credentials written into a command line are redacted first.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import NoneType

from agentfleet.errors import AuditLogError, CommandTimeout, Unreachable
from agentfleet.result import Result
from agentfleet.source import Source

LOG_ENV = "AGENTFLEET_AUDIT_LOG"
LOG_NAME = "audit.jsonl"
REDACTED = "<redacted>"

_SECRETS = (
    # https://user:token@host/...: the whole userinfo (a bare token is often the user name)
    (re.compile(r"(?i)\b(https?://)[^/\s@]+@"), rf"\1{REDACTED}@"),
    # GITHUB_TOKEN=..., DB_PASSWORD='...', X_API_KEY=...
    (
        re.compile(
            r"(?i)\b(\w*(?:token|secret|password|passwd|credential|api_?key)\w*=)('[^']*'|\"[^\"]*\"|\S+)"
        ),
        rf"\1{REDACTED}",
    ),
    # http.extraHeader="Authorization: Bearer ..."
    (re.compile(r"(?i)(authorization:\s*(?:basic\s+|bearer\s+|token\s+)?)[^\s'\"]+"), rf"\1{REDACTED}"),
)


def redact(text: str) -> str:
    """text with credentials in URLs, secret-named variables and auth headers replaced."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def format_time(moment: datetime) -> str:
    """UTC ISO 8601 with microseconds and Z, the form git's trace2 writes."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; one without an offset is taken as local time."""
    moment = datetime.fromisoformat(text)
    return moment.astimezone(UTC)


def local_user() -> str:
    """The operator's account name from the password database (not $USER, which anyone sets)."""
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@dataclass(frozen=True)
class AuditRecord:
    """One command the client ran; exit_status is None when it never finished (see error)."""

    time: datetime
    agent: str
    stack: str
    operator: str
    command: str
    exit_status: int | None
    duration_s: float
    error: str | None = None
    attempt: int = 1  # 2 and up: a retry of the same command (`--retry`)

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "time": format_time(self.time)}

    @classmethod
    def from_json(cls, data: object) -> AuditRecord:
        """Raise ValueError unless data is a record as to_json writes it (or wrote it before
        records had an attempt)."""
        if isinstance(data, dict) and "attempt" not in data:
            data = {**data, "attempt": 1}
        if not isinstance(data, dict) or data.keys() != _FIELD_TYPES.keys():
            raise ValueError("not an audit record")
        for key, kinds in _FIELD_TYPES.items():
            if not isinstance(data[key], kinds) or isinstance(data[key], bool):
                raise ValueError(f"{key} of an audit record is {data[key]!r}")
        return cls(**{**data, "time": parse_time(data["time"]), "duration_s": float(data["duration_s"])})


_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "time": str,
    "agent": str,
    "stack": str,
    "operator": str,
    "command": str,
    "exit_status": (int, NoneType),
    "duration_s": (int, float),
    "error": (str, NoneType),
    "attempt": int,
}


@dataclass(frozen=True)
class AuditLog:
    """The JSON-lines file one fleet's commands are recorded in."""

    path: Path
    stack: str

    def run(self, agent: str, command: str, execute: Callable[[], Result], attempt: int = 1) -> Result:
        """execute() the command, then append its record (also when it raised); attempt counts
        the tries of one command."""
        fd = self._open()
        started, clock = datetime.now(UTC), time.monotonic()
        exit_status: int | None = None
        error: str | None = None
        try:
            result = execute()
            exit_status = result.exit_status
            return result
        except BaseException as exc:
            error = failure(exc)
            raise
        finally:
            record = AuditRecord(
                started,
                agent,
                self.stack,
                local_user(),
                redact(command),
                exit_status,
                round(time.monotonic() - clock, 6),
                error,
                attempt,
            )
            try:
                self._append(fd, record)
            finally:
                os.close(fd)

    def records(self) -> tuple[list[AuditRecord], int]:
        """Every record in the log (none if it does not exist yet), and how many lines were not one."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return [], 0
        except OSError as exc:
            raise self._error("cannot read", exc) from exc
        records, bad = [], 0
        for line in filter(str.strip, text.splitlines()):
            try:
                records.append(AuditRecord.from_json(json.loads(line)))
            except ValueError:
                bad += 1
        return records, bad

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise self._error("the command was not run: cannot open", exc) from exc

    def _append(self, fd: int, record: AuditRecord) -> None:
        line = (json.dumps(record.to_json(), ensure_ascii=False) + "\n").encode("utf-8")
        try:
            written = os.write(fd, line)
        except OSError as exc:
            raise self._error("the command ran, but cannot append to", exc) from exc
        if written != len(line):
            raise self._error(
                "the command ran, but cannot append to", f"wrote {written} of {len(line)} bytes"
            )

    def _error(self, doing: str, cause: OSError | str) -> AuditLogError:
        reason = cause if isinstance(cause, str) else (cause.strerror or str(cause)).lower()
        hint = f"fix its permissions, or set {LOG_ENV} to another file"
        return AuditLogError(self.path, f"{doing} the audit log {self.path} ({reason}); {hint}")


def failure(exc: BaseException) -> str:
    """Why a command has no exit status, without its output (a timeout carries some)."""
    if isinstance(exc, CommandTimeout):
        return f"timed out after {exc.timeout:g} s"
    if isinstance(exc, Unreachable):
        return redact(f"unreachable: {exc.reason}")
    return type(exc).__name__


def audit_log_for(source: Source, environ: Mapping[str, str]) -> AuditLog | None:
    """$AGENTFLEET_AUDIT_LOG, else <project>/.agentfleet/<stack>/audit.jsonl for a stack.

    A fleet read from an outputs file has no default log: there is no stack directory to put it in.
    """
    configured = environ.get(LOG_ENV)
    if configured:
        return AuditLog(Path(configured).expanduser().absolute(), source.name)
    if source.directory is None:
        return None
    return AuditLog(source.directory / LOG_NAME, source.name)
