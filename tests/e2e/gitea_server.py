"""A real Gitea for the forge tests, built by setup (scripts/lib/gitea.sh) and run on this machine.

Its web server and REST API listen on loopback only (the provider and the CLI run here); its own
SSH server listens on the gateway address of a Docker network of the test session, which agents
attach to: the host's end of a local bridge, reached by nothing outside this machine. Its store is
SQLite in a temporary directory. The fixture makes an admin user, an API token and a repository
with one commit on `main`; the token stays in this process (tests hand it to a stack on stdin).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from agentfleet.forge import Forge, ForgeClient
from agentfleet.sshkeys import host_key_name
from tests.e2e.support import TEST_LABEL, docker

GITEA_HOME = Path(os.environ.get("AGENTFLEET_HOME", Path.home() / ".agentfleet")) / "gitea" / "current"
ADMIN = "forge-admin"
ACCESS_TOKEN = re.compile(r"[0-9a-f]{40}")  # what Gitea hands out
REPOSITORY = "app"
SSH_USER = "git"


class GiteaError(AssertionError):
    """Gitea did not start or refused a setup step; the message carries its log's last lines."""


def free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def wait_until(what: str, ready: Callable[[], Optional[str]], timeout_s: float, poll_s: float = 0.2,
               hint: str = "") -> None:
    """`ready` returns None once ready, else the state it saw (named in the timeout's message)."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = ready()
        if state is None:
            return
        if time.monotonic() > deadline:
            raise GiteaError(f"{what}: not ready after {timeout_s:g} s (last: {state}){f'; {hint}' if hint else ''}")
        time.sleep(poll_s)


@dataclass
class GiteaServer:
    """One Gitea process; `start()` makes everything, `stop()` removes it (safe twice)."""

    work: Path
    network: str = field(default_factory=lambda: f"agentfleet-e2e-forge-{secrets.token_hex(3)}")
    http_port: int = 0
    ssh_address: str = ""
    ssh_port: int = 0
    token: str = field(default="", repr=False)
    process: Optional[subprocess.Popen[bytes]] = None

    @property
    def binary(self) -> Path:
        return GITEA_HOME / "bin" / "gitea"

    @property
    def config(self) -> Path:
        return self.work / "app.ini"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/api/v1"

    @property
    def repository(self) -> str:
        return f"{ADMIN}/{REPOSITORY}"

    @property
    def url(self) -> str:
        """The repository's SSH clone URL, as agents use it."""
        return f"ssh://{SSH_USER}@{self.ssh_address}:{self.ssh_port}/{self.repository}.git"

    @property
    def known_hosts_line(self) -> str:
        key_type, key = (self.work / "data" / "ssh" / "gitea.ed25519.pub").read_text().split()[:2]
        return f"{host_key_name(self.ssh_address, self.ssh_port)} {key_type} {key}"

    @property
    def forge(self) -> Forge:
        return Forge("gitea", self.api, self.repository, self.token)

    def client(self) -> ForgeClient:
        return ForgeClient(self.forge)

    def start(self) -> None:
        if not (GITEA_HOME / ".complete").exists():
            raise GiteaError(f"Gitea is not built ({GITEA_HOME}): run scripts/setup (its `all` builds it)")
        try:
            self._network()
            self._configure()
            self._gitea("migrate")
            self.token = self._user(ADMIN, "all", "--admin")
            self.process = subprocess.Popen([str(self.binary), "web", "--config", str(self.config)],
                                            cwd=self.work, stdin=subprocess.DEVNULL,
                                            stdout=(self.work / "web.log").open("wb"), stderr=subprocess.STDOUT,
                                            env=self._env())
            wait_until("Gitea's API", self._api_state, 60, hint=f"its log: {self.work / 'web.log'}")
            wait_until("Gitea's SSH server", self._ssh_state, 30)
            self._repository()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        docker("network", "rm", self.network, check=False)

    def call(self, method: str, path: str, body: Optional[dict[str, Any]] = None) -> Any:
        """A REST call as the admin (for what the tests check or break on the forge)."""
        request = urllib.request.Request(self.api + path, method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"token {self.token}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def deploy_keys(self) -> list[dict[str, Any]]:
        return self.call("GET", f"/repos/{self.repository}/keys")

    def branches(self) -> set[str]:
        return {branch["name"] for branch in self.call("GET", f"/repos/{self.repository}/branches")}

    def add_user(self, name: str) -> str:
        """A machine user and its API token (scopes an agent's forge user needs: its own SSH keys and
        reading the repository); the token stays in this process."""
        return self._user(name, "write:user,read:repository")

    def grant(self, user: str, permission: str = "write") -> None:
        self.call("PUT", f"/repos/{self.repository}/collaborators/{user}", {"permission": permission})

    def user_keys(self, user: str) -> list[dict[str, Any]]:
        return self.call("GET", f"/users/{user}/keys")

    def pushers(self) -> dict[str, set[str]]:
        """Per ref of the repository, who Gitea's activity feed says pushed to it."""
        seen: dict[str, set[str]] = {}
        for activity in self.call("GET", f"/repos/{self.repository}/activities/feeds?limit=50"):
            if activity["op_type"] == "commit_repo":
                seen.setdefault(activity["ref_name"], set()).add(activity["act_user"]["login"])
        return seen

    def _env(self) -> dict[str, str]:
        # Gitea keeps its own git home under its data directory; nothing of this machine's user.
        return {"PATH": os.environ["PATH"], "HOME": str(self.work / "home"), "GITEA_WORK_DIR": str(self.work)}

    def _network(self) -> None:
        docker("network", "create", "--label", TEST_LABEL, self.network)
        self.ssh_address = docker("network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", self.network)

    def _configure(self) -> None:
        (self.work / "data" / "ssh").mkdir(parents=True)
        (self.work / "home").mkdir()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gitea-test",
                        "-f", str(self.work / "data" / "ssh" / "gitea.ed25519")], check=True)
        self.http_port = free_port("127.0.0.1")
        self.ssh_port = free_port(self.ssh_address)
        user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
        self.config.write_text(GITEA_CONFIG.format(
            work=self.work, share=GITEA_HOME / "share", user=user, http_port=self.http_port,
            ssh_address=self.ssh_address, ssh_port=self.ssh_port, ssh_user=SSH_USER,
            secret_key=secrets.token_hex(32), internal_token=secrets.token_hex(48)))

    def _gitea(self, *args: str) -> str:
        done = subprocess.run([str(self.binary), *args, "--config", str(self.config)], cwd=self.work,
                              capture_output=True, text=True, env=self._env(), timeout=120)
        if done.returncode != 0:
            raise GiteaError(f"gitea {args[0]} failed ({done.returncode}): {(done.stderr or done.stdout)[-2000:]}")
        return done.stdout

    def _api_state(self) -> Optional[str]:
        if self.process is not None and self.process.poll() is not None:
            log = (self.work / "web.log").read_text(errors="replace")[-2000:]
            raise GiteaError(f"gitea web exited with {self.process.returncode}: {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/api/healthz", timeout=2) as response:
                return None if response.status == 200 else f"HTTP {response.status}"
        except (urllib.error.URLError, OSError) as error:
            return str(error)

    def _ssh_state(self) -> Optional[str]:
        try:
            with socket.create_connection((self.ssh_address, self.ssh_port), timeout=2) as connection:
                return None if connection.recv(4).startswith(b"SSH-") else "no SSH banner"
        except OSError as error:
            return str(error)

    def _user(self, name: str, scopes: str, *extra: str) -> str:
        """Make a user with `gitea admin` and return its new API token: the one line of the output
        that is a token (Gitea's CLI may also print log lines, e.g. that it runs as root)."""
        self._gitea("admin", "user", "create", *extra, "--username", name, "--email", f"{name}@forge.test",
                    "--random-password", "--must-change-password=false")
        said = self._gitea("admin", "user", "generate-access-token", "--username", name,
                           "--token-name", "agentfleet-tests", "--scopes", scopes, "--raw")
        tokens = [line for line in said.split() if ACCESS_TOKEN.fullmatch(line)]
        if len(tokens) != 1:
            raise GiteaError(f"gitea printed {len(tokens)} tokens for {name}, expected one")
        return tokens[0]

    def _repository(self) -> None:
        self.call("POST", "/user/repos", {"name": REPOSITORY, "auto_init": True, "default_branch": "main",
                                          "readme": "Default", "private": True})


