"""Gentle on the forge, end to end: twenty Docker agents boot at once with `forge_connections: 3`,
and the git server never holds more than three of their connections at a time; then
`agentfleet exec --all --parallel 20 -- git fetch` stays under the same limit.

The server records each connection: the fleet's key runs a forced command (an SSH
`command="..."` key option) that writes a start
line, waits a second (so connections last long enough to overlap, as a real clone of a real
repository does), serves git as usual through git-shell, and writes an end line. The span it
records lies inside the connection (TCP and the SSH handshake come before it), and the gate's slot
is held across the whole connection, so the count can only be low when the throttle works.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from agentfleet.cli import main
from components.keys import generate_ed25519
from tests.e2e.support import FleetStack, GitServer, docker

AGENTS = [f"gentle-{number:02d}" for number in range(1, 21)]
LIMIT = 3
LOG = "/tmp/forge-connections.log"
# The git user's login shell is git-shell, which runs a forced command only from its own
# ~/git-shell-commands (by a name without a slash).
RECORDER = "recorded"
RECORDER_PATH = f"/home/git/git-shell-commands/{RECORDER}"
RECORDING = f"""#!/bin/sh
printf 'start %s %s\\n' "$(date +%s.%N)" "$$" >> {LOG}
sleep 1
git-shell -c "$SSH_ORIGINAL_COMMAND"
status=$?
printf 'end %s %s\\n' "$(date +%s.%N)" "$$" >> {LOG}
exit $status
"""


def most_at_once(log: str) -> tuple[int, int]:
    """(the most connections open at one time, how many there were) from the recorder's lines;
    at equal times an end counts before a start."""
    events, opened, closed = [], set(), set()
    for line in log.splitlines():
        kind, when, pid = line.split()
        (opened if kind == "start" else closed).add(pid)
        events.append((float(when), 0 if kind == "end" else 1))
    assert opened == closed, f"connections without an end on record: {sorted(opened - closed)}"
    held = most = 0
    for _, starts in sorted(events):
        held += 1 if starts else -1
        most = max(most, held)
    return most, len(opened)


def test_most_at_once_counts_overlaps_not_connections():
    log = "start 1.0 a\nstart 1.5 b\nend 2.0 a\nstart 2.0 c\nend 3.0 b\nend 3.0 c\nstart 4.0 d\nend 5.0 d\n"
    assert most_at_once(log) == (2, 4)


@pytest.fixture(scope="module")
def recording_server(git_server: GitServer) -> GitServer:
    docker("exec", "-i", "-u", "git", git_server.name, "sh", "-c",
           f"mkdir -p {Path(RECORDER_PATH).parent} && cat > {RECORDER_PATH} && chmod 755 {RECORDER_PATH}",
           stdin=RECORDING)
    return git_server


def recorded(server: GitServer) -> str:
    return docker("exec", "-u", "git", server.name, "sh", "-c", f"cat {LOG} 2>/dev/null; : > {LOG}")


@pytest.fixture(scope="module")
def fleet(recording_server: GitServer, make_stack, tmp_path_factory) -> tuple[FleetStack, Path, str]:
    """Twenty agents up at once; returns the stack, its outputs file and the boot's record."""
    stack: FleetStack = make_stack("gentle")
    private, public = generate_ed25519("gentle-deploy-key")
    recording_server.authorize(f'command="{RECORDER}",no-pty,no-port-forwarding {public.strip()}')
    stack.set_secret("gentleKey", private)
    stack.set_fleet({
        "attach_networks": [recording_server.network],
        "forge_connections": LIMIT,
        "defaults": {
            "resources": {"cpus": 0.25, "memory": "192m", "pids": 128},
            "remote": recording_server.url, "known_hosts": [recording_server.known_hosts_line],
            "credential": {"ssh_key": "gentleKey"},
        },
        "agents": [{"name": name, "identity": {"name": f"Agent {name}", "email": f"{name}@fleet.test"}}
                   for name in AGENTS],
    })
    recorded(recording_server)  # an empty record before the boot
    outputs = stack.up()
    outputs_file = tmp_path_factory.mktemp("gentle") / "outputs.json"
    outputs_file.write_text(json.dumps(outputs))
    outputs_file.chmod(0o600)
    return stack, outputs_file, recorded(recording_server)


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), out, err, {})
    return status, out.getvalue(), err.getvalue()


def test_twenty_agents_boot_within_the_limit_and_all_clone(fleet):
    _, outputs_file, boot = fleet
    most, connections = most_at_once(boot)
    assert connections >= len(AGENTS), f"only {connections} connections on record for {len(AGENTS)} first clones"
    assert most <= LIMIT, f"the server held {most} connections at once during the boot (limit {LIMIT})"
    assert most >= 2, "the clones went one at a time: the gate admits up to the limit at once"
    status, out, err = cli("--outputs", str(outputs_file), "exec", "--all", "--parallel", "20",
                           "--", "git", "log", "-1", "--format=%s", "origin/main")
    assert status == 0, err
    assert err.endswith(f"{len(AGENTS)} ok, 0 failed\n"), err


def test_exec_all_git_fetch_keeps_within_the_limit(fleet, recording_server):
    _, outputs_file, _ = fleet
    recorded(recording_server)  # what came before (exec's stale base checks fetch too) is not this test's
    status, _, err = cli("--outputs", str(outputs_file), "exec", "--all", "--parallel", "20", "--", "git", "fetch", "-q")
    assert status == 0, err
    most, connections = most_at_once(recorded(recording_server))
    assert connections >= len(AGENTS), f"{connections} fetches on record for {len(AGENTS)} agents"
    assert most <= LIMIT, f"the server held {most} connections at once during exec --all git fetch (limit {LIMIT})"
