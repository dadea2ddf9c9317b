"""Refusals on record, for real: what a restricted Docker agent tried and its policy refused (a
TCP connection, a UDP datagram, a DNS name) shows up in `agentfleet audit --denied --json`; the
agent user cannot change the record; a flood leaves a record bounded by the rate limit, with a
line counting what went over it.

The refused destination is a container on the test network listening on 8080, so the refusal is
the policy's and not a closed port; refused packets never leave the agent.
"""

from __future__ import annotations

import json
import posixpath
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentfleet import Fleet
from agentfleet.contract import DENIED_RECORD
from components.egress import REFUSED_BURST, REFUSED_RATE
from components.keys import generate_ed25519
from tests.e2e.support import FleetStack, GitServer, last_reading, listening_server
from tests.e2e.test_audit import run_cli

AGENT = "agent-x"
OPEN = "agent-open"
REFUSED_NAME = "exfil.fleet.test"
FLOOD = 2000
# The record's listener reads the counter of refusals over the limit every 5 s after a busy spell.
POLL_WAIT_S = 12
RECORD_WAIT_S = 30  # at most, for a refusal to be on record


@pytest.fixture(scope="module")
def forbidden_address(git_server: GitServer, agent_image: str):
    with listening_server(git_server.network, agent_image, f"denied-{git_server.name}", (8080,)) as address:
        yield address


@pytest.fixture(scope="module")
def files(git_server: GitServer, forbidden_address: str, make_stack, tmp_path_factory) -> tuple[Path, Path]:
    """The fleet's outputs file and the operator log the tests run the CLI with."""
    stack: FleetStack = make_stack("denied")
    private, public = generate_ed25519("denied-deploy-key")
    git_server.authorize(public)
    stack.set_secret("deployKey", private)
    stack.set_fleet({"attach_networks": [git_server.network], "agents": [
        {"name": AGENT, "identity": {"name": "X", "email": "x@fleet.test"}, "remote": git_server.url,
         "known_hosts": [git_server.known_hosts_line], "credential": {"ssh_key": "deployKey"}},
        {"name": OPEN, "identity": {"name": "Open", "email": "open@fleet.test"}, "egress": "open"},
    ]})
    directory = tmp_path_factory.mktemp("denied")
    outputs = directory / "outputs.json"
    outputs.write_text(json.dumps(stack.up()))
    return outputs, directory / "audit.jsonl"


def agent_run(files: tuple[Path, Path], command: str):
    with Fleet.from_outputs(json.loads(files[0].read_text()), "denied") as client:
        return client.agent(AGENT).run(command, timeout=300)


def denied(files: tuple[Path, Path], *argv: str) -> list[dict]:
    status, out, err = run_cli(files, "audit", "--denied", "--json", *argv)
    assert (status, err) == (0, ""), err
    return [json.loads(line) for line in out.splitlines()]


def test_refused_connections_and_names_are_on_record(files, forbidden_address):
    begun = datetime.now(UTC)
    tcp = agent_run(files, f"timeout 10 bash -c 'exec 3<>/dev/tcp/{forbidden_address}/8080'")
    assert not tcp.ok and "refused" in tcp.stderr.lower(), tcp.stderr
    udp = agent_run(files, f"python3 -c \"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                           f"s.sendto(b'x', ('{forbidden_address}', 9999))\"")
    assert not udp.ok and "not permitted" in udp.stderr.lower(), udp.stderr
    lookup = agent_run(files, f"getent hosts {REFUSED_NAME}")
    assert lookup.exit_status == 2, lookup  # not found: the resolver answered NXDOMAIN

    wanted = {("tcp", forbidden_address, 8080, None), ("udp", forbidden_address, 9999, None),
              ("dns", REFUSED_NAME, None, REFUSED_NAME)}

    def reading() -> tuple[list[dict], list[dict], set[tuple]]:
        ended = datetime.now(UTC)
        entries = denied(files, AGENT)
        recent = [entry for entry in entries if begun <= datetime.fromisoformat(entry["time"]) <= ended]
        return entries, recent, {(e["protocol"], e["destination"], e["port"], e["name"]) for e in recent}

    # nflog hands a packet over within a tenth of a second; a loaded machine writes later.
    entries, recent, shown = last_reading(reading, lambda seen: wanted <= seen[2], RECORD_WAIT_S)
    assert wanted <= shown, recent
    assert {entry["agent"] for entry in entries} == {AGENT}
    assert [entry["time"] for entry in entries] == sorted(entry["time"] for entry in entries)
    assert all(set(entry) == {"time", "agent", "protocol", "destination", "port", "name", "unrecorded"}
               for entry in entries)


def test_the_whole_fleet_in_a_table_and_an_open_agent_has_nothing_refused(files, forbidden_address):
    status, out, err = run_cli(files, "audit", "--denied", "--since", "1h")
    assert (status, err) == (0, "")
    rows = out.splitlines()
    assert rows[0].split() == ["TIME", "(UTC)", "AGENT", "PROTOCOL", "DESTINATION", "PORT"]
    assert any(row.split()[1:] == [AGENT, "tcp", forbidden_address, "8080"] for row in rows[1:]), out
    assert not any(row.split()[1] == OPEN for row in rows[1:])
    assert denied(files, OPEN) == []


def test_the_agent_user_cannot_change_the_record(files):
    owner = agent_run(files, f"stat -c '%U %a' {DENIED_RECORD} {posixpath.dirname(DENIED_RECORD)}")
    assert owner.stdout.split() == ["root", "644", "root", "755"], owner.stdout
    for change in (f"echo forged >> {DENIED_RECORD}", f"rm -f {DENIED_RECORD}", f": > {DENIED_RECORD}",
                   f"mv {DENIED_RECORD} /tmp/x", f"touch {DENIED_RECORD}.1"):
        assert not agent_run(files, change).ok, change
    assert "forged" not in agent_run(files, f"cat {DENIED_RECORD}").stdout


def test_a_flood_leaves_a_bounded_record_that_counts_what_it_left_out(files, forbidden_address):
    before = len(denied(files, AGENT))
    # One SYN each, sent without waiting: the kernel rate-limits the ICMP answers of a flood, and a
    # blocking connect whose answer was dropped would send its SYN again a second later.
    flood = agent_run(files, f"""python3 -c "
import socket, time
start = time.monotonic()
for port in range({FLOOD}):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex(('{forbidden_address}', 10000 + port))
    s.close()
print(time.monotonic() - start)
" """)
    assert flood.ok, flood.stderr
    elapsed = float(flood.stdout)
    time.sleep(POLL_WAIT_S)
    entries = denied(files, AGENT)[before:]
    one_by_one = [entry for entry in entries
                  if entry["protocol"] == "tcp" and 10000 <= entry["port"] < 10000 + FLOOD]
    counted = sum(entry["unrecorded"] or 0 for entry in entries)
    # At most the burst and the rate over the flood's time (and a second of slack) one by one ...
    assert REFUSED_BURST <= len(one_by_one) <= REFUSED_BURST + REFUSED_RATE * (elapsed + 1)
    # ... and every other attempt counted, so the record is bounded and still says how many.
    assert len(one_by_one) + counted >= FLOOD
    size = agent_run(files, f"cat {DENIED_RECORD} {DENIED_RECORD}.1 2>/dev/null | wc -c")
    assert int(size.stdout) < 100_000
