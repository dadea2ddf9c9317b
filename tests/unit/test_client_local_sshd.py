"""Real-sshd tests of the Python API: real paramiko against the throwaway OpenSSH server.

The server (tests/conftest.py: local_sshd) plays two agents on two ports; nothing is mocked.
"""

from __future__ import annotations

import base64
import copy
import socket
import time

import paramiko
import pytest

from agentfleet import (
    AuthenticationFailed,
    CommandTimeout,
    Fleet,
    HostKeyMismatch,
    Result,
    Unreachable,
)


@pytest.fixture
def fleet(local_sshd):
    with Fleet.from_outputs(local_sshd.outputs(), "local") as fleet:
        yield fleet


def fleet_with(local_sshd, agent: str = "agent-1", connect_timeout: float = 10.0, **changes) -> Fleet:
    raw = copy.deepcopy(local_sshd.outputs())
    raw["agents"][agent].update(changes)
    return Fleet.from_outputs(raw, "local", connect_timeout=connect_timeout)


def fingerprint(public_line: str) -> str:
    kind, blob = public_line.split()[:2]
    return paramiko.PKey.from_type_string(kind, base64.b64decode(blob)).fingerprint


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def moved_to(local_sshd, agent: str, port: int) -> dict:
    """Outputs changes that move agent's endpoint to port, key still pinned for it."""
    kind, blob = local_sshd.host_key.public.split()[:2]
    return {"port": port, "known_hosts": f"[127.0.0.1]:{port} {kind} {blob}"}


def test_run_returns_output_and_exit_status(fleet):
    result = fleet.agent("agent-1").run(["sh", "-c", "echo out; echo err >&2; exit 3"], cwd="/")
    assert result == Result("cd / || exit; sh -c 'echo out; echo err >&2; exit 3'", 3, "out\n", "err\n")
    assert not result.ok
    assert fleet.agent("agent-1").run(["true"]).ok


def test_stdin_reaches_the_command_and_not_its_command_line(fleet):
    result = fleet.agent("agent-1").run("cat; echo end", cwd="/", stdin=b"ghs_secret\n")
    assert result.ok and result.stdout == "ghs_secret\nend\n" and "ghs_secret" not in result.command


def test_argv_is_quoted_for_the_remote_shell(fleet):
    words = ["a b", "$HOME", "it's", "*", "; rm -rf /"]
    result = fleet.agent("agent-1").run(["printf", "%s\\n", *words])
    assert result.stdout.splitlines() == words


def test_a_string_is_passed_to_the_shell_as_is(fleet):
    assert fleet.agent("agent-1").run("echo $((6 * 7)) | tr 4 x").stdout == "x2\n"


def test_commands_run_in_the_workspace_unless_told(fleet, local_sshd):
    agent = fleet.agent("agent-2")
    assert agent.run(["pwd"]).stdout.strip() == str(local_sshd.homes["agent-2"] / "workspace")
    assert agent.run(["git", "log", "-1", "--format=%s"]).stdout == "seed\n"
    assert agent.run(["pwd"], cwd="/").stdout == "/\n"
    missing = agent.run(["pwd"], cwd="/no/such/dir")
    assert missing.exit_status == 1 and "/no/such/dir" in missing.stderr and missing.stdout == ""


def test_each_agent_has_its_own_git_identity(fleet):
    emails = {
        name: fleet.agent(name).run(["git", "config", "user.email"]).stdout.strip() for name in fleet.names
    }
    assert emails == {"agent-1": "agent-1@example.com", "agent-2": "agent-2@example.com"}


def test_output_is_streamed_as_it_comes(fleet):
    seen: list[tuple[float, str, str]] = []
    started = time.monotonic()
    result = fleet.agent("agent-1").run(
        ["sh", "-c", "echo first; echo warn >&2; sleep 1; echo second"],
        stream=lambda which, text: seen.append((time.monotonic() - started, which, text)),
    )
    ended = time.monotonic() - started
    assert "".join(text for _, which, text in seen if which == "stdout") == result.stdout == "first\nsecond\n"
    assert [text for _, which, text in seen if which == "stderr"] == ["warn\n"]
    first_at = next(at for at, _, text in seen if text.startswith("first"))
    assert ended - first_at > 0.8, "first line arrived only when the command ended"


def test_an_error_in_the_stream_callback_is_the_callers_not_a_broken_link(fleet):
    def closed_pipe(which: str, text: str) -> None:
        raise BrokenPipeError("the reader went away")

    agent = fleet.agent("agent-1")
    with pytest.raises(BrokenPipeError, match="the reader went away"):
        agent.run(["echo", "hello"], stream=closed_pipe)
    assert agent.run(["echo", "still here"]).stdout == "still here\n"


def test_multibyte_text_split_across_reads_is_decoded_whole(fleet):
    result = fleet.agent("agent-1").run(["sh", "-c", "for i in $(seq 1 20000); do printf '€'; done"])
    assert result.stdout == "€" * 20000


