"""One agent's SSH connection: opened lazily, reused across commands, pinned host key only.

Trust comes from the known_hosts line in the stack outputs and nothing else: no
~/.ssh/known_hosts, no agent, no key files, and paramiko's RejectPolicy for anything unpinned.
"""

from __future__ import annotations

import codecs
import select
import shlex
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import paramiko

from agentfleet.audit import AuditLog
from agentfleet.endpoint import AgentEndpoint
from agentfleet.errors import (
    AgentfleetError,
    AuthenticationFailed,
    CommandTimeout,
    HostKeyMismatch,
    Unreachable,
)
from agentfleet.result import Result, tail
from agentfleet.sshkeys import describe_key
from agentfleet.retry import Backoff, RetryNotice, retry_reason

Stream = Callable[[str, str], None]
"""Receives ("stdout" | "stderr", text) as soon as the remote prints it."""

_LINK_ERRORS = (paramiko.SSHException, OSError, EOFError)  # what a broken or refused link raises
CHUNK = 32768
POLL = 1.0  # longest wait between checks of a running command's deadline and exit status


def command_line(command: Sequence[str] | str, cwd: str | None) -> str:
    """The text the remote shell runs: argv lists are quoted, a string is passed as is.

    With cwd, the shell changes there first and gives up (exit 1) if it cannot.
    """
    line = command if isinstance(command, str) else shlex.join(command)
    if not line.strip():
        raise ValueError("empty command")
    return line if cwd is None else f"cd {shlex.quote(cwd)} || exit; {line}"


class Connection:
    """The orchestrator's SSH session with one agent; `close()` is safe to call twice.

    With an audit log, every command run is recorded there.
    """

    def __init__(
        self, endpoint: AgentEndpoint, connect_timeout: float = 10.0, audit: AuditLog | None = None
    ) -> None:
        self.endpoint = endpoint
        self.connect_timeout = connect_timeout
        self.audit = audit
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def name(self) -> str:
        return self.endpoint.name

    def open(self) -> Connection:
        """Connect now if there is no live connection (normally done by the first run)."""
        self._transport()
        return self

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def run(
        self,
        command: Sequence[str] | str,
        *,
        cwd: str | None = None,
        timeout: float | None = None,
        stream: Stream | None = None,
        retries: int = 0,
        backoff: Backoff = Backoff(),
        on_retry: RetryNotice | None = None,
        stdin: bytes | None = None,
    ) -> Result:
        """Run command in the agent's login shell and wait for it (at most timeout seconds).

        It runs in cwd, by default in the agent's workspace (git commands need a repository;
        the login directory when the outputs name no workspace). With retries, a non-zero exit
        or a lost connection is tried again up to that many times, after a growing wait
        (`backoff`; `on_retry` hears of each); the last attempt's result or error is the answer.
        Every attempt streams its output and has its own audit record. `stdin` is what the
        command reads (a credential: never part of the command line).
        """
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, not {retries}")
        line = command_line(command, cwd or self.endpoint.workspace)
        attempt = 1
        while True:
            try:
                outcome: Result | Unreachable = self._attempt(line, timeout, stream, attempt, stdin)
            except Unreachable as error:
                outcome = error
            reason = retry_reason(outcome)
            if reason is None or attempt > retries:
                break
            wait = backoff.wait(attempt)
            if on_retry is not None:
                on_retry(attempt, reason, wait)
            time.sleep(wait)
            attempt += 1
        if isinstance(outcome, Unreachable):
            raise outcome
        return outcome

    def _attempt(self, line: str, timeout: float | None, stream: Stream | None, attempt: int,
                 stdin: bytes | None = None) -> Result:
        if self.audit is None:
            return self._execute(line, timeout, stream, stdin)
        return self.audit.run(self.name, line, lambda: self._execute(line, timeout, stream, stdin), attempt)

    def _execute(self, line: str, timeout: float | None, stream: Stream | None, stdin: bytes | None = None) -> Result:
        channel = self._session()
        output = _Output(stream)
        deadline = None if timeout is None else time.monotonic() + timeout
        with channel:
            try:
                channel.exec_command(line)
                if stdin is not None:
                    channel.sendall(stdin)
                    channel.shutdown_write()
                finished = _pump(channel, output, deadline)
            except _StreamFailed as failed:
                raise failed.raised from None  # the caller's own error, not a broken link
            except _LINK_ERRORS as exc:
                self.close()
                raise self._unreachable(exc, f"connection lost while running `{line}`") from exc
            stdout, stderr = output.text("stdout"), output.text("stderr")
            if not finished:
                raise CommandTimeout(self.name, line, timeout or 0.0, tail(f"{stdout}\n{stderr}"))
            return Result(line, channel.recv_exit_status(), stdout, stderr)

    def _session(self) -> paramiko.Channel:
        """A new channel; a connection that died since its last use is replaced once."""
        try:
            return self._transport().open_session(timeout=self.connect_timeout)
        except _LINK_ERRORS:
            self.close()
        try:
            return self._transport().open_session(timeout=self.connect_timeout)
        except _LINK_ERRORS as exc:
            self.close()
            raise self._unreachable(exc, "cannot open a session") from exc

    def _transport(self) -> paramiko.Transport:
        with self._lock:
            transport = self._client.get_transport() if self._client is not None else None
            if transport is None or not transport.is_active():
                if self._client is not None:
                    self._client.close()
                self._client = self._connect()
                transport = self._client.get_transport()
            assert transport is not None
            return transport

    def _connect(self) -> paramiko.SSHClient:
        endpoint = self.endpoint
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        pinned: Mapping[str, paramiko.PKey] = endpoint.host_keys().lookup(endpoint.host_key_name) or {}
        for kind, key in pinned.items():
            client.get_host_keys().add(endpoint.host_key_name, kind, key)
        try:
            client.connect(
                endpoint.host,
                endpoint.port,
                username=endpoint.user,
                pkey=endpoint.pkey(),
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                channel_timeout=self.connect_timeout,
                allow_agent=False,
                look_for_keys=False,
            )
        except _LINK_ERRORS as exc:
            client.close()
            raise self._converted(exc) from exc
        except BaseException:
            client.close()
            raise
        return client

    def _converted(self, exc: BaseException) -> AgentfleetError:
        endpoint = self.endpoint
        if isinstance(exc, paramiko.BadHostKeyException):
            return HostKeyMismatch(
                endpoint.name, endpoint.address, describe_key(exc.key), describe_key(exc.expected_key)
            )
        if isinstance(exc, paramiko.AuthenticationException):
            return AuthenticationFailed(endpoint.name, endpoint.address, endpoint.user)
        return self._unreachable(exc)

    def _unreachable(self, exc: BaseException, doing: str = "") -> Unreachable:
        if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
            reason = "connection refused"
        elif isinstance(exc, (socket.timeout, TimeoutError)):
            reason = f"no answer within {self.connect_timeout:g} s"
        elif isinstance(exc, socket.gaierror):
            reason = f"cannot resolve {self.endpoint.host}"
        elif isinstance(exc, OSError) and exc.strerror:
            reason = exc.strerror.lower()
        else:
            reason = str(exc) or type(exc).__name__
        return Unreachable(self.name, self.endpoint.address, f"{doing}: {reason}" if doing else reason)


