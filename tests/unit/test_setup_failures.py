"""scripts/setup's steps fail with one actionable message and leave nothing half-installed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def run_step(tmp_path: Path, step: str, libs: str, **env: str) -> subprocess.CompletedProcess[str]:
    script = f'set -euo pipefail; for lib in log {libs}; do . scripts/lib/$lib.sh; done; {step}'
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PROJECT_ROOT": str(PROJECT_ROOT),
                   "AGENTFLEET_HOME": str(tmp_path / "home"), **env}
    (tmp_path / "home").mkdir(exist_ok=True)
    return subprocess.run(["bash", "-c", script], cwd=PROJECT_ROOT, env=environment,
                          capture_output=True, text=True, timeout=60)


def test_no_go_where_the_toolchain_must_be_built(tmp_path):
    # PATH without Go, and the official installer unreachable (no network but registries).
    result = run_step(tmp_path, "ensure_pulumi_toolchain", "pulumi-toolchain")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: Go is needed to build the Pulumi CLI here")
    assert list((tmp_path / "home" / "toolchain").iterdir()) == []  # no partial toolchain left


def test_too_little_disk_stops_before_anything_is_built(tmp_path):
    result = run_step(tmp_path, "ensure_disk_space", "disk-space", AGENTFLEET_MIN_FREE_GB="999999")
    assert result.returncode == 1
    assert "setup needs 999999G (free some space, or set AGENTFLEET_HOME to a larger disk)" in result.stderr


@pytest.mark.parametrize(("docker_host", "advice"), [
    ("unix:///nonexistent/docker.sock", "only root can install or start one: run this script as root (sudo)"),
    ("unix:///var/run/docker.sock", "add yourself to the docker group (sudo usermod -aG docker nobody"),
])
def test_an_ordinary_user_is_told_what_to_do_and_nothing_is_started(tmp_path, docker_host, advice):
    """As nobody: no daemon at all, or the root-only socket of a running one."""
    tmp_path.chmod(0o777)
    script = "set -euo pipefail; . scripts/lib/log.sh; . scripts/lib/docker-engine.sh; ensure_docker_engine"
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash", "-c", script],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path),
             "AGENTFLEET_HOME": str(tmp_path / "home"), "DOCKER_HOST": docker_host},
    )
    assert result.returncode == 1
    assert advice in result.stderr
    assert not (tmp_path / "home" / "dockerd.log").exists()
