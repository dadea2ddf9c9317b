"""Tier 2: `agentfleet doctor`'s judgements of recorded cloud-init and git outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentfleet.doctor import (
    Check,
    Diagnosis,
    Verdict,
    cloud_init_status,
    judge_cloud_init,
    judge_identity,
    judge_remote,
    judge_user_namespace,
    remote_command,
)
from agentfleet.endpoint import AgentEndpoint, Identity
from agentfleet.render import render_diagnosis
from agentfleet.result import Result

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED = Identity("Agent One", "agent-1@example.com")
REMOTE = "ssh://git@127.0.0.1:2222/srv/git/app.git"


def recorded(kind: str, case: str) -> dict[str, Result]:
    data = json.loads((FIXTURES / kind / f"{case}.json").read_text())
    return {key: Result(**value) for key, value in data.items() if key != "recorded"}


def cloud_init_check(case: str) -> Check:
    runs = recorded("cloud-init", case)
    return judge_cloud_init("agent-1", runs["status"], runs["long"])


@pytest.mark.parametrize(
    "case, status", [("done", "done"), ("error", "error"), ("running", "running"), ("not-run", "not run")]
)
def test_status_line_is_read_from_both_forms(case, status):
    runs = recorded("cloud-init", case)
    assert cloud_init_status(runs["status"].stdout) == cloud_init_status(runs["long"].stdout) == status


def test_cloud_init_done_passes():
    runs = recorded("cloud-init", "done")
    assert judge_cloud_init("agent-1", runs["status"], None) == Check("cloud-init", Verdict.OK, "done")


def test_cloud_init_error_shows_the_failed_module_and_where_to_look():
    check = cloud_init_check("error")
    assert check.verdict is Verdict.FAIL
    assert check.detail == (
        "error: ('scripts_user', RuntimeError('Runparts: 1 failures (runcmd) in 1 attempted commands'))"
    )
    assert (
        check.hint == "see what failed: agentfleet exec agent-1 -- tail -n 50 /var/log/cloud-init-output.log"
    )


@pytest.mark.parametrize(
    "case, detail",
    [
        ("running", "not finished (running: Running in stage: init)"),
        ("not-run", "not finished (not run: Cloud-init enabled on sysvinit)"),
    ],
)
def test_cloud_init_not_finished_says_wait(case, detail):
    check = cloud_init_check(case)
    assert (check.verdict, check.detail) == (Verdict.FAIL, detail)
    assert check.hint == "wait for it: agentfleet exec agent-1 -- cloud-init status --wait"


def test_cloud_init_missing_on_the_agent():
    missing = Result("cloud-init status", 127, "", "bash: line 1: cloud-init: command not found\n")
    check = judge_cloud_init("agent-1", missing, None)
    assert (check.verdict, check.detail) == (Verdict.FAIL, "cloud-init is not installed on the agent")


def test_identity_matching_the_outputs_passes():
    check = judge_identity(recorded("git", "identity-set")["result"], EXPECTED)
    assert check == Check("git identity", Verdict.OK, "Agent One <agent-1@example.com>")


def test_identity_differing_names_the_key_and_both_values():
    check = judge_identity(recorded("git", "identity-other-email")["result"], EXPECTED)
    assert check.verdict is Verdict.FAIL
    assert check.detail == "user.email is 'someone@else.example', the outputs say 'agent-1@example.com'"
    assert "pulumi up" in check.hint


def test_identity_unset():
    check = judge_identity(recorded("git", "identity-unset")["result"], EXPECTED)
    assert check.detail == (
        "user.name is not set, the outputs say 'Agent One'; "
        "user.email is not set, the outputs say 'agent-1@example.com'"
    )


def test_remote_command_prefers_the_workspace_origin():
    assert remote_command(REMOTE, "/home/agent/workspace") == [
        "env",
        "GIT_TERMINAL_PROMPT=0",
        "git",
        "-C",
        "/home/agent/workspace",
        "ls-remote",
        "--exit-code",
        "origin",
    ]
    assert remote_command(REMOTE, None) == [
        "env",
        "GIT_TERMINAL_PROMPT=0",
        "git",
        "ls-remote",
        "--exit-code",
        REMOTE,
    ]


def test_an_empty_remote_repository_still_answers():
    check = judge_remote(REMOTE, recorded("git", "ls-remote-empty")["result"], via_clone=False)
    assert check == Check(
        "remote", Verdict.OK, f"{REMOTE} answers (asked directly: no clone in the workspace): 0 refs"
    )


def test_an_unreachable_remote_fails_with_gits_reason():
    check = judge_remote(REMOTE, recorded("git", "ls-remote-refused")["result"], via_clone=True)
    assert check.verdict is Verdict.FAIL
    assert check.detail == (
        f"{REMOTE}: ssh: connect to host 127.0.0.1 port 1: Connection refused"
        " / fatal: Could not read from remote repository."
    )
    assert "remote_public_key" in check.hint


def test_diagnosis_rendering_shows_hints_for_failures_only():
    agent = AgentEndpoint(
        name="agent-1",
        backend="docker",
        host="127.0.0.1",
        port=22001,
        user="agent",
        known_hosts="",
        identity=EXPECTED,
        remote=None,
        branch="agent/agent-1",
        workspace="/home/agent/workspace",
        remote_public_key=None,
        private_key="",
    )
    diagnosis = Diagnosis(
        agent,
        (
            Check("reachable", Verdict.OK, "agent@127.0.0.1:22001"),
            cloud_init_check("error"),
            Check("git identity", Verdict.OK, str(EXPECTED), "unused hint"),
            Check("remote", Verdict.SKIP, "no remote"),
        ),
    )
    assert not diagnosis.ok
    assert render_diagnosis(diagnosis) == (
        "agent-1 (docker, 127.0.0.1:22001)\n"
        "  ok    reachable     agent@127.0.0.1:22001\n"
        "  FAIL  cloud-init    error: ('scripts_user', RuntimeError('Runparts: 1 failures (runcmd) "
        "in 1 attempted commands'))\n"
        "                      hint: see what failed: "
        "agentfleet exec agent-1 -- tail -n 50 /var/log/cloud-init-output.log\n"
        "  ok    git identity  Agent One <agent-1@example.com>\n"
        "  skip  remote        no remote\n"
    )


def user_namespace_check(backend: str, value: str | None) -> Check:
    return judge_user_namespace(AgentEndpoint("agent-1", backend, "127.0.0.1", 22001, "agent", "", EXPECTED, None,
                                              "main", None, None, "", user_namespace=value))


def test_user_namespace_is_reported_as_read_back_and_never_fails():
    remapped = user_namespace_check("docker", "remapped")
    assert (remapped.name, remapped.verdict) == ("userns", Verdict.OK)
    assert remapped.detail.startswith("yes: root in the container is an unprivileged uid of its host")
    assert "hostUsers: false" in user_namespace_check("kubernetes", "remapped").detail
    shared = user_namespace_check("docker", "none")
    assert shared.verdict is Verdict.OK and shared.detail.startswith("no: root in the container is its host's root")
    assert "`pulumi preview` says why" in user_namespace_check("kubernetes", "none").detail
    assert user_namespace_check("lima", "vm").detail == "not applicable: the agent has a kernel of its own (a VM)"
    unknown = user_namespace_check("docker", None)
    assert unknown.verdict is Verdict.SKIP and "the next `pulumi up`" in unknown.detail
