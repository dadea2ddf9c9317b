"""scripts/setup's steps fail with one actionable message and leave nothing half-installed.

Nothing here depends on what the machine has or reaches: every test runs the step with a PATH it
builds itself (the system's tools, minus the ones the test takes away, plus STAND-INs for curl,
go and apt-get), so each says which path of the step it covers, with or without internet.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.stand_ins import PULUMI_VERSION, tools_path, write_stand_in

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def run_step(tmp_path: Path, step: str, libs: str, path: str, **env: str) -> subprocess.CompletedProcess[str]:
    script = f'set -euo pipefail; for lib in log {libs}; do . scripts/lib/$lib.sh; done; {step}'
    environment = {"PATH": path, "HOME": str(tmp_path), "PROJECT_ROOT": str(PROJECT_ROOT),
                   "AGENTFLEET_HOME": str(tmp_path / "home"), **env}
    (tmp_path / "home").mkdir(exist_ok=True)
    return subprocess.run(["bash", "-c", script], cwd=PROJECT_ROOT, env=environment,
                          capture_output=True, text=True, timeout=60)


def curl_for_get_pulumi(tmp_path: Path, reachable: bool) -> Path:
    """A STAND-IN curl for get.pulumi.com: the probe and the download succeed or fail as asked;
    the installer it serves records its arguments and installs a stand-in pulumi."""
    installer = ('echo "installer $*" >>"$CALLS"; '
                 'while [ $# -gt 0 ]; do [ "$1" = --install-root ] && root=$2; shift; done; '
                 'mkdir -p "$root/bin" && printf "#!/bin/sh\\necho v%s\\n" >"$root/bin/pulumi" && '
                 'chmod +x "$root/bin/pulumi"' % PULUMI_VERSION)
    answer = f"printf '%s\\n' '{installer}'" if reachable else "echo 'curl: (7) Failed to connect' >&2; exit 7"
    return write_stand_in(tmp_path / "stand-ins", "curl", f'echo "curl $*" >>"$CALLS"\n{answer}\n')


def calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls"
    return path.read_text().splitlines() if path.exists() else []


def toolchain_left(tmp_path: Path) -> list[str]:
    root = tmp_path / "home" / "toolchain"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


@pytest.mark.parametrize(("chosen", "reachable"), [("go", True), ("auto", False)],
                         ids=["forced to the Go build", "auto, get.pulumi.com unreachable"])
def test_the_go_build_path_without_go_says_to_install_it(tmp_path, chosen, reachable):
    curl_for_get_pulumi(tmp_path, reachable)
    result = run_step(tmp_path, "ensure_pulumi_toolchain", "pulumi-toolchain",
                      tools_path(tmp_path, tmp_path / "stand-ins", without=("go",)),
                      AGENTFLEET_PULUMI_FROM=chosen, CALLS=str(tmp_path / "calls"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: Go is needed to build the Pulumi CLI here")
    # Forced to Go, get.pulumi.com is not even asked; on auto it is asked once and refuses.
    assert calls(tmp_path) == ([] if chosen == "go" else ["curl -fsS --max-time 5 https://get.pulumi.com/"])
    assert toolchain_left(tmp_path) == []  # no partial toolchain left


@pytest.mark.parametrize("chosen", ["installer", "auto"],
                         ids=["forced to the installer", "auto, get.pulumi.com answers"])
def test_the_official_installer_path_installs_the_version_asked_for(tmp_path, chosen):
    curl_for_get_pulumi(tmp_path, reachable=True)
    result = run_step(tmp_path, "ensure_pulumi_toolchain", "pulumi-toolchain",
                      tools_path(tmp_path, tmp_path / "stand-ins", without=("go",)),
                      AGENTFLEET_PULUMI_FROM=chosen, CALLS=str(tmp_path / "calls"))
    assert result.returncode == 0, result.stderr
    current = tmp_path / "home" / "toolchain" / "current"
    assert (current / ".complete").exists()
    assert subprocess.run([current / "bin" / "pulumi"], capture_output=True, text=True).stdout == f"v{PULUMI_VERSION}\n"
    (installed,) = [line for line in calls(tmp_path) if line.startswith("installer ")]
    assert installed == (f"installer --version {PULUMI_VERSION} --install-root "
                         f"{current.resolve()}.partial --no-edit-path")


def test_a_failing_official_installer_leaves_nothing(tmp_path):
    curl_for_get_pulumi(tmp_path, reachable=False)
    result = run_step(tmp_path, "ensure_pulumi_toolchain", "pulumi-toolchain",
                      tools_path(tmp_path, tmp_path / "stand-ins"), AGENTFLEET_PULUMI_FROM="installer",
                      CALLS=str(tmp_path / "calls"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "error: the official Pulumi installer failed; see its output above"
    assert toolchain_left(tmp_path) == []


def test_a_failed_go_build_says_where_its_log_is_and_that_a_second_run_resumes(tmp_path):
    write_stand_in(tmp_path / "stand-ins", "go", """\
