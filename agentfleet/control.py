"""A stack's background connection, the CLI's side: `agentfleet exec` as fast as `ssh`.

Like OpenSSH's ControlMaster, the first `agentfleet exec NAME` of a stack starts a background
process (agentfleet.master) that keeps the agents' SSH connections open; later calls hand their
command to it over a Unix socket in .agentfleet/<stack>/ (a 0700 directory; the master also
checks the caller's uid) and only stream its output, so they import no SSH library and open no
SSH connection. The master runs the command through the same Connection, audit log and error
messages as an in-process call. It ends after $AGENTFLEET_PERSIST seconds without a command
(default 600; 0 turns it off), on `agentfleet disconnect`, and as soon as it is asked with
another key: the stack's state changed (`pulumi up`) or the audit log is another one. A call
that finds no master, or a stale one, runs in-process as before.

This module runs on every `exec`, so it imports only the standard library's light parts.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from agentfleet.audit import audit_log_for
from agentfleet.errors import UsageError
from agentfleet.source import Source

PERSIST_ENV = "AGENTFLEET_PERSIST"
DEFAULT_PERSIST = 600.0
SOCKET_NAME = "control.sock"
LOCK_NAME = "control.lock"
LOG_NAME = "control.log"  # the master's own stderr: start-up failures (never outputs or keys)
MAX_FRAME = 1 << 20
_SUN_PATH_MAX = 100  # sockaddr_un holds 108 bytes; longer paths go through /proc/self/fd


def persist_seconds(environ: Mapping[str, str]) -> float:
    text = environ.get(PERSIST_ENV, "")
    if not text:
        return DEFAULT_PERSIST
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise UsageError(f"{PERSIST_ENV}={text!r} is not a number of seconds; use e.g. 600, or 0 for none")
    return value


def master_key(source: Source, environ: Mapping[str, str]) -> dict[str, Any] | None:
    """What a master must have been started with to serve this call (None: no master possible)."""
    state = source.state_key()
    if state is None:
        return None
    audit = audit_log_for(source, environ)
    return {"state": state, "audit": None if audit is None else str(audit.path)}


def socket_address(path: Path) -> str:
    """path as a Unix socket address; a path too long for sockaddr_un goes through a descriptor
    of its directory (kept open for the life of the process)."""
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        return str(path)
    directory = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    return f"/proc/self/fd/{directory}/{path.name}"


def send(stream: BinaryIO, frame: Mapping[str, Any]) -> None:
    stream.write(json.dumps(frame).encode() + b"\n")
    stream.flush()


def receive(stream: BinaryIO) -> dict[str, Any] | None:
    """The next frame, or None when the other side has gone."""
    line = stream.readline(MAX_FRAME)
    if not line.endswith(b"\n"):
        return None
    frame = json.loads(line)
    return frame if isinstance(frame, dict) else None


def _connect(directory: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(socket_address(directory / SOCKET_NAME))
    except OSError:
        sock.close()
        return None
    return sock


def exec_via_master(
    source: Source,
    key: Mapping[str, Any],
    request: Mapping[str, Any],
    out: TextIO,
    err: TextIO,
) -> int | None:
    """Run one `exec` through the stack's master: its exit status, or None when no master took
    it (none running, or started for another state), so the caller runs it in-process."""
    assert source.directory is not None
    sock = _connect(source.directory)
    if sock is None:
        return None
    streams = {"stdout": out, "stderr": err}
    with sock, sock.makefile("rwb") as stream:
        try:
            send(stream, {"op": "exec", "key": dict(key), **request})
            first = receive(stream)
        except (OSError, ValueError):
            return None
        if first is None or not first.get("accepted"):
            return None  # stale (it is ending) or going away: nothing ran
        try:
            while (frame := receive(stream)) is not None:
                for which, target in streams.items():
                    if which in frame:
                        target.write(frame[which])
                        target.flush()
                if "exit" in frame:
                    status = int(frame["exit"])
                    return status if 0 <= status <= 255 else 255
                if "error" in frame:
                    err.write(f"agentfleet: {frame['error']}\n")
                    return int(frame["status"])
        except (OSError, ValueError):
            pass
    err.write(
        f"agentfleet: the background connection of {source.describe()} ended while "
        f"`{request.get('command')}` ran on {request.get('agent')}; it may not have finished "
        "(`agentfleet audit` shows what was recorded); run it again to reconnect\n"
    )
    return 255


def stop_master(source: Source) -> bool:
    """Ask the stack's master to end; False if none was running."""
    assert source.directory is not None
    sock = _connect(source.directory)
    if sock is None:
        return False
    with sock, sock.makefile("rwb") as stream:
        try:
            send(stream, {"op": "exit"})
            return receive(stream) is not None
        except OSError:
            return False


def spawn_master(source: Source, environ: Mapping[str, str]) -> None:
    """Start the stack's master in the background, with this process's code and environment;
    it exits at once if another one runs (it holds the lock)."""
    import subprocess  # only here: the fast path of `exec` never needs it

    assert source.directory is not None and source.stack is not None and source.project_dir is not None
    directory = source.directory
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    package_root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, **environ}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    log = os.open(directory / LOG_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        subprocess.Popen(
            # -P: the project directory it runs in (maybe another clone) must not shadow this code.
            [sys.executable, "-P", "-m", "agentfleet.master", "--stack", source.stack, "--cwd", str(source.project_dir)],
            cwd=source.project_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    finally:
        os.close(log)
