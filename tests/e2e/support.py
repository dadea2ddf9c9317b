"""Helpers for the end-to-end tests: Docker calls, the git server, a stack driven by the
Automation API. Fixtures that use them are in conftest.py."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import yaml
from pulumi import automation as auto

from agentfleet.sshkeys import host_key_name
from components.project import fleet_config_key

PASSPHRASE = "e2e-passphrase"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# What a Pulumi project of agentfleet is made of (the program imports agentfleet.contract: the copy
# carries its own, not whichever the virtualenv has installed); copies get their own stacks/ and state/.
PROJECT_FILES = ("Pulumi.yaml", "__main__.py", "agentfleet", "components", "cloud-init", "images")
REMOVE = {"container": ["rm", "-f", "-v"], "volume": ["volume", "rm", "-f"], "network": ["network", "rm"]}

def docker(*args: str, stdin: str | None = None, check: bool = True) -> str:
    completed = subprocess.run(["docker", *args], input=stdin, capture_output=True, text=True)
    if check and completed.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} failed: {completed.stderr.strip()}")
    return completed.stdout.strip()


# What marks the objects a test session makes beside its stacks (git servers, networks, peers):
# the session's process id, so a session cleans up only its own and those of sessions that died,
# and two sessions on one Docker daemon never remove each other's.
TEST_LABEL_KEY = "agentfleet.test"
TEST_LABEL = f"{TEST_LABEL_KEY}=e2e-{os.getpid()}"


def docker_objects(kind: str, label: str) -> list[str]:
    """Names of containers, volumes or networks carrying a label (e.g. agentfleet.stack=x)."""
    return list(labelled_objects(kind, label))


def labelled_objects(kind: str, label: str) -> dict[str, str]:
    """Name -> value of the label's key, of the containers, volumes or networks that carry the
    label (`key=value`, or `key` for any value)."""
    key = label.partition("=")[0]
    listing = {"container": ["ps", "-a"], "volume": ["volume", "ls"], "network": ["network", "ls"]}[kind]
    name = "{{.Names}}" if kind == "container" else "{{.Name}}"
    lines = docker(*listing, "--filter", f"label={label}", "--format", f'{name}\t{{{{.Label "{key}"}}}}').splitlines()
    return dict(line.split("\t", 1) for line in lines if line)


def session_alive(value: str) -> bool:
    """Whether the test session a TEST_LABEL value names (`e2e-<pid>`) still runs; a value
    without a process id (a session of older tests) is taken as running: it removes its own."""
    pid = value.rpartition("-")[2]
    return not pid.isdigit() or Path(f"/proc/{pid}").exists()


@dataclass
class GitServer:
    """sshd + bare repositories in a container on its own network, reached by agents at its
    address there, or (`published_on`) at a port Docker publishes on an address of this machine:
    how pods, whose traffic this machine forwards, reach it."""

    name: str
    network: str
    published_on: str | None = None

    @property
    def address(self) -> str:
        """Its IP on the test network: agents reach it there, and the host can check it resolves."""
        template = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        return docker("inspect", "-f", template, self.name)

    @property
    def endpoint(self) -> tuple[str, int]:
        if self.published_on is None:
            return self.address, 22
        return self.published_on, int(docker("port", self.name, "22/tcp").rsplit(":", 1)[1])

    @property
    def url(self) -> str:
        host, port = self.endpoint
        return f"ssh://git@{host}{'' if port == 22 else f':{port}'}/srv/git/app.git"

    @property
    def known_hosts_line(self) -> str:
        key = docker("exec", self.name, "cat", "/etc/ssh/ssh_host_ed25519_key.pub").split()
        return f"{host_key_name(*self.endpoint)} {key[0]} {key[1]}"

    def authorize(self, public_key: str) -> None:
        docker("exec", "-i", self.name, "sh", "-c", "cat >> /home/git/.ssh/authorized_keys",
               stdin=public_key.strip() + "\n")

    def git(self, *args: str) -> str:
        return docker("exec", "-u", "git", self.name, "git", "-C", "/srv/git/app.git", *args)

    def branch_authors(self) -> dict[str, str]:
        refs = self.git("for-each-ref", "--format=%(refname:short) %(authoremail)", "refs/heads")
        return dict(line.split(" ", 1) for line in refs.splitlines())

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False)
        docker("network", "rm", self.network, check=False)


@contextmanager
def listening_server(network: str, image: str, name: str, ports: tuple[int, ...]) -> Iterator[str]:
    """A container on `network` with sshd listening on `ports`, so a refused connection to it is
    the egress policy's and not a closed port; yields its address, removes it afterwards."""
    listen = " ".join(f"-p {port}" for port in ports)
    docker("run", "-d", "--name", name, "--network", network, "--label", TEST_LABEL,
           "--entrypoint", "/bin/sh", image, "-c",
           f"ssh-keygen -A -q && mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e {listen}")
    try:
        yield docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name)
    finally:
        docker("rm", "-f", name, check=False)


