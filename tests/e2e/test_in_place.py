"""Changing a running agent in place, for real: a new `allow` entry, a rotated key (ssh remote),
a rotated token (https remote) and a new identity reach the running container through
`pulumi up` as an update (never a replace), with the same container, the same endpoint and host
key, and a shell started before still alive; the old credential is gone from the container.

The target is a container on the test network listening (sshd) on 8080, so that every refusal
is the policy's and not a closed port. Only containers and networks the tests make are reached.
"""

from __future__ import annotations

import time

import pytest

from agentfleet import Fleet
from components.keys import generate_ed25519
from tests.e2e.support import PROJECT_ROOT, TEST_LABEL, FleetStack, GitServer, docker, listening_server

AGENT = "mover"


@pytest.fixture(scope="module")
def target(git_server: GitServer, agent_image: str):
    with listening_server(git_server.network, agent_image, f"target-{git_server.name}", (8080,)) as address:
        yield address


class Mover:
    """The stack of one agent whose config the tests change, and what they compare after."""

    def __init__(self, stack: FleetStack, network: str, agent: dict) -> None:
        self.stack = stack
        self.network = network
        self.agent = agent
        self.name = agent["name"]

    @property
    def container(self) -> str:
        return f"agentfleet-{self.stack.name}-{self.name}"

    def container_id(self) -> str:
        return docker("inspect", "-f", "{{.Id}}", self.container)

    def configure(self, **changes) -> None:
        self.agent = {**self.agent, **changes}
        self.stack.set_fleet({"attach_networks": [self.network], "agents": [self.agent]})

    def update(self) -> dict:
        """Preview (which must plan no replacement), then `pulumi up`; returns the outputs."""
        preview = self.stack.stack.preview(on_output=lambda _: None)
        assert not {"replace", "create-replacement", "delete-replaced"} & set(preview.change_summary), preview.change_summary
        assert preview.change_summary.get("update", 0) >= 1, preview.change_summary
        return self.stack.up()

    def run(self, command: str):
        with Fleet.from_outputs(self.stack.outputs(), self.stack.name) as client:
            return client.agent(self.name).run(command, timeout=60)

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
    fleet = Mover(stack, git_server.network, {
        "name": AGENT, "identity": {"name": "Mover One", "email": "mover-1@fleet.test"},
        "remote": git_server.url, "known_hosts": [git_server.known_hosts_line], "credential": {"ssh_key": "moverKey"}})
    fleet.git_server = git_server
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
    assert mover.run("git ls-remote -q origin").ok
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


HTTPS_SETUP = """set -e
git init -q --bare -b main /srv/git/app.git
git -C /srv/git/app.git config http.receivepack true
cd /tmp && git init -q -b main seed && cd seed
git -c user.name=Seed -c user.email=seed@example.com commit -q --allow-empty -m seed
git push -q /srv/git/app.git HEAD:main
"""


@pytest.fixture(scope="module")
def forge(git_server: GitServer, agent_image: str):
    """(name, address) of the HTTPS git server, on the test network."""
    name = f"forge-{git_server.name}"
    docker("run", "-d", "--name", name, "--network", git_server.network, "--label", TEST_LABEL,
           "--entrypoint", "sleep", agent_image, "infinity")
    try:
        docker("exec", name, "sh", "-c", HTTPS_SETUP)
        docker("cp", str(PROJECT_ROOT / "tests" / "e2e" / "https_git_server.py"), f"{name}:/srv/https_git_server.py")
        docker("exec", "-i", name, "sh", "-c", "cat >/srv/tokens", stdin="token-one-1111\n")
        docker("exec", "-d", name, "sh", "-c", "python3 /srv/https_git_server.py >/srv/log 2>&1")
        for _ in range(100):
            if docker("exec", name, "sh", "-c", "test -e /srv/ready && echo yes || true") == "yes":
                break
            time.sleep(0.1)
        yield name, docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name)
    finally:
        docker("rm", "-f", name, check=False)


def test_a_rotated_token_replaces_the_old_one_in_place(forge, git_server: GitServer, make_stack):
    name, address = forge
    stack: FleetStack = make_stack("token")
    stack.set_secret("forgeToken", "token-one-1111")
    fetcher = Mover(stack, git_server.network, {
        "name": "fetcher", "identity": {"name": "Fetcher", "email": "fetcher@fleet.test"},
        "remote": f"https://{address}/app.git", "credential": {"https_token": "forgeToken"}})
    fetcher.configure()
    stack.up()
    # The forge's certificate is the test's own: the agent's root trusts it (its first clone,
    # before that, failed and left the workspace empty).
    certificate = docker("exec", name, "cat", "/srv/tls/cert.pem")
    docker("exec", "-i", fetcher.container, "sh", "-c",
           "cat >/usr/local/share/ca-certificates/forge.crt && update-ca-certificates >/dev/null", stdin=certificate + "\n")
    cloned = fetcher.run(f"git clone -q https://{address}/app.git . && git checkout -qb agent/fetcher")
    assert cloned.ok, cloned.stderr
    pushed = fetcher.run("git commit -q --allow-empty -m one && git push -q origin HEAD")
    assert pushed.ok, pushed.stderr
    before = fetcher.container_id()

    docker("exec", "-i", name, "sh", "-c", "cat >/srv/tokens", stdin="token-two-2222\n")
    assert not fetcher.run("git push -q origin HEAD:refs/heads/refused").ok  # the old token is refused now
    stack.set_secret("forgeToken", "token-two-2222")
    fetcher.update()
    pushed = fetcher.run("git commit -q --allow-empty -m two && git push -q origin HEAD")
    assert pushed.ok, pushed.stderr
    assert fetcher.container_id() == before
    assert fetcher.files_holding("token-one-1111") == []
    assert "/home/agent/.git-credentials" in fetcher.files_holding("token-two-2222")
