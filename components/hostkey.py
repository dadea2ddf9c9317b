"""Waiting for a machine's sshd to offer its pinned host key: the one readiness test of every backend.

Why the key and not the port: a port answers as soon as something listens (Docker's proxy, Lima's
forwarder, a half-booted sshd with throwaway keys); only the pinned key says that cloud-init
installed it and sshd restarted with it, which is what the client will insist on.
"""

from __future__ import annotations

import base64
import socket
import time

import paramiko

POLL_S = 0.05
PROBE_TIMEOUT_S = 3.0


class HostKeyTimeout(Exception):
    """sshd never offered the pinned key in time; the message says what was seen last."""


def offered_key(host: str, port: int, key_type: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """The base64 body of the host key of `key_type` that sshd on host:port offers, or None."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except OSError:
        return None
    transport = paramiko.Transport(sock)
    try:
        transport.get_security_options().key_types = [key_type]
        transport.banner_timeout = timeout_s
        transport.start_client(timeout=timeout_s)
        key = transport.get_remote_server_key()
        return base64.b64encode(key.asbytes()).decode()
    except (paramiko.SSHException, OSError, EOFError):
        return None
    finally:
        transport.close()


def wait_for_host_key(host: str, port: int, public_key: str, timeout_s: float, poll_s: float = POLL_S) -> None:
    """Return once sshd on host:port offers `public_key` ("type base64 [comment]"); else raise."""
    key_type, body = public_key.split()[:2]
    deadline = time.monotonic() + timeout_s
    while True:
        seen = offered_key(host, port, key_type)
        if seen == body:
            return
        if time.monotonic() >= deadline:
            last = "a different key" if seen else "no SSH answer"
            raise HostKeyTimeout(
                f"sshd on {host}:{port} did not offer the pinned host key within {timeout_s:g}s (last: {last})"
            )
        time.sleep(poll_s)
