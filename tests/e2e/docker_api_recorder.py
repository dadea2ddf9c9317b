"""A recording proxy in front of the Docker daemon's socket: every byte a client sends to the
engine, per connection, so a test can check what travelled in which API call."""

from __future__ import annotations

import re
import socket
import socketserver
import threading
from dataclasses import dataclass, field
from pathlib import Path

DAEMON_SOCKET = "/var/run/docker.sock"
REQUEST_LINE = re.compile(rb"(GET|POST|PUT|DELETE|HEAD) (\S+) HTTP/1\.[01]\r\n")


@dataclass
class Recorder:
    """Serves `path` and forwards to the daemon; `sent` holds what each connection sent."""

    path: Path
    sent: list[bytearray] = field(default_factory=list)

    def __enter__(self) -> "Recorder":
        recorder = self

        class Forward(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                upstream = socket.socket(socket.AF_UNIX)
                upstream.connect(DAEMON_SOCKET)
                log = bytearray()
                recorder.sent.append(log)
                back = threading.Thread(target=_pump, args=(upstream, self.request, None), daemon=True)
                back.start()
                _pump(self.request, upstream, log)
                back.join(timeout=5)
                upstream.close()

        self._server = socketserver.ThreadingUnixStreamServer(str(self.path), Forward)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.path.unlink(missing_ok=True)

    def calls(self) -> list[tuple[str, str, bytes]]:
        """(method, path, everything sent until the next request line) for every API call."""
        found = []
        for stream in self.sent:
            data = bytes(stream)
            starts = [m for m in REQUEST_LINE.finditer(data)]
            for index, match in enumerate(starts):
                end = starts[index + 1].start() if index + 1 < len(starts) else len(data)
                found.append((match.group(1).decode(), match.group(2).decode(), data[match.start():end]))
        return found


def _pump(source: socket.socket, target: socket.socket, log: bytearray | None) -> None:
    try:
        while chunk := source.recv(65536):
            if log is not None:
                log.extend(chunk)
            target.sendall(chunk)
    except OSError:
        pass
    finally:
        try:
            target.shutdown(socket.SHUT_WR)
        except OSError:
            pass
