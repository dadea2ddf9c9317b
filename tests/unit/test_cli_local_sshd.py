"""Real-sshd tests of the `agentfleet` CLI, run in-process against the throwaway OpenSSH server.

`ssh-config` is checked with the real OpenSSH client and real git. `doctor` meets a
`cloud-init` stub on the agents' PATH that replays recorded `cloud-init status` outputs (the
test machine has no cloud-init); git, sshd and the git remote over SSH are real.
"""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from agentfleet.cli import main

FIXTURES = Path(__file__).parent / "fixtures"


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), out, err, {})
    return status, out.getvalue(), err.getvalue()


def write_outputs(path: Path, raw: dict) -> str:
    path.write_text(json.dumps(raw))
    return str(path)


def with_agent_changed(tmp_path: Path, local_sshd, agent: str, **changes) -> str:
    raw = copy.deepcopy(local_sshd.outputs())
    raw["agents"][agent].update(changes)
    return write_outputs(tmp_path / "changed.json", raw)


def closed_port_changes(local_sshd) -> dict:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kind, blob = local_sshd.host_key.public.split()[:2]
    return {"port": port, "known_hosts": f"[127.0.0.1]:{port} {kind} {blob}"}


def test_ls_shows_every_agent_reachable(outputs_file, local_sshd):
    status, out, err = run_cli("--outputs", str(outputs_file), "ls")
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "BACKEND", "ENDPOINT", "REACHABLE", "USERNS", "IDENTITY"]
    port = local_sshd.ports["agent-2"]
    assert lines[2].split() == [
        "agent-2",
        "docker",
        f"127.0.0.1:{port}",
        "yes",
        "-",
        "Agent",
        "2",
        "<agent-2@example.com>",
    ]


def test_ls_json_marks_an_unreachable_agent(tmp_path, local_sshd):
    outputs = with_agent_changed(tmp_path, local_sshd, "agent-2", **closed_port_changes(local_sshd))
    status, out, err = run_cli("--outputs", outputs, "ls", "--json")
    records = {record["name"]: record for record in json.loads(out)}
    assert status == 0 and err == ""
    assert records["agent-1"]["reachable"] is True
    assert records["agent-2"]["reachable"] is False and "connection refused" in records["agent-2"]["error"]


def test_ls_table_explains_unreachable_agents_on_stderr(tmp_path, local_sshd):
    outputs = with_agent_changed(tmp_path, local_sshd, "agent-2", **closed_port_changes(local_sshd))
    status, out, err = run_cli("--outputs", outputs, "ls")
    assert status == 0 and out.splitlines()[2].split()[3] == "no"
    assert err.startswith("agent-2: cannot reach 127.0.0.1:") and err.count("\n") == 1


def test_exec_streams_both_streams_and_exits_with_the_remote_status(outputs_file):
    status, out, err = run_cli(
        "--outputs",
        str(outputs_file),
        "exec",
        "agent-1",
        "--",
        "sh",
        "-c",
        "git log -1 --format=%s; echo to-err >&2; exit 7",
    )
    assert (status, out, err) == (7, "seed\n", "to-err\n")


def test_exec_prints_the_agents_own_email(outputs_file):
    """The issue's done-when, against the local agents: git runs in the agent's workspace."""
    status, out, _ = run_cli(
        "--outputs", str(outputs_file), "exec", "agent-1", "--", "git", "log", "-1", "--format=%ae"
    )
    assert (status, out) == (0, "seed@example.com\n")
    status, out, _ = run_cli(
        "--outputs", str(outputs_file), "exec", "agent-1", "--", "git", "config", "user.email"
    )
    assert (status, out) == (0, "agent-1@example.com\n")


def test_exec_one_word_is_a_shell_line(outputs_file):
    status, out, _ = run_cli(
        "--outputs", str(outputs_file), "exec", "agent-2", "--", "echo $((6 * 7)) | tr 4 x"
    )
    assert (status, out) == (0, "x2\n")


def test_exec_dir_option(outputs_file):
    assert run_cli("--outputs", str(outputs_file), "exec", "-C", "/", "agent-1", "--", "pwd")[:2] == (
        0,
        "/\n",
    )


def test_exec_all_prefixes_lines_and_summarises(outputs_file):
    status, out, err = run_cli(
        "--outputs",
        str(outputs_file),
        "exec",
        "--all",
        "--",
        "sh",
        "-c",
        'git config user.email; echo "warn ${HOME##*/}" >&2',
    )
    assert status == 0
    assert sorted(out.splitlines()) == ["agent-1 | agent-1@example.com", "agent-2 | agent-2@example.com"]
    assert sorted(err.splitlines()) == ["2 ok, 0 failed", "agent-1 | warn agent-1", "agent-2 | warn agent-2"]
    assert err.endswith("2 ok, 0 failed\n")