class _StreamFailed(Exception):
    """Carries an exception the caller's stream callback raised past the link-error handling."""

    def __init__(self, raised: Exception) -> None:
        super().__init__(raised)
        self.raised = raised


class _Output:
    """Decodes both streams incrementally (UTF-8 split across chunks) and forwards the text."""

    def __init__(self, stream: Stream | None) -> None:
        self._stream = stream
        self._decoders = {
            which: codecs.getincrementaldecoder("utf-8")(errors="replace") for which in ("stdout", "stderr")
        }
        self._parts: dict[str, list[str]] = {"stdout": [], "stderr": []}

    def feed(self, which: str, data: bytes, final: bool = False) -> None:
        text = self._decoders[which].decode(data, final)
        if text:
            self._parts[which].append(text)
            if self._stream is not None:
                try:
                    self._stream(which, text)
                except Exception as exc:
                    raise _StreamFailed(exc) from exc

    def finish(self) -> None:
        for which in self._decoders:
            self.feed(which, b"", final=True)

    def text(self, which: str) -> str:
        return "".join(self._parts[which])


DRAIN = 1.0  # seconds to wait for output still in flight after the exit status


def _pump(channel: paramiko.Channel, output: _Output, deadline: float | None) -> bool:
    """Forward output until the command exits (True) or the deadline passes (False). The exit
    status can arrive before the last of stderr (sshd reports the exit when the child ends, while
    its pipes may still hold output): after it, output is read until the channel's EOF, for at
    most DRAIN seconds."""
    drained_by = None
    while True:
        if channel.recv_ready():
            output.feed("stdout", channel.recv(CHUNK))
        if channel.recv_stderr_ready():
            output.feed("stderr", channel.recv_stderr(CHUNK))
        if channel.recv_ready() or channel.recv_stderr_ready():
            continue
        if channel.exit_status_ready():
            drained_by = drained_by or time.monotonic() + DRAIN
            if channel.eof_received or channel.closed or time.monotonic() >= drained_by:
                output.finish()
                return True
        wait = POLL if deadline is None else min(POLL, deadline - time.monotonic())
        if wait <= 0:
            output.finish()
            return False
        if channel.eof_received:
            channel.status_event.wait(wait)
        else:
            select.select([channel], [], [], wait)