def test_timeout_raises_with_what_was_printed_and_keeps_the_connection(fleet):
    agent = fleet.agent("agent-1")
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as caught:
        agent.run(["sh", "-c", "echo started; sleep 30"], timeout=1)
    assert time.monotonic() - started < 5
    assert "agent-1: `" in str(caught.value) and "timed out after 1 s; last output: started" in str(
        caught.value
    )
    assert agent.run(["echo", "still here"]).stdout == "still here\n"


def test_one_connection_is_reused_across_commands(fleet):
    agent = fleet.agent("agent-1")
    assert fleet.agent("agent-1") is agent
    client_ports = {agent.run("echo $SSH_CONNECTION").stdout.split()[1] for _ in range(3)}
    assert len(client_ports) == 1


def test_close_is_safe_twice_and_the_next_run_reconnects(fleet):
    agent = fleet.agent("agent-1")
    before = agent.run("echo $SSH_CONNECTION").stdout.split()[1]
    agent.close()
    agent.close()
    after = agent.run("echo $SSH_CONNECTION").stdout.split()[1]
    assert before != after
    fleet.close()
    fleet.close()


def test_run_all_runs_in_parallel_within_the_bound(fleet):
    command = ["sh", "-c", "date +%s.%N; sleep 0.6; date +%s.%N"]
    started = time.monotonic()
    results = fleet.run_all(command, parallel=2)
    assert time.monotonic() - started < 1.15, "two agents at parallel=2 did not overlap"
    assert list(results) == ["agent-1", "agent-2"] and all(r.ok for r in results.values())

    spans = sorted(tuple(map(float, r.stdout.split())) for r in fleet.run_all(command, parallel=1).values())
    assert spans[0][1] <= spans[1][0], f"parallel=1 overlapped: {spans}"


def test_run_all_streams_with_the_agent_name(fleet):
    seen = []
    fleet.run_all(
        "echo $HOME", stream=lambda name, which, text: seen.append((name, which, text.split("/")[-1]))
    )
    assert sorted(seen) == [("agent-1", "stdout", "agent-1\n"), ("agent-2", "stdout", "agent-2\n")]


def test_run_all_keeps_each_agents_failure_its_own(local_sshd):
    port = closed_port()
    with fleet_with(local_sshd, "agent-2", **moved_to(local_sshd, "agent-2", port)) as fleet:
        results = fleet.run_all(["true"])
    assert isinstance(results["agent-1"], Result) and results["agent-1"].ok
    assert isinstance(results["agent-2"], Unreachable)
    assert f"cannot reach 127.0.0.1:{port} (connection refused)" in str(results["agent-2"])


def test_a_changed_host_key_is_refused(local_sshd, make_key):
    other = make_key("not the server")
    pinned_other = fleet_with(local_sshd, known_hosts=local_sshd.known_hosts("agent-1", other))
    with pinned_other as fleet, pytest.raises(HostKeyMismatch) as caught:
        fleet.agent("agent-1").run(["true"])
    message = str(caught.value)
    port = local_sshd.ports["agent-1"]
    assert message.startswith(f"agent-1: the host key of 127.0.0.1:{port} changed")
    assert "pulumi up" in message and "refused" in message
    assert f"it offers ssh-ed25519 {fingerprint(local_sshd.host_key.public)}" in message
    assert f"the outputs pin ssh-ed25519 {fingerprint(other.public)}" in message


def test_a_refused_operator_key_is_authentication_failed(local_sshd, make_key):
    raw = copy.deepcopy(local_sshd.outputs())
    raw["agent_private_keys"]["agent-1"] = make_key("stranger").private
    refused = pytest.raises(AuthenticationFailed, match="refused the operator key for user 'root'")
    with Fleet.from_outputs(raw, "local") as fleet, refused:
        fleet.agent("agent-1").run(["true"])


def test_a_closed_port_is_unreachable_with_a_hint(local_sshd):
    port = closed_port()
    moved = fleet_with(local_sshd, **moved_to(local_sshd, "agent-1", port))
    with moved as fleet, pytest.raises(Unreachable) as caught:
        fleet.agent("agent-1").run(["true"])
    assert str(caught.value) == (
        f"agent-1: cannot reach 127.0.0.1:{port} (connection refused); is the agent up? "
        "Run `agentfleet doctor agent-1`, or `pulumi up`: it starts a stopped machine and re-creates a deleted one"
    )


def test_a_silent_endpoint_times_out_as_unreachable(local_sshd):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        started = time.monotonic()
        silent_fleet = fleet_with(local_sshd, connect_timeout=1, **moved_to(local_sshd, "agent-1", port))
        with silent_fleet as fleet, pytest.raises(Unreachable, match=f"cannot reach 127.0.0.1:{port}"):
            fleet.agent("agent-1").open()
        assert time.monotonic() - started < 5
