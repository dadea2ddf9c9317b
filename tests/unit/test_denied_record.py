"""Refusals on record, without a machine: the agent's side (cloud-init/agentfleet_denied.py: nflog
messages and packets into records, a bounded file, the resolver's refused names) and the client's
(agentfleet/denied.py: the record's lines into entries, merged by time, rendered)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import ipaddress
import json
import socket
import struct
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentfleet import contract
from agentfleet.denied import (
    NO_RECORD,
    OPEN_EGRESS,
    AgentDenied,
    judge_read,
    merged,
    parse_entry,
)
from agentfleet.render import render_audit_json, render_denied_table
from agentfleet.result import Result
from components import egress
from components.egress import EgressPolicy
from tests.unit.spec_helpers import agent, load

CLOUD_INIT = Path(__file__).resolve().parents[2] / "cloud-init"
sys.path.insert(0, str(CLOUD_INIT))
import agentfleet_denied as recorder  # noqa: E402

_loader = importlib.machinery.SourceFileLoader("agentfleet_resolver_denied", str(CLOUD_INIT / "agentfleet-resolver"))
resolver = importlib.util.module_from_spec(importlib.util.spec_from_loader(_loader.name, _loader))
_loader.exec_module(resolver)


def ipv4(destination: str, proto: int, transport: bytes, fragment: int = 0) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(transport), 1, fragment, 64, proto, 0,
                         ipaddress.IPv4Address("10.0.0.2").packed, ipaddress.IPv4Address(destination).packed)
    return header + transport


def ipv6(destination: str, proto: int, transport: bytes) -> bytes:
    return (struct.pack("!IHBB", 6 << 28, len(transport), proto, 64) + ipaddress.IPv6Address("fd00::2").packed
            + ipaddress.IPv6Address(destination).packed + transport)


def ports(destination: int) -> bytes:
    return struct.pack("!HH", 40000, destination) + b"\0" * 16


def test_packets_become_protocol_destination_and_port():
    assert recorder.packet_record(ipv4("203.0.113.9", 6, ports(8080))) == {
        "protocol": "tcp", "destination": "203.0.113.9", "port": 8080}
    assert recorder.packet_record(ipv6("2001:db8::9", 17, ports(53))) == {
        "protocol": "udp", "destination": "2001:db8::9", "port": 53}
    # A hop-by-hop header before UDP is stepped over to the ports.
    hop_by_hop = bytes([17, 0]) + b"\0" * 6
    assert recorder.packet_record(ipv6("2001:db8::9", 0, hop_by_hop + ports(9999)))["port"] == 9999
    assert recorder.packet_record(ipv4("203.0.113.9", 1, b"\x08\0\0\0")) == {
        "protocol": "icmp", "destination": "203.0.113.9", "port": None}
    # A later fragment carries no ports; what it holds there is data.
    assert recorder.packet_record(ipv4("203.0.113.9", 17, ports(53), fragment=10))["port"] is None
    assert recorder.packet_record(ipv4("203.0.113.9", 47, b""))["protocol"] == "47"


@pytest.mark.parametrize("packet", [b"", b"\x45\0", b"\x60" + b"\0" * 20, b"\x10" * 40])
def test_what_is_not_an_ip_packet_is_no_record(packet):
    assert recorder.packet_record(packet) is None


def nflog_message(kind: int, packet: bytes) -> bytes:
    body = struct.pack("!BBH", socket.AF_INET, 0, recorder.GROUP)
    body += recorder.attribute(10, b"prefix\0") + recorder.attribute(recorder.NFULA_PAYLOAD, packet)
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


def test_the_packets_of_one_netlink_read_are_all_found_and_other_messages_skipped():
    packet_kind = recorder.NFNL_SUBSYS_ULOG << 8
    first, second = ipv4("203.0.113.9", 6, ports(1)), ipv4("203.0.113.9", 6, ports(22))
    buffer = nflog_message(packet_kind, first) + nflog_message(packet_kind | 1, b"x") + nflog_message(packet_kind, second)
    assert recorder.payloads(buffer) == [first, second]
    assert recorder.payloads(buffer[:-3])[:1] == [first]


def test_the_record_stays_bounded_and_keeps_the_newest(tmp_path):
    path = tmp_path / "log" / "denied.jsonl"
    record = recorder.Record(str(path), max_bytes=2000)
    assert path.read_text() == "" and oct(path.stat().st_mode & 0o777) == "0o644"
    for port in range(1000):
        record.write({"protocol": "tcp", "destination": "203.0.113.9", "port": port})
    rotated = Path(f"{path}.1")
    assert path.stat().st_size <= 2000 and rotated.stat().st_size <= 2000
    assert sorted(p.name for p in path.parent.iterdir()) == ["denied.jsonl", "denied.jsonl.1"]
    lines = [json.loads(line) for line in (rotated.read_text() + path.read_text()).splitlines()]
    assert [line["port"] for line in lines] == list(range(1000 - len(lines), 1000))
    assert all(line["time"].endswith("Z") for line in lines)


def test_the_resolver_records_a_refused_name_and_answers_nxdomain(tmp_path, monkeypatch):
    policy = tmp_path / "egress.json"
    policy.write_text(json.dumps({"names": [{"name": "git.example.org", "protocol": "tcp", "port": 22}]}))
    monkeypatch.setattr(resolver, "POLICY", str(policy))
    monkeypatch.setattr(resolver, "UPSTREAMS", str(tmp_path / "none"))
    path = tmp_path / "denied.jsonl"
    answering = resolver.Resolver(recorder.Record(str(path)))
    query = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\x05exfil\x07example\x00" + struct.pack("!HH", 1, 1)
    answer = answering.answer(query, tcp=False)
    assert answer[3] & 0xF == resolver.NXDOMAIN
    (line,) = path.read_text().splitlines()
    assert {k: v for k, v in json.loads(line).items() if k != "time"} == {
        "protocol": "dns", "destination": "exfil.example", "port": None, "name": "exfil.example"}


def test_agent_side_names_agree_with_the_ruleset_and_the_client():
    assert recorder.RECORD == contract.DENIED_RECORD
    assert resolver.MARK == egress.RESOLVER_MARK and f"meta mark {egress.RESOLVER_MARK:#x}" in EgressPolicy.of(
        load({"agents": [agent("a")]}).agents[0]).ruleset()
    assert (recorder.GROUP, recorder.UNRECORDED, recorder.TABLE) == (
        egress.REFUSED_GROUP, egress.UNRECORDED, egress.TABLE)
    text = EgressPolicy.of(load({"agents": [agent("a", allow=["203.0.113.0/24:443"])]}).agents[0]).ruleset()
    # Every refusal goes through one chain: recorded under the limit, counted over it.
    assert text.count(f"limit name \"refusals\" log group {egress.REFUSED_GROUP} reject") == 1
    assert text.count('counter name "unrecorded" reject') == 1
    assert text.count("jump refuse") == 4
    assert f"limit refusals {{ rate {egress.REFUSED_RATE}/second burst {egress.REFUSED_BURST} packets }}" in text


LINES = [
    '{"time": "2026-01-01T10:00:01.000000Z", "protocol": "tcp", "destination": "203.0.113.9", "port": 8080}',
    '{"time": "2026-01-01T10:00:03.000000Z", "protocol": "dns", "destination": "exfil.example", "port": null, "name": "exfil.example"}',
    '{"time": "2026-01-01T10:00:05.000000Z", "protocol": null, "destination": null, "port": null, "unrecorded": 42}',
]


def test_record_lines_become_entries():
    tcp, dns, over = (parse_entry("a", line) for line in LINES)
    assert (tcp.time, tcp.protocol, tcp.destination, tcp.port, tcp.name) == (
        datetime(2026, 1, 1, 10, 0, 1, tzinfo=UTC), "tcp", "203.0.113.9", 8080, None)
    assert (dns.protocol, dns.name, dns.port) == ("dns", "exfil.example", None)
    assert (over.unrecorded, over.destination) == (42, None)


@pytest.mark.parametrize("line", [
    "not json", "[]", '{"protocol": "tcp"}', '{"time": "yesterday", "destination": "x"}',
    '{"time": "2026-01-01T10:00:01Z", "destination": "x", "port": "80"}',
    '{"time": "2026-01-01T10:00:01Z", "destination": "x", "port": true}',
    '{"time": "2026-01-01T10:00:01Z", "protocol": "tcp"}',
])
def test_lines_that_are_not_records_are_refused(line):
    with pytest.raises(ValueError):
        parse_entry("a", line)


def test_reading_judges_missing_records_and_bad_lines():
    assert judge_read("open", Result("cat", OPEN_EGRESS, "", "")) == AgentDenied("open", ())
    missing = judge_read("old", Result("cat", NO_RECORD, "", ""))
    assert missing.entries == () and "pulumi up" in missing.problem
    read = judge_read("a", Result("cat", 0, "\n".join([LINES[0], "garbage", LINES[1]]) + "\n", ""))
    assert len(read.entries) == 2 and read.problem == f"1 lines of {contract.DENIED_RECORD} are not records, skipped"
    failed = judge_read("a", Result("cat", 1, LINES[0], "cat: Permission denied"))
    assert len(failed.entries) == 1 and "Permission denied" in failed.problem


def test_agents_merge_by_time_and_since_and_names_filter():
    first = judge_read("a", Result("cat", 0, LINES[0] + "\n" + LINES[2], ""))
    second = judge_read("b", Result("cat", 0, LINES[1], ""))
    assert [(e.agent, e.protocol) for e in merged([first, second], {"a", "b"})] == [
        ("a", "tcp"), ("b", "dns"), ("a", None)]
    assert [e.agent for e in merged([first, second], {"b"})] == ["b"]
    since = datetime(2026, 1, 1, 10, 0, 2, tzinfo=UTC)
    assert [e.protocol for e in merged([first, second], {"a", "b"}, since)] == ["dns", None]


def test_table_and_json_lines():
    entries = merged([judge_read("agent-x", Result("cat", 0, "\n".join(LINES), ""))], {"agent-x"})
    rows = render_denied_table(entries).splitlines()
    assert rows[0].split() == ["TIME", "(UTC)", "AGENT", "PROTOCOL", "DESTINATION", "PORT"]
    assert rows[1].split() == ["2026-01-01T10:00:01Z", "agent-x", "tcp", "203.0.113.9", "8080"]
    assert rows[2].split() == ["2026-01-01T10:00:03Z", "agent-x", "dns", "exfil.example", "-"]
    assert "(42 more refused over the rate limit" in rows[3]
    first = json.loads(render_audit_json(entries).splitlines()[0])
    assert first == {"time": "2026-01-01T10:00:01.000000Z", "agent": "agent-x", "protocol": "tcp",
                     "destination": "203.0.113.9", "port": 8080, "name": None, "unrecorded": None}
