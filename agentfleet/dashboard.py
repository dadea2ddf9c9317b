"""`agentfleet dashboard`: the fleet's status and overlaps as a live web page on this machine.

Why the standard library: a page of three static files and two read-only endpoints needs no web
framework, and the client package keeps paramiko as its only dependency. Why it is safe to leave
running: it listens on 127.0.0.1 only; every request but the static files carries the random
token the printed URL holds (compared in constant time); the Host header must name the loopback
address it listens on, so a web page elsewhere cannot reach it by rebinding a DNS name; it
answers GET and HEAD only, and its page loads nothing from anywhere else (Content-Security-Policy).

Live: a poller thread reads Fleet.status() and Fleet.overlaps() every `interval` seconds; the
page listens on /events (server-sent events) and redraws when a reading differs from the last.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from agentfleet.errors import AgentfleetError
from agentfleet.fleet import Fleet

LOOPBACK = "127.0.0.1"
DEFAULT_INTERVAL = 5.0
KEEPALIVE = 15.0  # seconds between comments on an idle event stream, so proxies and tabs keep it
STATIC = {"/": ("index.html", "text/html"), "/app.js": ("app.js", "text/javascript"),
          "/style.css": ("style.css", "text/css")}
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def reading(fleet: Fleet, parallel: int = 8) -> dict[str, Any]:
    """What the page shows: every agent's status and the fleet's overlaps, as their JSON."""
    statuses = fleet.status(parallel=parallel)
    overlaps = fleet.overlaps(parallel=parallel)
    return {"fleet": fleet.name, "status": [status.to_json() for status in statuses], "overlaps": overlaps.to_json()}


class Board:
    """The latest reading, numbered; readers wait for a newer one."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.version = 0
        self.body = b""
        self._content: object = None
        self.closed = False

    def publish(self, content: dict[str, Any]) -> None:
        """Store content with the time it was read; a reading equal to the last is no news."""
        with self._changed:
            if content == self._content and self.version:
                return
            self._content = content
            taken = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
            self.body = json.dumps({**content, "taken": taken}).encode()
            self.version += 1
            self._changed.notify_all()

    def newer_than(self, version: int, timeout: float) -> tuple[int, bytes] | None:
        """The reading after `version`, or None when none came within timeout (or closed)."""
        with self._changed:
            self._changed.wait_for(lambda: self.version > version or self.closed, timeout)
            return (self.version, self.body) if self.version > version and not self.closed else None

    def close(self) -> None:
        with self._changed:
            self.closed = True
            self._changed.notify_all()


class Dashboard:
    """The server and its poller; a context manager. read() gives each new reading's content."""

    def __init__(self, read: Callable[[], dict[str, Any]], port: int = 0, interval: float = DEFAULT_INTERVAL,
                 token: str | None = None) -> None:
        self.token = token or secrets.token_urlsafe(24)
        self.board = Board()
        self.interval = interval
        self._read = read
        self._stop = threading.Event()
        self.server = _Server((LOOPBACK, port), _Handler)
        self.server.dashboard = self
        self._threads = [threading.Thread(target=self._poll, daemon=True, name="dashboard-poller"),
                         threading.Thread(target=self.server.serve_forever, daemon=True, name="dashboard-server")]

    @property
    def url(self) -> str:
        return f"http://{self.host}/?token={self.token}"

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.server.server_address[1]}"

    def __enter__(self) -> Dashboard:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def wait(self) -> None:
        """Until Ctrl-C (the caller's) or close()."""
        self._stop.wait()

    def close(self) -> None:
        self._stop.set()
        self.board.close()
        self.server.shutdown()
        self.server.server_close()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                self.board.publish(self._read())
            except AgentfleetError as error:  # the reading failed as a whole (e.g. no scratch git)
                self.board.publish({"error": str(error)})
            self._stop.wait(self.interval)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    dashboard: Dashboard


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the URL in a request line holds the token."""

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        dashboard = self.server.dashboard
        url = urlsplit(self.path)
        if self.headers.get("Host") != dashboard.host:
            return self._send(HTTPStatus.FORBIDDEN, b"wrong Host\n", "text/plain")
        if url.path in STATIC and url.path != "/":
            name, kind = STATIC[url.path]
            return self._send(HTTPStatus.OK, _static(name), kind)
        given = parse_qs(url.query).get("token", [""])[0]
        if not hmac.compare_digest(given.encode(), dashboard.token.encode()):
            return self._send(HTTPStatus.FORBIDDEN, b"give the token from the URL agentfleet printed\n", "text/plain")
        if url.path == "/":
            return self._send(HTTPStatus.OK, _static("index.html"), "text/html")
        if url.path == "/reading":
            dashboard.board.newer_than(0, dashboard.interval * 4 + 60)  # the first reading, once
            return self._send(HTTPStatus.OK, dashboard.board.body, "application/json")
        if url.path == "/events":
            return self._events()
        return self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

    def _refuse(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"read only\n", "text/plain", {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

    def _send(self, status: HTTPStatus, body: bytes, kind: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {**HEADERS, "Content-Type": f"{kind}; charset=utf-8",
                            "Content-Length": str(len(body)), **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _events(self) -> None:
        """Each reading as one event, the current one first, until the page or the server goes."""
        self.send_response(HTTPStatus.OK)
        for name, value in {**HEADERS, "Content-Type": "text/event-stream", "Connection": "close"}.items():
            self.send_header(name, value)
        self.end_headers()
        self.close_connection = True
        board, version = self.server.dashboard.board, 0
        try:
            while not board.closed:
                newer = board.newer_than(version, KEEPALIVE)
                if newer is None:
                    self.wfile.write(b": still here\n\n")
                else:
                    version, body = newer
                    self.wfile.write(b"data: " + body + b"\n\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page closed


def _static(name: str) -> bytes:
    return resources.files("agentfleet").joinpath("web", name).read_bytes()