# The last commit of agentfleet 0.1, whose fleets were made of dynamic-provider resources: the
# upgrade test and the provider bench run it beside the current code.
LAST_DYNAMIC_COMMIT = "3a4ab13c8183ed8c66c6bc18d4dcbe7b09ee905b"


def project_at(commit: str, where: Path) -> Path:
    """The project's files as they were at `commit` in this clone's history (fetched from its
    origin when the clone is shallow), with empty stacks/ and state/."""
    def present() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", str(PROJECT_ROOT), "cat-file", "-e", f"{commit}^{{commit}}"],
                              capture_output=True, text=True)

    if present().returncode != 0:  # a shallow clone: ask where it came from for that one commit
        subprocess.run(["git", "-C", str(PROJECT_ROOT), "fetch", "--quiet", "origin", commit], capture_output=True)
    found = present()
    assert found.returncode == 0, f"this clone lacks commit {commit}: clone with history ({found.stderr.strip()})"
    archive = subprocess.run(["git", "-C", str(PROJECT_ROOT), "archive", "--format=tar", commit, *PROJECT_FILES],
                             capture_output=True, check=True).stdout
    where.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(where, filter="data")
    (where / "stacks").mkdir()
    (where / "state").mkdir()
    return where


def copy_code(project: Path) -> None:
    """This clone's code over whatever `project` holds of it (a project of another version keeps
    its stacks and state, as a team's does when it bumps its agentfleet)."""
    for name in PROJECT_FILES:
        target, source = project / name, PROJECT_ROOT / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)


def copy_project(copy: Path) -> Path:
    """A copy of the project in `copy` (created), with empty stacks/ and state/: stacks and
    state made by tests and benchmarks never touch the clone."""
    copy.mkdir(parents=True, exist_ok=True)
    copy_code(copy)
    (copy / "stacks").mkdir()
    (copy / "state").mkdir()
    return copy


def start_git_server(image: str, label: str = TEST_LABEL, timeout_s: float = 20.0,
                     publish_on: str | None = None) -> GitServer:
    """The git server container on a network of its own (its sshd also published on a free port
    of `publish_on`, if given); removed again if it does not start."""
    suffix = uuid.uuid4().hex[:6]
    server = GitServer(name=f"gitserver-{suffix}", network=f"agentfleet-e2e-git-{suffix}", published_on=publish_on)
    docker("network", "create", "--label", label, server.network)
    publish = ["--publish", f"{publish_on}::22"] if publish_on else []
    try:
        docker("run", "-d", "--name", server.name, "--network", server.network, "--label", label, *publish,
               "--entrypoint", "/bin/sh", image, "-c", GIT_SERVER_SCRIPT)
        deadline = time.monotonic() + timeout_s
        ready = ["docker", "exec", server.name, "test", "-e", "/run/gitserver-ready"]
        while subprocess.run(ready, capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"git server did not start in {timeout_s:g} s: {docker('logs', server.name, check=False)}")
            time.sleep(0.1)
    except BaseException:
        server.remove()
        raise
    return server


GIT_SERVER_SCRIPT = """set -e
useradd -m -s /usr/bin/git-shell git
install -d -o git -g git -m 700 /home/git/.ssh
install -o git -g git -m 600 /dev/null /home/git/.ssh/authorized_keys
git init -q --bare -b main /srv/git/app.git
cd /tmp && git clone -q /srv/git/app.git seed && cd seed
echo "shared project" > README && git add README
git -c user.name=Seed -c user.email=seed@example.com commit -q -m "initial commit"
git push -q origin HEAD:main && cd / && rm -rf /tmp/seed && chown -R git:git /srv/git
ssh-keygen -A -q && mkdir -p /run/sshd && touch /run/gitserver-ready
# Like a hosted git service, it takes a fleet's worth of simultaneous clones (sshd's default
# MaxStartups drops connections from the 11th unauthenticated one on).
exec /usr/sbin/sshd -D -e -o MaxStartups=256
"""