def test_exec_all_fails_if_any_agent_fails(tmp_path, local_sshd):
    raw = local_sshd.outputs()
    status, out, err = run_cli(
        "--outputs",
        write_outputs(tmp_path / "o.json", raw),
        "exec",
        "--all",
        "--parallel",
        "1",
        "--",
        "sh",
        "-c",
        'case "$HOME" in */agent-2) exit 4;; esac; echo fine',
    )
    assert status == 1
    assert out == "agent-1 | fine\n"
    assert err == "agent-2: exit status 4\n1 ok, 1 failed\n"


def test_exec_all_counts_an_unreachable_agent_as_failed(tmp_path, local_sshd):
    outputs = with_agent_changed(tmp_path, local_sshd, "agent-1", **closed_port_changes(local_sshd))
    status, out, err = run_cli("--outputs", outputs, "exec", "--all", "--", "true")
    assert status == 1 and out == ""
    assert err.startswith("agent-1: agent-1: cannot reach") and err.endswith("1 ok, 1 failed\n")


def test_exec_timeout_exits_124_with_one_line(outputs_file):
    status, out, err = run_cli(
        "--outputs",
        str(outputs_file),
        "exec",
        "--timeout",
        "0.5",
        "agent-1",
        "--",
        "sh",
        "-c",
        "echo begun; sleep 20",
    )
    assert (status, out) == (124, "begun\n")
    assert err.startswith("agentfleet: agent-1: `") and err.endswith(
        "timed out after 0.5 s; last output: begun\n"
    )


def test_exec_with_a_changed_host_key_exits_255_with_one_line(tmp_path, local_sshd, make_key):
    other = make_key("impostor")
    outputs = with_agent_changed(
        tmp_path, local_sshd, "agent-1", known_hosts=local_sshd.known_hosts("agent-1", other)
    )
    status, out, err = run_cli("--outputs", outputs, "exec", "agent-1", "--", "true")
    assert (status, out) == (255, "")
    assert err.startswith("agentfleet: agent-1: the host key of 127.0.0.1:") and err.count("\n") == 1
    assert "pulumi up" in err and "Traceback" not in err


# --- ssh-config with the real OpenSSH client and real git --------------------------------------


@pytest.fixture
def ssh_dir(tmp_path, outputs_file) -> Path:
    directory = tmp_path / "ssh files"  # a space, to prove the paths are quoted
    status, out, _ = run_cli("--outputs", str(outputs_file), "ssh-config", "--output", str(directory))
    assert status == 0 and f"ssh -F '{directory}/ssh_config' agent-1" in out
    return directory


