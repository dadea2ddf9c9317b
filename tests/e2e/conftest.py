"""End-to-end fixtures: the real Pulumi engine (Automation API, local file backend, passphrase
secrets), the real Docker daemon, real sshd and git. A git server container stands in for GitHub.

Each session works on a copy of the project in a temporary directory, so stacks and state never
touch the clone. Fixtures clean up what they made, also when a test fails.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from components.image import agent_image_tag
from tests.e2e.gitea_server import GiteaServer
from tests.e2e.remote_hosts import RemoteHosts, started_rig
from tests.e2e.support import (
    REMOVE,
    TEST_LABEL,
    TEST_LABEL_KEY,
    FleetStack,
    GitServer,
    copy_project,
    docker,
    labelled_objects,
    session_alive,
    start_git_server,
)
from tests.kubecluster.host_state import HostState
from tests.shared_paths import SHARED_PATHS


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that restart the Docker daemon run last: a restart stops every container without a
    restart policy, such as the session's git server."""
    items.sort(key=lambda item: item.get_closest_marker("restarts_docker") is not None)


def remove_test_objects(ours: bool) -> None:
    """This session's objects (`ours`), else those of sessions that no longer run."""
    for kind, remove in REMOVE.items():  # containers first: a network in use cannot go
        for name, value in labelled_objects(kind, TEST_LABEL_KEY).items():
            if (value == TEST_LABEL.partition("=")[2]) if ours else not session_alive(value):
                docker(*remove, name, check=False)


@pytest.fixture(scope="session", autouse=True)
def no_leftovers() -> Iterator[None]:
    """A run killed before its teardown leaves its git server and networks behind, and Docker has
    room for about thirty networks: remove those of dead sessions first, and this session's again
    last, for a network a fixture could not remove while a container still used it. A session
    that still runs beside this one keeps its own."""
    remove_test_objects(ours=False)
    yield
    remove_test_objects(ours=True)


@pytest.fixture(scope="session")
def agent_image() -> str:
    tag = agent_image_tag()
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode != 0:
        pytest.fail(f"the agent image {tag} is missing: run scripts/setup (make test does)")
    return tag


@pytest.fixture(scope="session")
def git_server(agent_image: str) -> Iterator[GitServer]:
    server = start_git_server(agent_image)
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def gitea(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GiteaServer]:
    """A real Gitea (tests/e2e/gitea_server.py): API on loopback, SSH on a test network's gateway."""
    server = GiteaServer(tmp_path_factory.mktemp("gitea"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def project_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(tmp_path_factory.mktemp("project"))


@pytest.fixture(scope="module")
def make_stack(project_dir: Path) -> Iterator[Any]:
    """Stacks for one test module, destroyed when it ends: a session's worth of fleets at once would
    hold a Docker network each, and an engine has room for about thirty."""
    made: list[FleetStack] = []

    def make(prefix: str) -> FleetStack:
        stack = FleetStack(project_dir, f"{prefix}-{uuid.uuid4().hex[:6]}")
        made.append(stack)
        return stack

    yield make
    for stack in made:
        stack.discard()


@pytest.fixture(scope="session")
def host_unchanged() -> Iterator[HostState]:
    """The host as the run found it (iptables but Docker's, nft tables, sysctls, mounts, cgroups,
    node paths), captured before the first fixture that changes it (the Kubernetes cluster, the
    remote-host rig) and compared once, when the session ends: those fixtures depend on this one,
    so they are all gone by then, whatever order they came and went in and whatever paths they
    shared (tests/shared_paths.py)."""
    before = HostState.capture()
    yield before
    changed = before.differences(HostState.capture())
    left = SHARED_PATHS.pending()
    problems = changed + [f"{path} still holds changes of {owners}" for path, owners in left.items()]
    assert not problems, "the test run left the host changed:\n" + "\n".join(problems)


@pytest.fixture(scope="session")
def remote_hosts(host_unchanged: HostState) -> Iterator[RemoteHosts]:
    """Two remote Docker hosts on this machine (network namespaces, each with its own dockerd
    and sshd; see remote_hosts.py), removed at the end of the session."""
    with started_rig(RemoteHosts(2)) as rig:
        yield rig
    print(f"\nremote hosts: {rig.count} ready in {rig.timings['started']:.1f} s, removed in {rig.timings['removed']:.1f} s")

