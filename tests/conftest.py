"""Shared fixtures: a throwaway OpenSSH server standing in for a fleet's agents.

`local_sshd` runs the real /usr/sbin/sshd as root on 127.0.0.1, two free ports (one per
agent), its own config, host key and authorized_keys in a temp dir. Each agent logs in as root
with its own ed25519 key; the key's `environment=` options give each agent its own HOME (git
identity, workspace) and a PATH whose first entry holds test stubs, so nothing of the real
root account is read or written. Tests that use it are real-sshd tests and are never skipped:
a missing sshd fails them with the fix.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

AGENTS = ("agent-1", "agent-2")
READY_TIMEOUT = 15.0
READY_POLL = 0.05
PRIVSEP_DIR = Path("/run/sshd")  # compiled into Debian's sshd; it refuses to start without it


def _tool(name: str, package: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        pytest.fail(f"{name} not found: install {package} (`apt-get install -y {package}`)")
    return found


@dataclass(frozen=True)
class KeyPair:
    private: str
    public: str  # "ssh-ed25519 AAAA... comment"
    path: Path


@pytest.fixture(scope="session")
def make_key(tmp_path_factory: pytest.TempPathFactory):
    """Generate a fresh ed25519 key pair with the real ssh-keygen."""
    keygen = _tool("ssh-keygen", "openssh-client")
    directory = tmp_path_factory.mktemp("keys")
    counter = iter(range(10**6))

    def make(comment: str = "test") -> KeyPair:
        path = directory / f"key{next(counter)}"
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
        return KeyPair(path.read_text(), path.with_suffix(".pub").read_text().strip(), path)

    return make


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_banner(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until sshd answers with its SSH banner on port."""
    deadline = time.monotonic() + READY_TIMEOUT
    last = "no attempt yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"sshd exited with {process.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(64).startswith(b"SSH-"):
                    return
                last = "connected but got no SSH banner"
        except OSError as exc:
            last = str(exc)
        time.sleep(READY_POLL)
    pytest.fail(
        f"sshd did not answer on 127.0.0.1:{port} within {READY_TIMEOUT:g} s "
        f"(last: {last}); its log:\n{log.read_text()}"
    )


@dataclass(frozen=True)
class LocalSshd:
    """The running server and everything needed to describe it as stack outputs."""

    root: Path
    host_key: KeyPair
    ports: dict[str, int]
    keys: dict[str, KeyPair]
    homes: dict[str, Path]
    stub_bin: Path
    remote: Path  # a bare repository every agent's workspace is cloned from

    def known_hosts(self, agent: str, key: KeyPair | None = None) -> str:
        kind, blob = (key or self.host_key).public.split()[:2]
        return f"[127.0.0.1]:{self.ports[agent]} {kind} {blob}"

    def identity(self, agent: str) -> dict[str, str]:
        return {"name": f"Agent {agent[-1]}", "email": f"{agent}@example.com"}

    def agent_outputs(self, agent: str) -> dict[str, object]:
        port = self.ports[agent]
        return {
            "backend": "docker",
            "host": "127.0.0.1",
            "port": port,
            "user": "root",
            "known_hosts": self.known_hosts(agent),
            "identity": self.identity(agent),
            "remote": f"ssh://root@127.0.0.1:{port}{self.remote}",
            "branch": f"agent/{agent}",
            "workspace": str(self.homes[agent] / "workspace"),
            "remote_public_key": self.keys[agent].public,
            "ssh_config": f"Host {agent}\n  HostName 127.0.0.1\n  Port {port}\n  User root\n",
        }

    def outputs(self) -> dict[str, object]:
        """Outputs in the shape `pulumi stack output --json --show-secrets` prints."""
        return {
            "agents": {agent: self.agent_outputs(agent) for agent in AGENTS},
            "agent_private_keys": {agent: self.keys[agent].private for agent in AGENTS},
        }


def _prepare_agent_home(home: Path, sshd: LocalSshd, agent: str) -> None:
    """What cloud-init does for an agent: git identity, remote credentials, workspace clone."""
    git = _tool("git", "git")
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(parents=True, mode=0o700)
    key_file = ssh_dir / "id_ed25519"
    key_file.write_text(sshd.keys[agent].private)
    key_file.chmod(0o600)
    (ssh_dir / "known_hosts").write_text(sshd.known_hosts(agent) + "\n")
    (ssh_dir / "config").write_text(
        f"IdentityFile {key_file}\nIdentitiesOnly yes\nUserKnownHostsFile {ssh_dir / 'known_hosts'}\n"
        "StrictHostKeyChecking yes\nBatchMode yes\n"
    )
    ident = sshd.identity(agent)
    env = {**os.environ, "HOME": str(home)}
    for key, value in (("user.name", ident["name"]), ("user.email", ident["email"])):
        subprocess.run([git, "config", "--global", key, value], env=env, check=True)
    workspace = home / "workspace"
    subprocess.run([git, "clone", "-q", str(sshd.remote), str(workspace)], env=env, check=True)
    remote_url = sshd.agent_outputs(agent)["remote"]
    subprocess.run([git, "-C", str(workspace), "remote", "set-url", "origin", remote_url], check=True)


def _make_remote(path: Path) -> None:
    git = _tool("git", "git")
    seed = path.with_name("seed")
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Seed",
        "GIT_AUTHOR_EMAIL": "seed@example.com",
        "GIT_COMMITTER_NAME": "Seed",
        "GIT_COMMITTER_EMAIL": "seed@example.com",
    }
    subprocess.run([git, "init", "-q", "-b", "main", str(seed)], check=True)
    (seed / "README").write_text("seed\n")
    subprocess.run([git, "-C", str(seed), "add", "README"], check=True)
    subprocess.run([git, "-C", str(seed), "commit", "-q", "-m", "seed"], env=env, check=True)
    subprocess.run([git, "clone", "-q", "--bare", str(seed), str(path)], check=True)


