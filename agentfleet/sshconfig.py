"""`agentfleet ssh-config`: the fleet as files plain OpenSSH (and so git) can use.

DIR/ssh_config has one Host block per agent, DIR/known_hosts the pinned host keys, and
DIR/keys/<agent> the operator keys (0600 in a 0700 directory). The config names absolute paths
so it works from any directory, e.g. through `Include` in ~/.ssh/config.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from agentfleet.endpoint import AgentEndpoint


@dataclass(frozen=True)
class SshFiles:
    """Where one fleet's OpenSSH files live."""

    directory: Path

    @property
    def config(self) -> Path:
        return self.directory / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.directory / "known_hosts"

    @property
    def keys(self) -> Path:
        return self.directory / "keys"

    def key(self, agent: str) -> Path:
        return self.keys / agent


def config_path(path: Path) -> str:
    """A path as an ssh_config argument: % is a token there, spaces need quotes."""
    text = str(path).replace("%", "%%")
    return f'"{text}"' if any(char.isspace() for char in text) else text


def render_ssh_config(agents: Iterable[AgentEndpoint], files: SshFiles, fleet: str) -> str:
    blocks = [f"# agentfleet: fleet {fleet}; rewritten by `agentfleet ssh-config`\n"]
    for agent in agents:
        blocks.append(
            f"Host {agent.name}\n"
            f"  HostName {agent.host}\n"
            f"  Port {agent.port}\n"
            f"  User {agent.user}\n"
            f"  IdentityFile {config_path(files.key(agent.name))}\n"
            "  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {config_path(files.known_hosts)}\n"
            "  StrictHostKeyChecking yes\n"
        )
    return "\n".join(blocks)


def render_known_hosts(agents: Iterable[AgentEndpoint]) -> str:
    return "".join(agent.known_hosts.strip() + "\n" for agent in agents)


def write_ssh_files(agents: Iterable[AgentEndpoint], files: SshFiles, fleet: str) -> None:
    """Write all three, private keys readable by their owner only."""
    agents = list(agents)
    for directory in (files.directory, files.keys):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)
    # Keys must never be committed by accident when DIR sits inside the project.
    _write(files.directory / ".gitignore", "*\n", 0o644)
    for agent in agents:
        _write(files.key(agent.name), agent.private_key.strip() + "\n", 0o600)
    _write(files.known_hosts, render_known_hosts(agents), 0o644)
    _write(files.config, render_ssh_config(agents, files, fleet), 0o644)


def _write(path: Path, text: str, mode: int) -> None:
    """Write text with mode from the first byte on (never briefly world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        os.fchmod(fd, mode)
        file.write(text)
