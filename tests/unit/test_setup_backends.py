"""scripts/setup installs per backend: which steps a backend needs, which backends a stack file
uses, progress of long steps, and one `agentfleet` per clone (scripts/activate, scripts/bin)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import agentfleet

from components.spec import declared_backends

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def bash(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    prelude = "set -euo pipefail; . scripts/lib/log.sh; . scripts/lib/backends.sh; "
    return subprocess.run(["bash", "-c", prelude + script], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", **env})


@pytest.mark.parametrize(("asked", "steps"), [
    ("docker", "ensure_docker_engine ensure_agent_image"),
    ("lima docker", "ensure_docker_engine ensure_agent_image ensure_lima"),  # in install order
    ("all", "ensure_docker_engine ensure_agent_image ensure_lima ensure_multipass ensure_kubernetes"),
])
def test_each_backend_brings_only_its_own_steps(asked, steps):
    assert bash(f"backend_steps {asked}").stdout == steps + "\n"


def test_an_unknown_backend_is_refused_with_the_known_ones():
    done = bash("backend_steps docker kubernets")
    assert done.returncode == 1
    assert done.stderr == "error: unknown backend 'kubernets'; setup knows: docker lima multipass kubernetes\n"


def test_setup_refuses_an_unknown_backend_before_installing_anything(tmp_path):
    home = tmp_path / "home"
    done = subprocess.run([str(PROJECT_ROOT / "scripts" / "setup"), "vmware"], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AGENTFLEET_HOME": str(home)})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "error: unknown backend 'vmware'; setup knows: docker lima multipass kubernetes"
    assert list(home.iterdir()) == []


@pytest.mark.parametrize(("fleet", "backends"), [
    ({"agents": [{"name": "a"}]}, ["docker"]),
    ({"defaults": {"backend": "lima"}, "agents": [{"name": "a"}, {"name": "b", "backend": "docker"}]},
     ["lima", "docker"]),
    ({"agents": [{"name": "a", "backend": "multipass"}, {"name": "b"}, {"name": "c", "backend": "multipass"}]},
     ["multipass", "docker"]),
    (None, []),
])
def test_declared_backends(fleet, backends):
    assert declared_backends(fleet) == backends


@pytest.mark.parametrize(("stack", "printed"), [("dev", "docker\n"), ("mixed", "docker lima multipass\n")])
def test_the_stack_files_backends(stack, printed):
    done = subprocess.run([sys.executable, "scripts/stack_backends.py", f"stacks/Pulumi.{stack}.yaml"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert done.stdout == printed


def test_a_stack_file_without_a_fleet_is_an_error(tmp_path):
    empty = tmp_path / "Pulumi.empty.yaml"
    empty.write_text("config: {}\n")
    done = subprocess.run([sys.executable, "scripts/stack_backends.py", str(empty)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 1 and "has no `reference-fleet:fleet` with agents" in done.stderr


def test_a_long_step_says_what_it_does_and_for_how_long():
    done = bash('log_timed "waiting for the thing" - sleep 3.5', AGENTFLEET_PROGRESS_EVERY="1")
    assert done.returncode == 0
    *ticks, last = done.stderr.splitlines()
    seconds = [int(re.fullmatch(r"    … waiting for the thing \((\d+) s so far\)", tick).group(1)) for tick in ticks]
    assert len(seconds) >= 2 and seconds[0] >= 1 and seconds == sorted(set(seconds)), ticks
    assert re.fullmatch(r"    waiting for the thing: done in (\d+) s", last)
    assert int(last.split()[-2]) >= max(seconds)


def test_the_ticker_holds_no_pipe_of_ours():
    """A reader of setup's output does not wait for the ticker's sleep (30 s here) after the step."""
    started = time.monotonic()
    done = bash('log_timed "a short step" - sleep 0.2', AGENTFLEET_PROGRESS_EVERY="30")
    assert done.returncode == 0
    assert time.monotonic() - started < 20


def test_a_failed_long_step_keeps_its_status_and_its_output_in_the_log(tmp_path):
    log = tmp_path / "step.log"
    done = bash(f'log_timed "building" {log} sh -c "echo compiling; exit 3" || echo "rc=$?"')
    assert done.stdout == "rc=3\n"
    assert done.stderr.startswith("    building: failed after ")
    assert log.read_text() == "compiling\n"


def clone_of_project(where: Path) -> Path:
    """The parts of a clone that `. scripts/activate; agentfleet` uses."""
    for name in ("scripts", "agentfleet"):
        shutil.copytree(PROJECT_ROOT / name, where / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "Pulumi.yaml", where)
    return where


def test_two_clones_never_run_each_others_code(tmp_path):
    first, second = clone_of_project(tmp_path / "first"), clone_of_project(tmp_path / "second")
    script = (f". {first}/scripts/activate && agentfleet --version && "
              f". {second}/scripts/activate && agentfleet --version && echo $PULUMI_BACKEND_URL && "
              f". {first}/scripts/activate && agentfleet --version && echo $PULUMI_BACKEND_URL && "
              "PULUMI_BACKEND_URL=s3://mine && . scripts/activate && echo $PULUMI_BACKEND_URL")
    done = subprocess.run(["bash", "-c", script], cwd=second, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert done.returncode == 0, done.stderr
    version = f"agentfleet {agentfleet.__version__} from"
    assert done.stdout.splitlines() == [
        f"{version} {first}",
        f"{version} {second}",
        f"file://{second}/.pulumi-state",
        f"{version} {first}",
        f"file://{first}/.pulumi-state",
        "s3://mine",  # a backend the user chose is kept
    ]