def openssh(ssh_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    ssh = shutil.which("ssh")
    if ssh is None:
        pytest.fail("the OpenSSH client is missing: apt-get install -y openssh-client")
    return subprocess.run(
        [ssh, "-F", str(ssh_dir / "ssh_config"), "-o", "BatchMode=yes", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_plain_openssh_logs_in_with_the_written_config(ssh_dir):
    for agent in ("agent-1", "agent-2"):
        done = openssh(ssh_dir, agent, "git", "config", "--global", "user.email")
        assert (done.returncode, done.stdout) == (0, f"{agent}@example.com\n"), done.stderr


def test_openssh_refuses_a_changed_host_key_too(ssh_dir, make_key, local_sshd):
    (ssh_dir / "known_hosts").write_text(local_sshd.known_hosts("agent-1", make_key("impostor")) + "\n")
    done = openssh(ssh_dir, "agent-1", "true")
    assert done.returncode == 255 and "Host key verification failed" in done.stderr


def test_git_clones_through_the_written_config(ssh_dir, tmp_path, local_sshd):
    workspace = local_sshd.homes["agent-1"] / "workspace"
    env = {**os.environ, "GIT_SSH_COMMAND": f"ssh -F '{ssh_dir}/ssh_config' -o BatchMode=yes"}
    clone = tmp_path / "clone"
    done = subprocess.run(
        ["git", "clone", "-q", f"agent-1:{workspace}", str(clone)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (clone / "README").read_text() == "seed\n"


# --- doctor -------------------------------------------------------------------------------------


@pytest.fixture
def cloud_init_replay(local_sshd):
    """A `cloud-init` on the agents' PATH replaying a recorded case from $HOME/cloud-init-replay."""
    stub = local_sshd.stub_bin / "cloud-init"
    stub.write_text(
        "#!/bin/sh\n"
        "# test stub: replays recorded `cloud-init status [--long]` output\n"
        'case "$*" in "status") run=status ;; "status --long") run=long ;; *) exit 2 ;; esac\n'
        'cat "$HOME/cloud-init-replay/$run.out"; exit "$(cat "$HOME/cloud-init-replay/$run.rc")"\n'
    )
    stub.chmod(0o755)

    def replay(agent: str, case: str) -> None:
        directory = local_sshd.homes[agent] / "cloud-init-replay"
        directory.mkdir(exist_ok=True)
        recorded = json.loads((FIXTURES / "cloud-init" / f"{case}.json").read_text())
        for run in ("status", "long"):
            (directory / f"{run}.out").write_text(recorded[run]["stdout"])
            (directory / f"{run}.rc").write_text(str(recorded[run]["exit_status"]))

    yield replay
    stub.unlink()
    for home in local_sshd.homes.values():
        shutil.rmtree(home / "cloud-init-replay", ignore_errors=True)


def test_doctor_passes_a_healthy_agent(outputs_file, cloud_init_replay, local_sshd):
    cloud_init_replay("agent-1", "done")
    status, out, err = run_cli("--outputs", str(outputs_file), "doctor", "agent-1")
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"agent-1 (docker, 127.0.0.1:{local_sshd.ports['agent-1']})"
    assert [line.split()[:2] for line in lines[1:6]] == [
        ["ok", "reachable"],
        ["ok", "cloud-init"],
        ["ok", "git"],
        ["ok", "workspace"],
        ["ok", "remote"],
    ]
    assert lines[4].endswith(f"{local_sshd.homes['agent-1'] / 'workspace'} holds a clone of {local_sshd.agent_outputs('agent-1')['remote']}")
    assert "answers through the workspace's origin: 2 refs" in lines[5]
    # These outputs were written without it: the check says where it comes from, and fails nothing.
    assert lines[6] == "  skip  userns        not in the outputs yet: the next `pulumi up` reads it back from the machine"
    assert lines[7] == "all 1 agents healthy"


def test_doctor_names_each_failure_with_a_hint(tmp_path, local_sshd, cloud_init_replay):
    cloud_init_replay("agent-1", "done")
    cloud_init_replay("agent-2", "error")
    raw = copy.deepcopy(local_sshd.outputs())
    refused = closed_port_changes(local_sshd)["port"]
    raw["agents"]["agent-2"].update(
        identity={"name": "Agent 2", "email": "someone@else.example"},
        workspace="/nonexistent/workspace",
        remote=f"ssh://root@127.0.0.1:{refused}/srv/app.git",
    )
    raw["agents"]["agent-1"].update(remote=None)
    status, out, err = run_cli("--outputs", write_outputs(tmp_path / "o.json", raw), "doctor")
    assert (status, err) == (1, "")
    assert "  skip  remote        no remote\n" in out
    agent_2 = out[out.index("agent-2 (") :]
    assert "  FAIL  cloud-init    error: ('scripts_user', RuntimeError(" in agent_2
    assert (
        "hint: see what failed: agentfleet exec agent-2 -- tail -n 50 /var/log/cloud-init-output.log"
        in agent_2
    )
    assert (
        "  FAIL  git identity  user.email is 'agent-2@example.com', the outputs say 'someone@else.example'"
        in agent_2
    )
    assert (
        f"  FAIL  workspace     no clone of ssh://root@127.0.0.1:{refused}/srv/app.git in /nonexistent/workspace\n"
        "                      hint: register its deploy key on the remote (agentfleet deploy-keys), "
        "then: agentfleet clone agent-2\n" in agent_2
    )
    assert (
        f"  FAIL  remote        ssh://root@127.0.0.1:{refused}/srv/app.git: "
        f"ssh: connect to host 127.0.0.1 port {refused}: Connection refused" in agent_2
    )
    assert out.endswith("1 of 2 agents failed a check\n")


def test_doctor_skips_the_rest_when_unreachable(tmp_path, local_sshd):
    outputs = with_agent_changed(tmp_path, local_sshd, "agent-1", **closed_port_changes(local_sshd))
    status, out, _ = run_cli("--outputs", outputs, "doctor", "agent-1")
    assert status == 1
    lines = out.splitlines()
    assert lines[1].startswith("  FAIL  reachable     cannot reach 127.0.0.1:")
    assert lines[1].endswith("(connection refused)")
    assert "hint: is the docker machine running? `pulumi up` starts it, or re-creates it if it is gone" in lines[2]
    assert [line.split()[0] for line in lines[3:7]] == ["skip", "skip", "skip", "skip"]
