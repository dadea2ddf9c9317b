"""A team's fleet in its own repository, as a team makes one: the wheel built from this checkout,
installed into fresh virtualenvs in a temporary directory, `agentfleet new`, `pulumi up` (two
Docker agents), `agentfleet exec`, `pulumi destroy`, leaving nothing; in both flavours (a Python
program and a YAML one). Then the version bump: a project made by the previous version keeps its
agents when the pin is raised and `pulumi up` runs. The real engine, Docker, sshd and git; the
project's processes see none of this checkout (its scripts/bin is off PATH, no PYTHONPATH).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentfleet import __version__
from tests.e2e.support import PROJECT_ROOT, docker, docker_objects, engine_env

PREVIOUS = "0.4.0"  # the version before this one: what the version bump starts from
AGENTS = ("agent-1", "agent-2")
SESSION = f"pkg{os.getpid()}"


def run(argv: list[str | Path], cwd: Path, env: dict[str, str] | None = None, timeout: float = 900) -> str:
    """stdout of argv; a failure shows everything it said."""
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, argv[:4]))} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def build_wheel(version: str, out: Path) -> Path:
    """`pip wheel` of this checkout; for another version, of a copy with that __version__."""
    source = PROJECT_ROOT
    if version != __version__:
        source = out / "source"
        listed = run(["git", "ls-files", "-co", "--exclude-standard", "-z"], PROJECT_ROOT).split("\0")
        for relative in filter(None, listed):
            if (PROJECT_ROOT / relative).is_file():
                (source / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(PROJECT_ROOT / relative, source / relative)
        init = source / "agentfleet" / "__init__.py"
        init.write_text(init.read_text().replace(f'__version__ = "{__version__}"', f'__version__ = "{version}"'))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, source], out)
    (wheel,) = out.glob(f"agentfleet-{version}-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where pip finds agentfleet: this checkout's wheel and the previous version's."""
    out = tmp_path_factory.mktemp("wheels")
    for version in (__version__, PREVIOUS):
        build_wheel(version, tmp_path_factory.mktemp(f"build-{version}")).rename(
            out / f"agentfleet-{version}-py3-none-any.whl")
    return out