@pytest.fixture(scope="session")
def local_sshd(tmp_path_factory: pytest.TempPathFactory, make_key) -> Iterator[LocalSshd]:
    """A real sshd on 127.0.0.1 with one port, key and HOME per agent; stopped at the end."""
    sshd_bin = _tool("sshd", "openssh-server")
    if os.geteuid() != 0:
        pytest.fail("the throwaway sshd logs agents in as root, so these tests must run as root")
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    root = tmp_path_factory.mktemp("sshd")
    stub_bin = root / "bin"
    stub_bin.mkdir()
    sshd = LocalSshd(
        root=root,
        host_key=make_key("host"),
        ports={agent: _free_port() for agent in AGENTS},
        keys={agent: make_key(f"{agent}@agentfleet") for agent in AGENTS},
        homes={agent: root / "home" / agent for agent in AGENTS},
        stub_bin=stub_bin,
        remote=root / "srv" / "app.git",
    )
    _make_remote(sshd.remote)
    authorized = []
    for agent in AGENTS:
        _prepare_agent_home(sshd.homes[agent], sshd, agent)
        home = sshd.homes[agent]
        env = ",".join(
            f'environment="{name}={value}"'
            for name, value in (
                ("HOME", home),
                ("PATH", f"{stub_bin}:/usr/bin:/bin"),
                # OpenSSH reads ~/.ssh from the passwd entry (/root), not $HOME: point git at it.
                ("GIT_SSH_COMMAND", f"ssh -F {home}/.ssh/config"),
            )
        )
        authorized.append(f"{env} {sshd.keys[agent].public}")
    (root / "authorized_keys").write_text("\n".join(authorized) + "\n")
    config = root / "sshd_config"
    config.write_text(
        "".join(f"Port {port}\n" for port in sshd.ports.values())
        + f"""ListenAddress 127.0.0.1
HostKey {sshd.host_key.path}
PidFile none
AuthorizedKeysFile {root / "authorized_keys"}
PermitRootLogin prohibit-password
PermitUserEnvironment yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxStartups 50
MaxSessions 50
LogLevel INFO
"""
    )
    log = root / "sshd.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sshd_bin, "-D", "-e", "-f", str(config)], stdout=log_file, stderr=log_file
        )
    try:
        for port in sshd.ports.values():
            _wait_for_banner(port, process, log)
        yield sshd
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def outputs_file(tmp_path: Path, local_sshd: LocalSshd) -> Path:
    """The local sshd's outputs written as a JSON file, as `--outputs FILE` expects."""
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(local_sshd.outputs()))
    return path
