"""Checks on what a command prints hold under `set -o pipefail` whatever the timing
(scripts/lib/output.sh), and no script pipes into a reader that stops early again.

The race (issue 29): `kubectl version --client | grep -q v1.34.4` under pipefail failed about one
time in seven: grep -q exits at its first match, kubectl's next write gets SIGPIPE, and the
pipeline's status is kubectl's. A STAND-IN writes its version line, pauses, then writes more
lines, which makes that timing the rule rather than the exception.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.stand_ins import write_stand_in

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RUNS = 25
PAUSE_S = 0.05
KUBERNETES = re.search(r"^KUBERNETES_VERSION=(\S+)$", (PROJECT_ROOT / "scripts/lib/kubernetes.sh").read_text(), re.M)[1]
ETCD = re.search(r"^ETCD_VERSION=(\S+)", (PROJECT_ROOT / "scripts/lib/kubernetes.sh").read_text(), re.M)[1]


def writes_then_more(tmp_path: Path, name: str, first: str, more: list[str]) -> Path:
    """Prints `first`, then after a pause each of `more`, each in its own write (as kubectl and
    etcd do). Its exit status says whether all of it was written."""
    rest = "".join(f"echo '{line}'\n" for line in more)
    return write_stand_in(tmp_path / "bin", name, f"echo '{first}'\nsleep {PAUSE_S}\n{rest}")


def bash(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", f"set -euo pipefail; {script}"], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=60)


CHECKS = {
    "kubectl": (f"Client Version: v{KUBERNETES}", ["Kustomize Version: v5.7.1"],
                "kube_kubectl_reports_version", f"v{KUBERNETES}"),
    "etcd": (f"etcd Version: {ETCD}", ["Git SHA: Not provided", "Go Version: go1.24", "Go OS/Arch: linux/amd64"],
             "kube_etcd_reports_version", f"etcd Version: {ETCD}"),
}


@pytest.mark.parametrize("binary", CHECKS)
def test_the_version_checks_pass_every_time_against_a_binary_that_writes_more(tmp_path, binary):
    first, more, check, _ = CHECKS[binary]
    stand_in = writes_then_more(tmp_path, binary, first, more)
    runs = "; ".join([f"{check} {stand_in} && echo pass || echo fail"] * RUNS)
    done = bash(f". scripts/lib/log.sh; . scripts/lib/kubernetes.sh; {runs}")
    assert done.stdout.split() == ["pass"] * RUNS, done.stderr


@pytest.mark.parametrize("binary", CHECKS)
def test_the_version_checks_still_refuse_another_version(tmp_path, binary):
    first, more, check, _ = CHECKS[binary]
    stand_in = writes_then_more(tmp_path, binary, first.replace(".", "_"), more)
    assert bash(f". scripts/lib/log.sh; . scripts/lib/kubernetes.sh; {check} {stand_in}").returncode == 1


@pytest.mark.parametrize("binary", CHECKS)
def test_control_the_old_pipe_into_grep_q_fails_against_the_same_stand_in(tmp_path, binary):
    """Proves the stand-in reproduces the race: the check as it was fails (SIGPIPE, then pipefail)."""
    first, more, _, text = CHECKS[binary]
    stand_in = writes_then_more(tmp_path, binary, first, more)
    argv = f"{stand_in} version --client" if binary == "kubectl" else f"{stand_in} --version"
    runs = "; ".join([f"{{ {argv} | grep -q '{text}'; }} && echo pass || echo fail"] * RUNS)
    outcomes = bash(runs).stdout.split()
    assert len(outcomes) == RUNS and outcomes.count("fail") > 0, outcomes


def test_dockerds_log_check_reads_a_long_tail_whole(tmp_path):
    """_docker_log_says_iptables on a log whose last 40 lines are more than a pipe holds (64 KiB):
    the match is early, tail is still writing. The old `tail | grep -q` as control."""
    log = tmp_path / "dockerd.log"
    log.write_text("x\n" * 10 + "failed to start: iptables failed\n" + ("y" * 4000 + "\n") * 39)
    new = bash(". scripts/lib/log.sh; . scripts/lib/docker-engine.sh; "
               + "; ".join([f"_docker_log_says_iptables {log} && echo pass || echo fail"] * RUNS))
    old = bash("; ".join([f"{{ tail -n 40 {log} | grep -qiE iptables; }} && echo pass || echo fail"] * RUNS))
    assert new.stdout.split() == ["pass"] * RUNS, new.stderr
    assert "fail" in old.stdout.split(), old.stdout


# A pipe (possibly at the end of a line) into a reader that can exit before its writer is done:
# grep -q/-l/-L/-m/--quiet/--silent/--max-count/--files-with(out)-match, head, sed …q, awk with
# exit, a bare `read`.
EARLY_READER = re.compile(
    r"(?<!\|)\|(?!\|)\s*(grep\b[^|;&]*\s(-[a-zA-Z]*[qlLm][a-zA-Z]*\b|--quiet|--silent|--max-count|--files-with)"
    r"|head\b|sed\b[^|;&]*\dq\b|awk\b[^|;&]*\bexit\b|read\b)")


def early_readers(text: str) -> list[str]:
    """The commands in shell `text` that pipe into an early-exiting reader (comments skipped)."""
    code = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"(?<!\|)\|\s*\n\s*", "| ", "\n".join(code))
    return [line.strip() for line in joined.splitlines() if EARLY_READER.search(line)]


def shell_scripts() -> list[Path]:
    found = []
    for path in sorted([*(PROJECT_ROOT / "scripts").rglob("*"), *(PROJECT_ROOT / "images").rglob("*")]):
        if path.is_file() and (path.suffix == ".sh" or re.match(rb"#!\S*(/| )(ba)?sh\b", path.read_bytes()[:40])):
            found.append(path)
    return found


# Known, and left until the agent image changes anyway: every file under images/ is hashed into
# the agent image's tag (components/image.py), and a new tag replaces every agent's container.
# Here the loop prints one mirror per source file; with two sources of the suite, a later awk can
# die of SIGPIPE and the base image build stops (it does not run on machines with a registry).
WAITING_FOR_AN_IMAGE_CHANGE = {"images/build-base-rootfs": ["done | head -n 1"]}


def test_no_script_pipes_into_a_reader_that_exits_early():
    scripts = shell_scripts()
    assert {"setup", "kubernetes.sh", "build-base-rootfs", "build-vm-image", "agent-init"} <= {p.name for p in scripts}
    offenders = {str(p.relative_to(PROJECT_ROOT)): found for p in scripts if (found := early_readers(p.read_text()))}
    assert offenders == WAITING_FOR_AN_IMAGE_CHANGE, "read the output first (scripts/lib/output.sh): " + repr(offenders)


@pytest.mark.parametrize(("line", "flagged"), [
    ('"$bin" version --client | grep -q "v1"', True),
    ("etcd --version | grep -qF x", True),
    ("tail -n 40 log | grep -qiE 'iptables'", True),
    ("for f in a b; do cat $f; done |\n    head -n 1", True),
    ("id -nG user | grep -w kvm -q", True),
    ("list | sed -n 1q", True),
    ("ls | read first", True),
    ("[ -n \"$x\" ] || read -r -a words <<<\"$x\"", False),
    ("docker build . | tee log | grep --line-buffered -E 'Step' | sed -u 's/^/ /'", False),
    ("sha256sum f | cut -c1-16", False),
    ("find boot | sort | tail -n 1", False),
    ('grep -q "Kernel panic" "$log"', False),
    ("# `COMMAND | grep -q TEXT` dies of SIGPIPE", False),
])
def test_control_the_lint_sees_early_readers(line, flagged):
    assert bool(early_readers(line)) is flagged