case "$*" in
    "env GOMODCACHE") echo /cache/mod ;;
    "env GOCACHE") echo /cache/build ;;
    "env GOPROXY") echo https://proxy.example ;;
    *" build "*) echo "compile: signal: killed"; exit 2 ;;
esac
""")
    result = run_step(tmp_path, "ensure_pulumi_toolchain", "pulumi-toolchain",
                      tools_path(tmp_path, tmp_path / "stand-ins"), AGENTFLEET_PULUMI_FROM="go")
    log = tmp_path / "home" / "logs" / "pulumi-build.log"
    assert result.returncode == 1
    assert log.read_text() == "compile: signal: killed\n"
    lines = result.stderr.strip().splitlines()
    assert lines[-4].startswith("    compiling the Pulumi CLI (go build): failed after ")
    assert lines[-3:-1] == ["    | compile: signal: killed", f"    full log: {log}"]
    assert lines[-1].startswith(f"error: compiling the Pulumi CLI (go build) failed (log above; all of it in {log}). "
                                "Run scripts/setup again: Go keeps the modules it downloaded and the packages it "
                                "compiled (/cache/mod, /cache/build), so a second run resumes where this one stopped")
    assert toolchain_left(tmp_path) == []


APT_NOISE = "debconf: delaying package configuration, since apt-utils is not installed"


@pytest.mark.parametrize("fails", [False, True], ids=["apt-get succeeds", "apt-get fails"])
def test_apt_gets_output_is_shown_only_when_it_fails(tmp_path, fails):
    write_stand_in(tmp_path / "stand-ins", "apt-get", f"""\
echo "apt-get $* NEEDRESTART_SUSPEND=$NEEDRESTART_SUSPEND DEBIAN_FRONTEND=$DEBIAN_FRONTEND"
echo "{APT_NOISE}" >&2
case "$*" in install*) {'echo "E: Unable to locate package nope" >&2; exit 100' if fails else 'exit 0'} ;; esac
""")
    result = run_step(tmp_path, "apt_install --no-install-recommends nope", "apt",
                      tools_path(tmp_path, tmp_path / "stand-ins"))
    log = tmp_path / "home" / "logs" / "apt.log"
    quiet = "NEEDRESTART_SUSPEND=1 DEBIAN_FRONTEND=noninteractive"
    assert log.read_text().splitlines() == [f"apt-get update -qq {quiet}", APT_NOISE,
                                            f"apt-get install -y -qq --no-install-recommends nope {quiet}", APT_NOISE] \
        + (["E: Unable to locate package nope"] if fails else [])
    lines = result.stderr.splitlines()
    if not fails:
        assert result.returncode == 0
        assert len(lines) == 1 and lines[0].startswith("    apt-get install --no-install-recommends nope: done in ")
    else:
        assert result.returncode == 1
        assert lines[0].startswith("    apt-get install --no-install-recommends nope: failed after ")
        assert lines[-3:] == ["    | E: Unable to locate package nope", f"    full log: {log}",
                              "    apt-get needs a reachable package mirror and the dpkg lock: fix what its log "
                              "says, then run scripts/setup again"]


def test_too_little_disk_stops_before_anything_is_built(tmp_path):
    result = run_step(tmp_path, "ensure_disk_space", "disk-space", "/usr/bin:/bin", AGENTFLEET_MIN_FREE_GB="999999")
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
