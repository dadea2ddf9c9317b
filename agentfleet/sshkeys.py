"""SSH keys as agentfleet reads them, the same for the program (remote engines, config checks)
and the client (agents' endpoints): known_hosts names and lines, private keys, how a key is named
in a message. paramiko is imported when a key is parsed, not before: `agentfleet exec` through
its background connection never parses one.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import paramiko

NOT_A_PRIVATE_KEY = "not an unencrypted OpenSSH or PEM private key (ed25519, ECDSA or RSA)"


def host_key_name(host: str, port: int) -> str:
    """The host field OpenSSH writes (and looks up) in known_hosts for host:port."""
    return host if port == 22 else f"[{host}]:{port}"


def parse_known_hosts(text: str) -> paramiko.HostKeys:
    """Parse known_hosts lines; raise ValueError on any line that is not a usable host key."""
    import paramiko

    keys = paramiko.HostKeys()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
        except (paramiko.hostkeys.InvalidHostKey, paramiko.SSHException, ValueError) as exc:
            raise ValueError(f"bad key data in {line[:40]!r}…") from exc
        if entry is None:
            raise ValueError(f"not a known_hosts line of a supported key type: {line[:40]!r}…")
        for name in entry.hostnames:
            keys.add(name, entry.key.get_name(), entry.key)
    if not keys.keys():
        raise ValueError("no host key line")
    return keys


def load_private_key(text: str) -> paramiko.PKey:
    """Parse an unencrypted private key; raise ValueError (NOT_A_PRIVATE_KEY) if it is none."""
    import paramiko

    for key_class in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return key_class.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError, TypeError):
            continue
    raise ValueError(NOT_A_PRIVATE_KEY)


def describe_key(key: paramiko.PKey) -> str:
    """How messages name a key: its type and fingerprint."""
    return f"{key.get_name()} {key.fingerprint}"
