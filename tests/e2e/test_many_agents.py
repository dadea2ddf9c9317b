"""Twenty agents commit and push their own branches at once, through `agentfleet exec --all`
and through the Python API, and the git server ends up holding every commit.

The git server turns away the first push of every new commit (a pre-receive hook), as a forge
under load closes connections: the pushes succeed because the client is asked to retry, and the
audit log shows both attempts of every agent.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from agentfleet import Fleet
from agentfleet.audit import AuditLog
from agentfleet.cli import main
from agentfleet.retry import Backoff
from components.keys import generate_ed25519
from tests.e2e.support import FleetStack, GitServer, docker

AGENTS = [f"load-{number:02d}" for number in range(1, 21)]
HOOK = "/srv/git/app.git/hooks/pre-receive"
BUSY_HOOK = """#!/bin/sh
# A busy forge: the first push of each new commit to an agent/load-* branch is turned away.
status=0
while read -r old new ref; do
    case $ref in refs/heads/agent/load-*) ;; *) continue ;; esac
    [ -e "/tmp/pushed-once-$new" ] && continue
    touch "/tmp/pushed-once-$new"
    echo "server busy, try again later" >&2
    status=1
done
exit $status
"""


@pytest.fixture(scope="module")
def busy_git_server(git_server: GitServer):
    docker("exec", "-i", "-u", "git", git_server.name, "sh", "-c", f"cat > {HOOK} && chmod 755 {HOOK}",
           stdin=BUSY_HOOK)
    try:
        yield git_server
    finally:
        docker("exec", "-u", "git", git_server.name, "rm", "-f", HOOK, check=False)


@pytest.fixture(scope="module")
def fleet(busy_git_server: GitServer, make_stack, tmp_path_factory):
    stack: FleetStack = make_stack("many")
    private, public = generate_ed25519("load-deploy-key")
    busy_git_server.authorize(public)
    stack.set_secret("loadKey", private)
    stack.set_fleet({
        "attach_networks": [busy_git_server.network],
        "defaults": {
            "resources": {"cpus": 0.25, "memory": "192m", "pids": 128},
            "remote": busy_git_server.url, "known_hosts": [busy_git_server.known_hosts_line],
            "credential": {"ssh_key": "loadKey"},
        },
        "agents": [{"name": name, "identity": {"name": f"Agent {name}", "email": f"{name}@fleet.test"}}
                   for name in AGENTS],
    })
    outputs = stack.up()
    directory = tmp_path_factory.mktemp("many")
    outputs_file = directory / "outputs.json"
    with open(os.open(outputs_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
        json.dump(outputs, handle)
    return stack, outputs, outputs_file, directory


def cli(log: Path, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), out, err, {"AGENTFLEET_AUDIT_LOG": str(log)})
    return status, out.getvalue(), err.getvalue()


def pushes(log: Path) -> dict[str, list[tuple[int, int | None]]]:
    """(attempt, exit status) of every `git push` on record, per agent."""
    found: dict[str, list[tuple[int, int | None]]] = {}
    for line in log.read_text().splitlines():
        record = json.loads(line)
        if "git push" in record["command"]:
            found.setdefault(record["agent"], []).append((record["attempt"], record["exit_status"]))
    return {agent: sorted(attempts) for agent, attempts in found.items()}


def subjects(server: GitServer, agent: str) -> list[str]:
    """The commits on the agent's branch on the server, newest first: author email and subject."""
    return server.git("log", "--format=%ae %s", f"agent/{agent}").splitlines()


def test_twenty_agents_push_at_once_through_exec_all(fleet, busy_git_server):
    _, _, outputs_file, directory = fleet
    log = directory / "cli-audit.jsonl"
    common = ("--outputs", str(outputs_file), "exec", "--all", "--parallel", "20")
    status, _, err = cli(log, *common, "--", "git", "commit", "-q", "--allow-empty", "-m", "work via exec --all")
    assert status == 0, err
    status, _, err = cli(log, *common, "--retry", "3", "--", "git", "push", "-q", "origin", "HEAD")
    assert status == 0, err
    assert err.count("attempt 1 failed (exit status 1)") == len(AGENTS) and err.endswith("20 ok, 0 failed\n")
    assert pushes(log) == {agent: [(1, 1), (2, 0)] for agent in AGENTS}
    for agent in AGENTS:
        assert subjects(busy_git_server, agent)[0] == f"{agent}@fleet.test work via exec --all"


def test_twenty_agents_push_at_once_through_the_python_api(fleet, busy_git_server):
    stack, outputs, _, directory = fleet
    log = AuditLog(directory / "api-audit.jsonl", stack.name)
    with Fleet.from_outputs(outputs, stack.name, audit=log) as client:
        committed = client.run_all(["git", "commit", "-q", "--allow-empty", "-m", "work via the API"], parallel=20)
        assert all(outcome.ok for outcome in committed.values()), committed
        pushed = client.run_all(["git", "push", "-q", "origin", "HEAD"], parallel=20, retries=3,
                                backoff=Backoff(delay=0.2, ceiling=2.0))
    assert {agent: outcome.ok for agent, outcome in pushed.items()} == {agent: True for agent in AGENTS}
    assert pushes(log.path) == {agent: [(1, 1), (2, 0)] for agent in AGENTS}
    for agent in AGENTS:
        assert subjects(busy_git_server, agent)[0] == f"{agent}@fleet.test work via the API"