GITEA_CONFIG = """\
APP_NAME = agentfleet test forge
RUN_USER = {user}
RUN_MODE = prod
WORK_PATH = {work}
I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true

[server]
PROTOCOL = http
HTTP_ADDR = 127.0.0.1
HTTP_PORT = {http_port}
ROOT_URL = http://127.0.0.1:{http_port}/
LOCAL_ROOT_URL = http://127.0.0.1:{http_port}/
STATIC_ROOT_PATH = {share}
APP_DATA_PATH = {work}/data
OFFLINE_MODE = true
LFS_START_SERVER = false
DISABLE_SSH = false
START_SSH_SERVER = true
BUILTIN_SSH_SERVER_USER = {ssh_user}
SSH_DOMAIN = {ssh_address}
SSH_LISTEN_HOST = {ssh_address}
SSH_PORT = {ssh_port}
SSH_LISTEN_PORT = {ssh_port}
SSH_SERVER_HOST_KEYS = ssh/gitea.ed25519

[database]
DB_TYPE = sqlite3
PATH = {work}/data/gitea.db

[repository]
ROOT = {work}/repositories
DEFAULT_BRANCH = main

[security]
INSTALL_LOCK = true
SECRET_KEY = {secret_key}
INTERNAL_TOKEN = {internal_token}

[service]
DISABLE_REGISTRATION = true

[oauth2]
ENABLED = false

[actions]
ENABLED = false

[mailer]
ENABLED = false

[cron]
ENABLED = false

[log]
MODE = console
LEVEL = Info
"""
