"""End-to-end fixtures: the real Pulumi engine (Automation API, local file backend, passphrase
secrets), the real Docker daemon, real sshd and git. A git server container stands in for GitHub.

Each session works on a copy of the project in a temporary directory, so stacks and state never
touch the clone. Fixtures clean up what they made, also when a test fails.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from components.image import agent_image_tag
from tests.e2e.support import GIT_SERVER_SCRIPT, REMOVE, FleetStack, GitServer, docker, docker_objects

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROJECT_FILES = ("Pulumi.yaml", "__main__.py", "components", "cloud-init", "images")


@pytest.fixture(scope="session")
def agent_image() -> str:
    tag = agent_image_tag()
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode != 0:
        pytest.fail(f"the agent image {tag} is missing: run scripts/setup (make test does)")
    return tag


@pytest.fixture(scope="session")
def git_server(agent_image: str) -> Iterator[GitServer]:
    suffix = uuid.uuid4().hex[:6]
    server = GitServer(name=f"gitserver-{suffix}", network=f"agentfleet-e2e-git-{suffix}")
    docker("network", "create", "--label", "agentfleet.test=e2e", server.network)
    docker("run", "-d", "--name", server.name, "--network", server.network, "--label", "agentfleet.test=e2e",
           "--entrypoint", "/bin/sh", agent_image, "-c", GIT_SERVER_SCRIPT)
    try:
        for _ in range(200):
            if subprocess.run(["docker", "exec", server.name, "test", "-e", "/run/gitserver-ready"]).returncode == 0:
                break
            subprocess.run(["sleep", "0.1"])
        else:
            pytest.fail(f"git server did not start: {docker('logs', server.name, check=False)}")
        yield server
    finally:
        docker("rm", "-f", server.name, check=False)
        docker("network", "rm", server.network, check=False)


@pytest.fixture(scope="session")
def project_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("project")
    for name in PROJECT_FILES:
        source = PROJECT_ROOT / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, copy / name)
    (copy / "stacks").mkdir()
    (copy / "state").mkdir()
    return copy


@pytest.fixture(scope="session")
def make_stack(project_dir: Path) -> Iterator[Any]:
    made: list[FleetStack] = []

    def make(prefix: str) -> FleetStack:
        stack = FleetStack(project_dir, f"{prefix}-{uuid.uuid4().hex[:6]}")
        made.append(stack)
        return stack

    yield make
    for stack in made:
        try:
            stack.destroy()
        finally:
            stack.remove()
            for kind, remove in REMOVE.items():
                for name in docker_objects(kind, f"agentfleet.stack={stack.name}"):
                    docker(*remove, name, check=False)
