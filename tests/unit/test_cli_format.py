"""Tier 1: what the CLI prints and exits with, without any SSH (pure functions, in-process CLI)."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import pytest

from agentfleet import errors
from agentfleet.cli import ExitStatus, exit_status_for, main, split_command
from agentfleet.endpoint import AgentEndpoint, Identity
from agentfleet.render import PrefixedLines, ls_record, render_ls_json, render_ls_table, render_summary
from agentfleet.result import Result
from agentfleet.sshconfig import SshFiles, config_path, render_known_hosts, render_ssh_config, write_ssh_files
from tests.key_marks import PRIVATE_KEY_BEGIN, PRIVATE_KEY_END

KEY_LINE = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAII5Xl26SeZSr1qZOIseLSxi9scEj+eDcnj1VKgWf4zWy"


def endpoint(index: int, **changes) -> AgentEndpoint:
    values = dict(
        name=f"agent-{index}",
        backend="docker",
        host="127.0.0.1",
        port=22000 + index,
        user="agent",
        known_hosts=f"[127.0.0.1]:{22000 + index} {KEY_LINE}",
        identity=Identity(f"Agent {index}", f"agent-{index}@example.com"),
        remote=None,
        branch=f"agent/agent-{index}",
        workspace="/home/agent/workspace",
        remote_public_key=None,
        private_key=f"{PRIVATE_KEY_BEGIN}\nsecret\n{PRIVATE_KEY_END}",
    )
    values.update(changes)
    return AgentEndpoint(**values)


AGENTS = [endpoint(1, user_namespace="remapped"), endpoint(2, backend="multipass", name="agent-two", user_namespace="vm")]
DOWN = errors.Unreachable("agent-two", "127.0.0.1:22002", "connection refused")


def test_ls_table():
    assert render_ls_table(AGENTS, {"agent-1": None, "agent-two": DOWN}) == (
        "NAME       BACKEND    ENDPOINT         REACHABLE  USERNS    IDENTITY\n"
        "agent-1    docker     127.0.0.1:22001  yes        remapped  Agent 1 <agent-1@example.com>\n"
        "agent-two  multipass  127.0.0.1:22002  no         vm        Agent 2 <agent-2@example.com>\n"
    )


def test_ls_table_shows_a_dash_for_outputs_that_do_not_say_yet():
    table = render_ls_table([endpoint(1)], {"agent-1": None})
    assert table.splitlines()[1].split()[:5] == ["agent-1", "docker", "127.0.0.1:22001", "yes", "-"]


def test_ls_json_has_the_endpoint_and_why_not_reachable_but_no_key():
    text = render_ls_json([ls_record(AGENTS[0], None), ls_record(AGENTS[1], DOWN)])
    records = json.loads(text)
    assert records[0] == {
        "name": "agent-1",
        "backend": "docker",
        "host": "127.0.0.1",
        "port": 22001,
        "user": "agent",
        "reachable": True,
        "error": None,
        "identity": {"name": "Agent 1", "email": "agent-1@example.com"},
        "remote": None,
        "branch": "agent/agent-1",
        "workspace": "/home/agent/workspace",
        "user_namespace": "remapped",
    }
    assert records[1]["reachable"] is False and "connection refused" in records[1]["error"]
    assert "PRIVATE" not in text


def test_ssh_config_rendering():
    files = SshFiles(Path("/p/.agentfleet/dev"))
    assert render_ssh_config(AGENTS[:1], files, "dev") == (
        "# agentfleet: fleet dev; rewritten by `agentfleet ssh-config`\n"
        "\n"
        "Host agent-1\n"
        "  HostName 127.0.0.1\n"
        "  Port 22001\n"
        "  User agent\n"
        "  IdentityFile /p/.agentfleet/dev/keys/agent-1\n"
        "  IdentitiesOnly yes\n"
        "  UserKnownHostsFile /p/.agentfleet/dev/known_hosts\n"
        "  StrictHostKeyChecking yes\n"
    )
    assert render_known_hosts(AGENTS) == (f"[127.0.0.1]:22001 {KEY_LINE}\n[127.0.0.1]:22002 {KEY_LINE}\n")


def test_ssh_config_paths_are_escaped():
    assert config_path(Path("/home/me/my fleet/keys/a")) == '"/home/me/my fleet/keys/a"'
    assert config_path(Path("/srv/100%/keys/a")) == "/srv/100%%/keys/a"


def test_ssh_files_keep_private_keys_private(tmp_path):
    files = SshFiles(tmp_path / ".agentfleet" / "dev")
    key = files.key("agent-1")
    files.keys.mkdir(parents=True)
    key.write_text("stale")
    key.chmod(0o644)
    write_ssh_files(AGENTS, files, "dev")
    mode = lambda path: stat.S_IMODE(path.stat().st_mode)  # noqa: E731
    assert (mode(files.directory), mode(files.keys), mode(key), mode(files.key("agent-two"))) == (
        0o700,
        0o700,
        0o600,
        0o600,
    )
    assert key.read_text() == AGENTS[0].private_key + "\n"
    assert (files.directory / ".gitignore").read_text() == "*\n"
    assert files.config.read_text().count("Host ") == 2


def test_prefixed_lines_are_whole_and_labelled():
    out, err = io.StringIO(), io.StringIO()
    lines = PrefixedLines(["agent-1", "agent-10"], out, err)
    lines.write("agent-1", "stdout", "one\ntw")
    lines.write("agent-10", "stdout", "ten\n")
    lines.write("agent-1", "stdout", "o\nthr")
    lines.write("agent-1", "stderr", "oops\n")
    lines.finish("agent-1")
    lines.finish("agent-10")
    assert out.getvalue() == "agent-1  | one\nagent-10 | ten\nagent-1  | two\nagent-1  | thr\n"
    assert err.getvalue() == "agent-1  | oops\n"


def test_summary_counts_failures_of_both_kinds():
    outcomes = {"a": Result("x", 0, "", ""), "b": Result("x", 2, "", ""), "c": DOWN}
    assert render_summary(outcomes) == "1 ok, 2 failed\n"


@pytest.mark.parametrize(
    "error, status",
    [
        (errors.UsageError("x"), 2),
        (errors.UnknownAgent("x", ["a"]), 2),
        (errors.StackNotFound("x"), 3),
        (errors.PulumiError("x"), 3),
        (errors.OutputsInvalid("dev", ["x"]), 3),
        (errors.CommandTimeout("a", "x", 1, ""), 124),
        (errors.Unreachable("a", "h:1", "x"), 255),
        (errors.HostKeyMismatch("a", "h:1", "k1", "k2"), 255),
        (errors.AuthenticationFailed("a", "h:1", "agent"), 255),
        (errors.AgentfleetError("x"), 1),
    ],
)
def test_each_error_has_its_exit_status(error, status):
    assert exit_status_for(error) == status


def test_split_command_at_the_first_double_dash():
    assert split_command(["exec", "a", "--", "git", "--", "x"]) == (["exec", "a"], ["git", "--", "x"])
    assert split_command(["ls"]) == (["ls"], [])


def run_cli(*argv: str, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), out, err, environ or {})
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def outputs_path(tmp_path, make_key) -> Path:
    host = make_key("host").public.split()
    raw = {
        "agents": {
            "agent-1": {
                "backend": "docker",
                "host": "127.0.0.1",
                "port": 22001,
                "user": "agent",
                "known_hosts": f"[127.0.0.1]:22001 {host[0]} {host[1]}",
                "identity": {"name": "Agent One", "email": "agent-1@example.com"},
                "remote": None,
                "branch": "agent/agent-1",
                "workspace": "/home/agent/workspace",
                "remote_public_key": None,
                "ssh_config": "",
            }
        },
        "agent_private_keys": {"agent-1": make_key("agent-1").private},
    }
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(raw))
    return path


@pytest.mark.parametrize(
    "argv, status, message",
    [
        (
            ["exec", "agent-1"],
            2,
            "agentfleet: give the command after --: agentfleet exec agent-1 -- git status\n",
        ),
        (
            ["exec", "--", "true"],
            2,
            "agentfleet: give one agent NAME or --all: agentfleet exec agent-1 -- git status\n",
        ),
        (
            ["exec", "--all", "agent-1", "--", "true"],
            2,
            "agentfleet: give one agent NAME or --all: agentfleet exec agent-1 -- git status\n",
        ),
        (["ls", "--", "true"], 2, "agentfleet: `agentfleet ls` takes no command after --\n"),
        (
            ["exec", "agent-9", "--", "true"],
            2,
            "agentfleet: no agent named 'agent-9'; known agents: agent-1\n",
        ),
        (["doctor", "agent-9"], 2, "agentfleet: no agent named 'agent-9'; known agents: agent-1\n"),
    ],
)
def test_usage_errors_are_one_line_and_status_2(outputs_path, argv, status, message):
    assert run_cli("--outputs", str(outputs_path), *argv) == (status, "", message)


def test_options_may_follow_the_subcommand(outputs_path, tmp_path):
    status, out, _ = run_cli("ssh-config", "--outputs", str(outputs_path), "--output", str(tmp_path / "ssh"))
    assert status == 0 and "ssh -F" in out


def test_invalid_outputs_exit_3_without_traceback(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text(json.dumps({"agents": {"agent-1": {"host": "127.0.0.1"}}, "agent_private_keys": {}}))
    status, out, err = run_cli("--outputs", str(path), "ls")
    assert status == 3 and out == ""
    assert err.startswith("agentfleet: outputs of outputs file ") and err.count("\n") == 1
    assert "agents.agent-1.port is missing" in err and "Traceback" not in err


def test_traceback_flag_shows_the_stack(tmp_path):
    status, _, err = run_cli("--traceback", "--outputs", str(tmp_path / "none.json"), "ls")
    assert status == 2 and "Traceback (most recent call last)" in err
    assert err.endswith("--outputs or AGENTFLEET_OUTPUTS\n")


def test_stack_and_outputs_together_are_refused(outputs_path):
    status, _, err = run_cli("--stack", "dev", "ls", "--outputs", str(outputs_path))
    assert (status, err) == (2, "agentfleet: give either --stack or --outputs, not both\n")


def test_outputs_from_the_environment(outputs_path, tmp_path):
    environ = {"AGENTFLEET_OUTPUTS": str(outputs_path)}
    status, _, _ = run_cli("ssh-config", "--output", str(tmp_path / "ssh"), environ=environ)
    assert status == 0 and (tmp_path / "ssh" / "keys" / "agent-1").exists()


def test_argparse_errors_go_to_the_injected_stream():
    status, out, err = run_cli("frobnicate")
    assert status == ExitStatus.USAGE and out == "" and "invalid choice: 'frobnicate'" in err


class _ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError


def test_a_reader_that_goes_away_ends_the_cli_quietly(tmp_path):
    """`agentfleet ls | head -0`: no traceback, the exit status of a process killed by SIGPIPE."""
    from components.keys import generate_ed25519

    recorded = json.loads((Path(__file__).parent / "fixtures" / "outputs" / "try-without-secrets.json").read_text())
    recorded["agent_private_keys"] = {name: generate_ed25519(name)[0] for name in recorded["agents"]}
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(recorded))
    err = io.StringIO()
    status = main(["--outputs", str(outputs), "ls", "--json"], stdout=_ClosedPipe(), stderr=err, environ={})
    assert status == ExitStatus.BROKEN_PIPE
    assert err.getvalue() == ""
