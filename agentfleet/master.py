"""`python -m agentfleet.master --stack NAME [--cwd DIR]`: one stack's background connection.

Started by `agentfleet exec` (agentfleet/control.py says why and how it is reached). It holds
.agentfleet/<stack>/control.lock for its whole life, so there is one per stack; it serves each
call on its own thread through the stack's Fleet (shared SSH connections, the audit log), and
ends when idle for $AGENTFLEET_PERSIST seconds, when told to, or when a call brings another key.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from agentfleet.audit import audit_log_for
from agentfleet.baselag import base_warning
from agentfleet.cli import exit_status_for
from agentfleet.control import (
    LOCK_NAME,
    SOCKET_NAME,
    master_key,
    persist_seconds,
    receive,
    send,
    socket_address,
)
from agentfleet.errors import AgentfleetError
from agentfleet.fleet import Fleet
from agentfleet.source import Source, resolve_source

LOCK_WAIT = 5.0  # a master of an older state may still be ending
_PEER = struct.Struct("3i")  # struct ucred: pid, uid, gid


class Master(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, address: str, fleet: Fleet, key: Mapping[str, Any], persist: float) -> None:
        self.fleet = fleet
        self.key = dict(key)
        self.persist = persist
        self._busy = 0
        self._last = time.monotonic()
        self._lock = threading.Lock()
        super().__init__(address, _Handler)

    def begin(self) -> None:
        with self._lock:
            self._busy += 1

    def end(self) -> None:
        with self._lock:
            self._busy -= 1
            self._last = time.monotonic()

    def idle_for(self) -> float:
        with self._lock:
            return 0.0 if self._busy else time.monotonic() - self._last

    def stop(self) -> None:
        """Stop serving (from any thread but serve_forever's)."""
        threading.Thread(target=self.shutdown, daemon=True).start()

    def watch_idle(self) -> None:
        while True:
            time.sleep(max(0.05, min(5.0, self.persist / 4)))
            if self.idle_for() >= self.persist:
                self.shutdown()
                return


class _Handler(socketserver.StreamRequestHandler):
    server: Master

    def handle(self) -> None:
        _pid, uid, _gid = _PEER.unpack(self.request.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEER.size))
        if uid != os.getuid():
            return  # only its own user may drive the operator's keys
        try:
            request = receive(self.rfile)
            if request is None:
                return
            if request.get("op") == "exit":
                send(self.wfile, {"bye": True})
                self.server.stop()
            elif request.get("key") != self.server.key:
                send(self.wfile, {"stale": True})
                self.server.stop()
            elif request.get("op") == "exec":
                self._exec(request)
        except (OSError, ValueError):
            pass  # the caller went away (Ctrl-C) or spoke nonsense: nothing to answer

    def _exec(self, request: Mapping[str, Any]) -> None:
        self.server.begin()
        try:
            send(self.wfile, {"accepted": True})
            try:
                connection = self.server.fleet.ready(str(request["agent"]))
                result = connection.run(
                    request["command"],
                    cwd=request.get("cwd"),
                    timeout=request.get("timeout"),
                    stream=lambda which, text: send(self.wfile, {which: text}),
                )
            except AgentfleetError as error:
                send(self.wfile, {"error": str(error), "status": int(exit_status_for(error))})
            else:
                warning = base_warning(connection)
                if warning:
                    send(self.wfile, {"stderr": warning})
                send(self.wfile, {"exit": result.exit_status})
        finally:
            self.server.end()


def serve(source: Source, environ: Mapping[str, str]) -> int:
    """Serve the stack until idle, stopped or stale; 0 also when another master already serves."""
    directory = source.directory
    if directory is None:
        print("agentfleet.master: a background connection serves a stack, not an outputs file", file=sys.stderr)
        return 2
    persist = persist_seconds(environ)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                return 0  # another master serves this stack
            time.sleep(0.05)
    key = master_key(source, environ)
    outputs, state = source.read_keyed()
    if key is None or state != key["state"]:
        return 0  # the state changed while we started: the next call starts a fresh master
    fleet = Fleet.from_outputs(outputs, source.name, described=source.describe(), audit=audit_log_for(source, environ))
    path = directory / SOCKET_NAME
    path.unlink(missing_ok=True)  # a crashed master's; we hold the lock
    with fleet, Master(socket_address(path), fleet, key, persist) as server:
        path.chmod(0o600)
        threading.Thread(target=server.watch_idle, daemon=True).start()
        try:
            server.serve_forever(poll_interval=0.5)
        finally:
            path.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentfleet.master", description=__doc__.splitlines()[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--cwd", default=None)
    args = parser.parse_args(argv)
    try:
        return serve(resolve_source(args.stack, None, args.cwd, os.environ), os.environ)
    except AgentfleetError as error:
        print(f"agentfleet.master: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