def engine_env(state: Path) -> dict[str, str]:
    """The Pulumi CLI's environment in the tests: a local file backend in `state`, the tests'
    passphrase, nothing fetched from the network."""
    return {
        "PULUMI_BACKEND_URL": f"file://{state}",
        "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
    }


def inline_stack(name: str, project: str, program: Any, work_dir: Path) -> auto.Stack:
    """A stack of an inline program (no project on disk), its state under `work_dir`."""
    (work_dir / "state").mkdir(exist_ok=True)
    return auto.create_or_select_stack(
        name, project_name=project, program=program,
        opts=auto.LocalWorkspaceOptions(work_dir=str(work_dir), secrets_provider="passphrase",
                                        env_vars=engine_env(work_dir / "state")))


class FleetStack:
    """One stack of the project copy, driven through the Automation API."""

    def __init__(self, project_dir: Path, name: str) -> None:
        self.project_dir = project_dir
        self.name = name
        self.env = engine_env(project_dir / "state")
        self.stack = auto.create_or_select_stack(
            name, work_dir=str(project_dir),
            opts=auto.LocalWorkspaceOptions(env_vars=self.env, secrets_provider="passphrase"),
        )

    @property
    def fleet_key(self) -> str:
        """Where this project's stack files keep the fleet (it follows the project's name)."""
        return fleet_config_key(self.project_dir / "Pulumi.yaml")

    @property
    def config_file(self) -> Path:
        return self.project_dir / "stacks" / f"Pulumi.{self.name}.yaml"

    def fleet(self) -> dict[str, Any]:
        """The fleet config as set_fleet last wrote it."""
        return yaml.safe_load(self.config_file.read_text())["config"][self.fleet_key]

    def set_fleet(self, fleet: dict[str, Any]) -> None:
        document = yaml.safe_load(self.config_file.read_text()) if self.config_file.exists() else {}
        document.setdefault("config", {})[self.fleet_key] = fleet
        self.config_file.write_text(yaml.safe_dump(document, sort_keys=False))

    def set_secret(self, key: str, value: str) -> None:
        """As a user does it: the value on stdin, never on the command line."""
        self.pulumi("config", "set", "--secret", key, stdin=value)

    def up(self) -> dict[str, Any]:
        result = self.stack.up(on_output=lambda _: None)
        return {key: value.value for key, value in result.outputs.items()}

    def outputs(self) -> dict[str, Any]:
        return {key: value.value for key, value in self.stack.outputs().items()}

    def pulumi(self, *args: str, stdin: str | None = None) -> str:
        """The Pulumi CLI as a user runs it in this project and stack."""
        return subprocess.run(["pulumi", *args, "--stack", self.name], input=stdin, text=True,
                              check=True, capture_output=True, cwd=self.project_dir,
                              env={**os.environ, **self.env}).stdout

    def export(self) -> str:
        """`pulumi stack export` as a user runs it (the Automation API's adds --show-secrets)."""
        return self.pulumi("stack", "export")

    def destroy(self) -> None:
        self.stack.destroy(on_output=lambda _: None)

    def discard(self) -> None:
        """Destroy, remove the stack, and whatever a failed create left behind."""
        try:
            self.destroy()
        finally:
            self.remove()
            for kind, remove in REMOVE.items():
                for name in docker_objects(kind, f"agentfleet.stack={self.name}"):
                    docker(*remove, name, check=False)

    def remove(self) -> None:
        self.stack.workspace.remove_stack(self.name, force=True)
        self.config_file.unlink(missing_ok=True)


def run_ok(client: Any, agent: str, command: str) -> str:
    """Run in the agent's workspace (where the client starts every command); demand success."""
    result = client.agent(agent).run(command, timeout=60)
    assert result.ok, f"{agent}: `{command}` exited {result.exit_status}: {result.stderr}"
    return result.stdout.strip()


Reading = TypeVar("Reading")


def last_reading(read: Callable[[], Reading], done: Callable[[Reading], bool], timeout_s: float,
                 poll_s: float = 0.5) -> Reading:
    """`read()` again until what it returned is `done` or `timeout_s` passed; the last reading, for
    the caller to assert on (so a timeout shows what was seen), where a fixed sleep would guess."""
    deadline = time.monotonic() + timeout_s
    while True:
        reading = read()
        if done(reading) or time.monotonic() > deadline:
            return reading
        time.sleep(poll_s)