def outside_env() -> dict[str, str]:
    """This environment without the checkout: its launchers off PATH, nothing on PYTHONPATH."""
    ours = str(PROJECT_ROOT)
    path = [p for p in os.environ["PATH"].split(os.pathsep) if not p.startswith(ours)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AGENTFLEET_PROJECT", "VIRTUAL_ENV")}
    return {**env, "PATH": os.pathsep.join(path)}


def virtualenv(where: Path, wheels: Path, *requirements: str) -> Path:
    """A fresh virtualenv with the requirements installed (agentfleet from `wheels`); its bin/."""
    run([sys.executable, "-m", "venv", where], where.parent)
    run([where / "bin" / "pip", "install", "-q", "--find-links", wheels, *requirements], where.parent, outside_env())
    return where / "bin"


@dataclass
class TeamProject:
    """A scaffolded project with its own virtualenv (venv/, from its requirements.txt) and stack."""

    directory: Path
    stack: str
    state: Path

    @property
    def env(self) -> dict[str, str]:
        env = outside_env()
        return {**env, **engine_env(self.state), "AGENTFLEET_STACK": self.stack,
                "PATH": os.pathsep.join([str(self.directory / "venv" / "bin"), env["PATH"]])}

    def __call__(self, *argv: str | Path, timeout: float = 900) -> str:
        return run(list(argv), self.directory, self.env, timeout)

    def install(self, wheels: Path) -> None:
        """What the project's README says: the virtualenv from requirements.txt (the pinned agentfleet)."""
        virtualenv(self.directory / "venv", wheels, "-r", str(self.directory / "requirements.txt"))

    def objects(self) -> list[str]:
        label = f"agentfleet.stack={self.stack}"
        return [name for kind in ("container", "volume", "network") for name in docker_objects(kind, label)]

    def containers(self) -> dict[str, str]:
        return {agent: docker("inspect", "-f", "{{.Id}}", f"agentfleet-{self.stack}-{agent}") for agent in AGENTS}


@pytest.fixture
def new_project(tmp_path: Path, wheels: Path, agent_image: str):
    """`agentfleet new` from agentfleet `version` installed in a virtualenv of its own; the dev
    stack's file renamed to a stack of this session (stack `dev` is a developer's own fleet)."""
    made: list[TeamProject] = []

    def make(flavour: str, version: str = __version__) -> TeamProject:
        tools = virtualenv(tmp_path / f"tools-{version}", wheels, f"agentfleet=={version}")
        directory = tmp_path / f"team-fleet-{flavour}"
        said = run([tools / "agentfleet", "new", directory, *(["--yaml"] if flavour == "yaml" else [])], tmp_path,
                   outside_env())
        assert f"fleet project team-fleet-{flavour} in {directory}" in said
        project = TeamProject(directory, f"{SESSION}-{flavour}", tmp_path / "state")
        (directory / "Pulumi.dev.yaml").rename(directory / f"Pulumi.{project.stack}.yaml")
        project.state.mkdir(exist_ok=True)
        project.install(wheels)
        made.append(project)
        return project

    yield make
    for project in made:
        subprocess.run(["agentfleet", "disconnect"], cwd=project.directory, env=project.env, capture_output=True)
        subprocess.run(["pulumi", "destroy", "--yes", "--stack", project.stack], cwd=project.directory,
                       env=project.env, capture_output=True)
        subprocess.run(["pulumi", "stack", "rm", "--yes", "--force", project.stack], cwd=project.directory,
                       env=project.env, capture_output=True)


def bring_up(project: TeamProject) -> None:
    project("pulumi", "stack", "init", project.stack, "--secrets-provider", "passphrase")
    project("pulumi", "up", "--yes", "--stack", project.stack)


@pytest.mark.parametrize("flavour", ["python", "yaml"])
def test_a_team_project_made_by_agentfleet_new_brings_up_runs_and_destroys_its_fleet(new_project, flavour):
    if flavour == "yaml" and shutil.which("pulumi-language-yaml") is None:
        pytest.fail("Pulumi's YAML language host is not on PATH: run scripts/setup (it builds it)")
    project = new_project(flavour)
    assert f"agentfleet=={__version__}" in (project.directory / "requirements.txt").read_text()
    # The project's agentfleet is the installed one, and the checkout's code is out of its reach.
    assert str(project.directory / "venv") in project("agentfleet", "--version")
    python = project.directory / "venv" / "bin" / "python"
    assert subprocess.run([python, "-c", "import components"], env=project.env, cwd=project.directory,
                          capture_output=True).returncode != 0

    bring_up(project)

    for agent in AGENTS:
        said = project("agentfleet", "exec", agent, "--", "git", "config", "user.email")
        assert said.strip() == f"{agent}@team-fleet-{flavour}.example"
    kept = project.directory / ".agentfleet" / project.stack
    assert (kept / "outputs.json").is_file()  # the second exec read the kept outputs
    project("agentfleet", "ssh-config")
    assert project("ssh", "-F", kept / "ssh_config", "agent-2", "git config user.name").strip() == "Agent Two"
    assert '"type": "agentfleet:index:Fleet"' in project("pulumi", "stack", "export", "--stack", project.stack)
    # What the team commits leaves the virtualenv, keys and kept outputs out.
    project("git", "init", "-q")
    secret = ["venv/bin/agentfleet", f".agentfleet/{project.stack}/outputs.json", f".agentfleet/{project.stack}/keys/agent-1"]
    assert project("git", "check-ignore", *secret).split() == secret
    committed = project("git", "ls-files", "--others", "--exclude-standard").split()
    assert sorted(committed) == sorted([".gitignore", "Pulumi.yaml", f"Pulumi.{project.stack}.yaml", "README.md",
                                        "requirements.txt", *(["__main__.py"] if flavour == "python" else [])])

    project("agentfleet", "disconnect")
    project("pulumi", "destroy", "--yes", "--stack", project.stack)
    project("pulumi", "stack", "rm", "--yes", project.stack)

    assert project.objects() == []


def test_a_project_made_by_the_previous_version_keeps_its_agents_when_the_pin_is_raised(new_project, wheels):
    project = new_project("python", PREVIOUS)
    assert f"agentfleet=={PREVIOUS}" in (project.directory / "requirements.txt").read_text()
    bring_up(project)
    before = project.containers()
    project("agentfleet", "exec", "agent-1", "--", "sh -c 'echo kept > work.txt'")
    known_hosts = (json.loads(project("pulumi", "stack", "output", "--json", "--stack", project.stack))["agents"]
                   ["agent-1"]["known_hosts"])

    requirements = project.directory / "requirements.txt"
    requirements.write_text(requirements.read_text().replace(f"=={PREVIOUS}", f"=={__version__}"))
    project(project.directory / "venv" / "bin" / "pip", "install", "-q", "--find-links", wheels, "-r", requirements)
    assert __version__ in project("agentfleet", "--version")
    plan = json.loads(project("pulumi", "preview", "--json", "--stack", project.stack))
    project("pulumi", "up", "--yes", "--stack", project.stack)

    changed = {step["op"] for step in plan["steps"]}
    assert not changed & {"replace", "create-replacement", "delete-replaced", "delete", "create"}, plan["steps"]
    assert project.containers() == before
    outputs = json.loads(project("pulumi", "stack", "output", "--json", "--stack", project.stack))
    assert outputs["agents"]["agent-1"]["known_hosts"] == known_hosts
    assert project("agentfleet", "exec", "agent-1", "--", "cat work.txt").strip() == "kept"
    state = json.loads(project("pulumi", "stack", "export", "--stack", project.stack))
    versions = {r["inputs"].get("version") for r in state["deployment"]["resources"]
                if r["type"] == "pulumi:providers:agentfleet"}
    assert versions == {__version__}
