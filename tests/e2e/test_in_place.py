"""Changing a running agent in place, for real: a new `allow` entry, a rotated key and a new
identity reach the running container through `pulumi up` as an update (never a replace), with
the same container, the same endpoint and host key, and a shell started before still alive.

The target is a container on the test network listening (sshd) on 8080, so that every refusal
is the policy's and not a closed port. Only containers and networks the tests make are reached.
"""

from __future__ import annotations

import pytest

from agentfleet import Fleet
from components.keys import generate_ed25519
from tests.e2e.support import FleetStack, GitServer, docker

TARGET_SERVER = "ssh-keygen -A -q && mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e -p 8080"
AGENT = "mover"


@pytest.fixture(scope="module")
def target(git_server: GitServer, agent_image: str):
    name = f"target-{git_server.name}"
    docker("run", "-d", "--name", name, "--network", git_server.network, "--label", "agentfleet.test=e2e",
           "--entrypoint", "/bin/sh", agent_image, "-c", TARGET_SERVER)
    try:
        yield docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name)
    finally:
        docker("rm", "-f", name, check=False)


class Mover:
    """The stack of one agent whose config the tests change, and what they compare after."""

    def __init__(self, stack: FleetStack, git_server: GitServer) -> None:
        self.stack = stack
        self.git_server = git_server
        self.agent = {"name": AGENT, "identity": {"name": "Mover One", "email": "mover-1@fleet.test"},
                      "remote": git_server.url, "known_hosts": [git_server.known_hosts_line],
                      "credential": {"ssh_key": "moverKey"}}

    @property
    def container(self) -> str:
        return f"agentfleet-{self.stack.name}-{AGENT}"

    def container_id(self) -> str:
        return docker("inspect", "-f", "{{.Id}}", self.container)

    def configure(self, **changes) -> None:
        self.agent = {**self.agent, **changes}
        self.stack.set_fleet({"attach_networks": [self.git_server.network], "agents": [self.agent]})

    def update(self) -> dict:
        """Preview (which must plan no replacement), then `pulumi up`; returns the outputs."""
        preview = self.stack.stack.preview(on_output=lambda _: None)
        assert not {"replace", "create-replacement", "delete-replaced"} & set(preview.change_summary), preview.change_summary
        assert preview.change_summary.get("update", 0) >= 1, preview.change_summary
        return self.stack.up()

    def run(self, command: str):
        with Fleet.from_outputs(self.stack.outputs(), self.stack.name) as client:
            return client.agent(AGENT).run(command, timeout=60)

    def files_holding(self, text: str) -> list[str]:
        """Files in the container (as root, the whole disk but /proc, /sys, /dev) that contain text."""
        found = docker("exec", "-i", self.container, "sh", "-c",
                       'grep -rlsF -f /dev/stdin / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev || true',
                       stdin=text + "\n")
        return [line for line in found.splitlines() if line]


@pytest.fixture(scope="module")
def mover(git_server: GitServer, target: str, make_stack):
    private, public = generate_ed25519("mover-key-1")
    git_server.authorize(public)
    stack: FleetStack = make_stack("inplace")
    stack.set_secret("moverKey", private)
    fleet = Mover(stack, git_server)
    fleet.configure()
    outputs = stack.up()
    fleet.endpoint = outputs["agents"][AGENT]
    fleet.first_key = private
    return fleet


def reach(mover: Mover, address: str, port: int) -> bool:
    return mover.run(f"timeout 10 bash -c 'exec 3<>/dev/tcp/{address}/{port}'").ok


def test_allow_gains_an_entry_in_place_and_loses_it_again(mover: Mover, target: str):
    before = mover.container_id()
    shell = mover.run("nohup sleep 3600 >/dev/null 2>&1 & echo $!")
    assert shell.ok, shell.stderr
    pid = shell.stdout.strip()
    assert not reach(mover, target, 8080)

    mover.configure(allow=[f"{target}:8080"])
    outputs = mover.update()
    assert reach(mover, target, 8080)
    assert not reach(mover, target, 22)  # exactly what the entry names
    assert mover.container_id() == before
    assert outputs["agents"][AGENT] == mover.endpoint  # same endpoint, same pinned host key
    assert mover.run(f"kill -0 {pid}").ok, "the shell started before the update is gone"

    mover.configure(allow=[])
    mover.update()
    assert not reach(mover, target, 8080)
    assert mover.container_id() == before
    assert mover.run(f"kill -0 {pid}").ok


def test_a_rotated_key_replaces_the_old_one_in_place(mover: Mover):
    before = mover.container_id()
    private, public = generate_ed25519("mover-key-2")
    mover.git_server.authorize(public)
    mover.stack.set_secret("moverKey", private)
    mover.update()
    # The server forgets the first key: a push that works now used the new one.
    first_public = generate_public(mover.first_key)
    docker("exec", mover.git_server.name, "sed", "-i", f"\\|{first_public.split()[1]}|d", "/home/git/.ssh/authorized_keys")
    pushed = mover.run("git commit -q --allow-empty -m 'with the new key' && git push -q origin HEAD")
    assert pushed.ok, pushed.stderr
    assert mover.container_id() == before
    # A line of the key's body that is its own (the first line is the same for every ed25519 key).
    assert mover.files_holding(mover.first_key.strip().splitlines()[2]) == []
    assert "/home/agent/.ssh/id_remote" in mover.files_holding(private.strip().splitlines()[2])


def test_a_new_identity_lands_in_the_next_commit_in_place(mover: Mover):
    before = mover.container_id()
    mover.configure(identity={"name": "Mover Two", "email": "mover-2@fleet.test"})
    mover.update()
    made = mover.run("git commit -q --allow-empty -m 'as the new identity' && git log -1 --format='%an <%ae>'")
    assert made.ok, made.stderr
    assert made.stdout.strip() == "Mover Two <mover-2@fleet.test>"
    assert mover.container_id() == before


def generate_public(private: str) -> str:
    import io

    import paramiko

    key = paramiko.Ed25519Key.from_private_key(io.StringIO(private))
    return f"{key.get_name()} {key.get_base64()}"
