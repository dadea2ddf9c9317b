"""The agent's resolver (cloud-init/agentfleet-resolver) and the firewall it feeds: which names it
answers, which addresses of an answer it admits and for how long, and the rules egress.py writes."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import struct
import subprocess
from pathlib import Path

import pytest

from components.egress import EgressPolicy
from tests.unit.spec_helpers import agent, load

PATH = Path(__file__).resolve().parents[2] / "cloud-init" / "agentfleet-resolver"
_loader = importlib.machinery.SourceFileLoader("agentfleet_resolver", str(PATH))
resolver = importlib.util.module_from_spec(importlib.util.spec_from_loader(_loader.name, _loader))
_loader.exec_module(resolver)


def name(text: str) -> bytes:
    return b"".join(bytes([len(part)]) + part.encode() for part in text.split(".") if part) + b"\0"


def query(qname: str, qtype: int = 1) -> bytes:
    return struct.pack("!HHHHHH", 0xBEEF, 0x0100, 1, 0, 0, 1) + name(qname) + struct.pack("!HH", qtype, 1)


def response(qname: str, records: list[tuple[bytes, int, int, bytes]]) -> bytes:
    """records: (owner as wire name or pointer, type, ttl, rdata)."""
    body = b"".join(owner + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata
                    for owner, rtype, ttl, rdata in records)
    return struct.pack("!HHHHHH", 0xBEEF, 0x8180, 1, len(records), 0, 0) + name(qname) + struct.pack("!HH", 1, 1) + body


POLICY = [{"name": "git.example.org", "protocol": "tcp", "port": 22},
          {"name": "*.cdn.example.org", "protocol": "tcp", "port": 443}]


@pytest.mark.parametrize(("qname", "allowed"), [
    ("git.example.org", True), ("GIT.Example.ORG", True), ("evil.git.example.org", False),
    ("a.cdn.example.org", True), ("a.b.cdn.example.org", True), ("cdn.example.org", False),
    ("xcdn.example.org", False), ("example.org", False), ("", False),
])
def test_only_the_names_and_wildcards_of_the_policy_are_answered(qname, allowed):
    parsed, qtype, _ = resolver.parse_question(query(qname))
    assert qtype == 1
    assert bool(resolver.matching(POLICY, parsed)) is allowed


def test_a_refused_name_gets_nxdomain_for_its_own_question():
    message = query("outside.example.net")
    _, _, end = resolver.parse_question(message)
    answer = resolver.reply(message, end, resolver.NXDOMAIN)
    assert answer[:2] == b"\xbe\xef" and answer[3] & 0xF == resolver.NXDOMAIN and answer[12:] == message[12:end]


def test_addresses_follow_the_cname_chain_with_the_shortest_ttl_and_ignore_other_owners():
    pointer = b"\xc0\x0c"  # the question's name
    answer = response("git.example.org", [
        (pointer, resolver.CNAME, 300, name("edge.example.net")),
        (name("edge.example.net"), resolver.A, 60, bytes([192, 0, 2, 7])),
        (name("edge.example.net"), resolver.AAAA, 600, bytes.fromhex("20010db8000000000000000000000007")),
        (name("elsewhere.example.com"), resolver.A, 60, bytes([198, 51, 100, 1])),  # not on the chain
    ])
    assert resolver.addresses(answer, "git.example.org") == [("192.0.2.7", 60), ("2001:db8::7", 300)]


@pytest.mark.parametrize("message", [b"", b"\0" * 11, query("a.b")[:-3], b"\xbe\xef\x01\x00\x00\x01\0\0\0\0\0\0\xc0\x0c"])
def test_malformed_messages_are_refused_not_crashed_on(message):
    with pytest.raises(resolver.Malformed):
        resolver.parse_question(message)


def test_admission_lasts_the_records_ttl_within_bounds():
    assert resolver.element_timeout(0) == resolver.MIN_TTL
    assert resolver.element_timeout(120) == 120
    assert resolver.element_timeout(10**9) == resolver.MAX_TTL


def test_the_rendered_ruleset_is_valid_nftables_and_opens_exactly_the_entries():
    spec = load({"agents": [agent(remote="git@git.example.org:a/b.git", known_hosts=["git.example.org ssh-ed25519 AAAA"],
                                  allow=["10.0.0.0/24:22", "[2001:db8::5]:8080/udp", "*.cdn.example.org:443"])]}).agents[0]
    policy = EgressPolicy.of(spec)
    text = policy.ruleset()
    assert "ip daddr 10.0.0.0/24 tcp dport 22 accept" in text
    assert "ip6 daddr 2001:db8::5/128 udp dport 8080 accept" in text
    assert text.rstrip().endswith("reject\n    }\n}") and "policy drop" not in text
    assert '"name": "*.cdn.example.org"' in policy.resolver_policy() and '"name": "git.example.org"' in policy.resolver_policy()
    checked = subprocess.run(["nft", "-c", "-f", "-"], input=text, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
