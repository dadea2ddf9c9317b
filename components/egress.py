"""An agent's egress policy as files for every backend: the firewall (nftables) and the names its
resolver may answer.

Why in the agent, applied by root: the same files and script work in a container and in a VM;
root applies them at every boot before sshd admits anyone and again on every in-place update,
and the agent user, with no capabilities and no way to gain them, can change none of it.

Why names go through the agent's own resolver (cloud-init/agentfleet-resolver): a forge's
addresses change over time, so an address is admitted when the resolver answers a query for an
allowed name, for as long as that answer's record lives, not once at boot. Addresses and ranges
in the policy are fixed rules. Everything else, whatever the protocol (TCP, UDP, ICMP) or family
(IPv4, IPv6), is rejected, DNS included: only the resolver's marked sockets may ask the upstream
servers.

Why refusals are on record (cloud-init/agentfleet_denied.py): an operator sees what an agent tried
to reach, an exfiltration attempt or an allow entry a build misses. Every refusing rule copies the
packet to nflog group REFUSED_GROUP for the resolver's process to record, behind one shared
token bucket (REFUSED_RATE a second, bursts of REFUSED_BURST) so a flood costs no disk; what goes
over it is only counted (UNRECORDED), and the record says how many.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from agentfleet.contract import EGRESS_RULESET
from components.spec import AgentSpec, Destination, destination
from components.spec.values import allow_entry

# The policy's files, where every backend puts them (apply-egress.sh reads them there); a lifted
# policy's are removed.
RULESET_PATH = EGRESS_RULESET
NAMES_PATH = "/etc/agentfleet/egress.json"
DNS_SERVERS_PATH = "/etc/agentfleet/dns-servers"
POLICY_PATHS = (RULESET_PATH, NAMES_PATH, DNS_SERVERS_PATH)
TABLE = "inet agentfleet"
# Before conntrack's NAT (-100): the filter sees where a packet was sent, and the redirect of
# the users' DNS queries to the resolver comes before Docker's own rule for 127.0.0.11.
FILTER_PRIORITY = -150
NAT_PRIORITY = -110
# What IPv6 needs to reach anything at all (neighbour discovery), and nothing more.
ICMPV6_NEEDED = "nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit"
# The names and numbers cloud-init/agentfleet_denied.py reads them by.
REFUSED_GROUP = 7
REFUSED_LIMIT = "refusals"
UNRECORDED = "unrecorded"
REFUSED_RATE = 20
REFUSED_BURST = 100
# The mark the resolver sets on its own upstream queries (SO_MARK, which takes CAP_NET_ADMIN or
# CAP_NET_RAW): only they may reach the upstream servers. Why not its uid: root in a Docker agent
# shares the policy's network namespace and may take any uid, but holds neither capability.
RESOLVER_MARK = 0x6166
REFUSE = (f'limit name "{REFUSED_LIMIT}" log group {REFUSED_GROUP} reject',
          f'counter name "{UNRECORDED}" reject')


@dataclass(frozen=True)
class EgressPolicy:
    """A restricted agent's policy as declared, and its files rendered from it.

    Why the declaration travels and not the files: it is what a machine's `egress` field holds in
    the state (a few hundred bytes, where the files are kilobytes, in inputs and outputs alike), and
    a preview's diff of it reads as the allow list changing. Each backend renders the files where
    it uses them (Docker's upload, Kubernetes' Secret, a VM's cloud-config), all by files() here."""

    agent: str
    # The remote's host and port, then the `allow` entries, without repeats.
    destinations: tuple[Destination, ...]
    dns: tuple[str, ...] = ()

    @classmethod
    def of(cls, agent: AgentSpec) -> EgressPolicy:
        remote = [destination(agent.remote.host, agent.remote.port)] if agent.remote else []
        return cls(agent.name, tuple(dict.fromkeys([*remote, *agent.allow])), agent.dns)

    def fields(self) -> dict[str, Any]:
        """The policy as a resource field: each destination as an `allow` entry is written."""
        fields: dict[str, Any] = {"agent": self.agent, "destinations": [_entry(d) for d in self.destinations]}
        if self.dns:
            fields["dns"] = list(self.dns)
        return fields

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> EgressPolicy:
        return cls(fields["agent"], tuple(_destination(entry) for entry in fields["destinations"]),
                   tuple(fields.get("dns") or ()))

    def files(self) -> dict[str, str]:
        """Its files by path (POLICY_PATHS), the name servers' only when it names some."""
        files = {RULESET_PATH: self.ruleset(), NAMES_PATH: self.resolver_policy()}
        if self.dns:
            files[DNS_SERVERS_PATH] = self.dns_servers()
        return files

    def ruleset(self) -> str:
        """RULESET_PATH: the agent's table. apply-egress.sh loads it in one transaction together
        with the name servers it finds on the machine (sets nameservers4/6, upstreams4/6)."""
        return _table(self.agent, [_fixed_rule(d) for d in self.destinations if d.network is not None])

    def resolver_policy(self) -> str:
        """NAMES_PATH: the names (and wildcards) the resolver answers, each with the protocol and
        port its addresses are admitted for."""
        names = [{"name": d.host, "protocol": d.protocol, "port": d.port}
                 for d in self.destinations if d.network is None]
        return json.dumps({"names": names}, indent=1) + "\n"

    def dns_servers(self) -> str:
        """DNS_SERVERS_PATH: the servers the resolver asks (none: the machine's own)."""
        return "".join(f"{server}\n" for server in self.dns)


def _entry(entry: Destination) -> str:
    """A destination as an `allow` entry is written, protocol and all: `[2001:db8::/32]:443/tcp`."""
    host = f"[{entry.host}]" if ":" in entry.host else entry.host
    return f"{host}:{entry.port}/{entry.protocol}"


def _destination(entry: str) -> Destination:
    """The destination an entry of _entry() names (already checked when the config was loaded)."""
    try:
        return allow_entry(entry)
    except ValueError:
        raise ValueError(f"egress destination {entry!r} is not host:port/protocol") from None


def _fixed_rule(entry: Destination) -> str:
    network = entry.network
    assert network is not None
    family = "ip" if network.version == 4 else "ip6"
    return f"{family} daddr {network} {entry.protocol} dport {entry.port} accept"


def _table(agent: str, fixed: list[str]) -> str:
    lines = [
        f"# The egress policy of agent {agent} (components/egress.py).",
        f"table {TABLE} {{",
        "    # Addresses the resolver answered for allowed names, each for its record's TTL.",
        "    set allowed4 { type ipv4_addr . inet_proto . inet_service; flags timeout; }",
        "    set allowed6 { type ipv6_addr . inet_proto . inet_service; flags timeout; }",
        "    # The machine's name servers (users' queries to them go to the resolver) and the",
        "    # servers the resolver asks (only its marked sockets may).",
        "    set nameservers4 { type ipv4_addr; }",
        "    set nameservers6 { type ipv6_addr; }",
        "    set upstreams4 { type ipv4_addr; }",
        "    set upstreams6 { type ipv6_addr; }",
        "    # Refusals: recorded up to this rate; the ones over it only counted.",
        f"    limit {REFUSED_LIMIT} {{ rate {REFUSED_RATE}/second burst {REFUSED_BURST} packets }}",
        f"    counter {UNRECORDED} {{ }}",
        "",
        "    chain redirect_dns {",
        f"        type nat hook output priority {NAT_PRIORITY}; policy accept;",
        f"        meta mark {RESOLVER_MARK:#x} return",
        "        ip daddr @nameservers4 meta l4proto { tcp, udp } th dport 53 redirect to :53",
        "        ip6 daddr @nameservers6 meta l4proto { tcp, udp } th dport 53 redirect to :53",
        "    }",
        "",
        "    chain output {",
        f"        type filter hook output priority {FILTER_PRIORITY}; policy accept;",
        "        ct state established,related accept",
        *(f"        {rule}" for rule in fixed),
        "        ip daddr . meta l4proto . th dport @allowed4 accept",
        "        ip6 daddr . meta l4proto . th dport @allowed6 accept",
        "        meta l4proto { tcp, udp } th dport 53 jump dns",
        "        # The name servers on any other port (Docker's resolver listens on a second one):",
        "        # only the resolver may, or DNS would leave past it.",
        f"        ip daddr @nameservers4 meta mark != {RESOLVER_MARK:#x} jump refuse",
        f"        ip6 daddr @nameservers6 meta mark != {RESOLVER_MARK:#x} jump refuse",
        '        oif "lo" accept',
        f"        icmpv6 type {{ {ICMPV6_NEEDED} }} accept",
        "        jump refuse",
        "    }",
        "",
        "    chain dns {",
        '        oif "lo" ip daddr 127.0.0.1 accept',
        '        oif "lo" ip6 daddr ::1 accept',
        "        ip daddr @nameservers4 accept",
        "        ip6 daddr @nameservers6 accept",
        f"        meta mark {RESOLVER_MARK:#x} ip daddr @upstreams4 accept",
        f"        meta mark {RESOLVER_MARK:#x} ip6 daddr @upstreams6 accept",
        "        jump refuse",
        "    }",
        "",
        "    # Every refusal: recorded under the limit, counted over it.",
        "    chain refuse {",
        *(f"        {rule}" for rule in REFUSE),
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"
