"""The agent's record of what its egress policy refused: connection attempts (from the firewall)
and DNS names (from the resolver), one JSON line each in RECORD.

Why this shape:
- The firewall's refusing rules hand a copy of the first bytes of each refused packet to nflog
  group GROUP (components/egress.py), behind a shared `limit`: a flood costs the kernel a
  token bucket, not a record line per packet. What goes over the limit is counted in the named
  counter UNRECORDED and written as one line saying how many were not recorded one by one.
- The resolver's process runs the listener (a thread): it is root's, long-lived and restarted
  by apply-egress.sh already, and the resolver's refused names go through the same writer, so
  one process appends and rotates the file.
- The file is bounded: past MAX_BYTES it becomes RECORD.1 (the one before is dropped), so at
  most twice MAX_BYTES stay on disk. Root owns the file and its directory (0644 in 0755): the
  agent user, and so the client over the agent's SSH, can read it and cannot change it.

Importable without root: the tests use its parsing of nflog messages and packets.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import struct
import subprocess
import threading
import time
from datetime import datetime, timezone
from typing import Callable, Optional

RECORD = "/var/log/agentfleet/egress/denied.jsonl"
MAX_BYTES = 1 << 20
GROUP = 7  # these three as components/egress.py writes the table
UNRECORDED = "unrecorded"
TABLE = "inet agentfleet"
COPY_BYTES = 128  # an IPv6 header (40) with extension headers, then the ports
POLL_S = 5.0

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET, NFULNL_MSG_CONFIG = 0, 1
NFULA_PAYLOAD = 9
NFULA_CFG_CMD, NFULA_CFG_MODE, NFULA_CFG_TIMEOUT, NFULA_CFG_QTHRESH = 1, 2, 3, 4
NFULNL_CFG_CMD_BIND = 1
NFULNL_COPY_PACKET = 2
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLMSG_ERROR = 2
PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 136: "udplite"}
PORTED = {"tcp", "udp", "sctp", "udplite"}
IPV6_EXTENSIONS = {0, 43, 60}  # hop-by-hop, routing, destination options: skipped to the ports


def now() -> str:
    """UTC ISO 8601 with microseconds and Z, as the client's own audit log writes times."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def packet_record(packet: bytes) -> Optional[dict]:
    """Protocol, destination and port (None without one) of an IP packet, or None if it is not
    one. ICMP, and fragments after the first, have no port."""
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20:
        header = (packet[0] & 0x0F) * 4
        proto, destination = packet[9], ipaddress.IPv4Address(packet[16:20])
        first_fragment = struct.unpack("!H", packet[6:8])[0] & 0x1FFF == 0
    elif version == 6 and len(packet) >= 40:
        header, proto, destination = 40, packet[6], ipaddress.IPv6Address(packet[24:40])
        while proto in IPV6_EXTENSIONS and len(packet) >= header + 8:
            proto, header = packet[header], header + (packet[header + 1] + 1) * 8
        first_fragment = True
    else:
        return None
    protocol = PROTOCOLS.get(proto, str(proto))
    port = None
    if protocol in PORTED and first_fragment and len(packet) >= header + 4:
        port = struct.unpack("!H", packet[header + 2:header + 4])[0]
    return {"protocol": protocol, "destination": str(destination), "port": port}


def attributes(data: bytes) -> dict[int, bytes]:
    """Netlink attributes (type without its flag bits -> payload)."""
    found, offset = {}, 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack("=HH", data[offset:offset + 4])
        if length < 4:
            break
        found[kind & 0x3FFF] = data[offset + 4:offset + length]
        offset += (length + 3) & ~3
    return found


def payloads(buffer: bytes) -> list[bytes]:
    """The packets in nflog's PACKET messages in one netlink read."""
    found, offset = [], 0
    while offset + 16 <= len(buffer):
        length, kind = struct.unpack("=IH", buffer[offset:offset + 6])
        if length < 16:
            break
        if kind == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET:
            payload = attributes(buffer[offset + 20:offset + length]).get(NFULA_PAYLOAD)
            if payload:
                found.append(payload)
        offset += (length + 3) & ~3
    return found


class Record:
    """Appends lines to RECORD and rotates it past max_bytes; one lock for every writer."""

    def __init__(self, path: str = RECORD, max_bytes: int = MAX_BYTES) -> None:
        self.path, self.max_bytes = path, max_bytes
        self.lock = threading.Lock()
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        with self.lock:
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))

    def write(self, entry: dict) -> None:
        line = (json.dumps({"time": now(), **entry}) + "\n").encode()
        with self.lock:
            try:
                if os.path.getsize(self.path) + len(line) > self.max_bytes:
                    os.replace(self.path, self.path + ".1")
            except FileNotFoundError:
                pass
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

    def refused_name(self, name: str) -> None:
        self.write({"protocol": "dns", "destination": name, "port": None, "name": name})


def netlink_message(kind: int, flags: int, group: int, body: bytes) -> bytes:
    """One nfnetlink message for nflog group `group`: header, nfgenmsg, attributes."""
    payload = struct.pack("!BBH", socket.AF_UNSPEC, 0, group) + body
    return struct.pack("=IHHII", 16 + len(payload), kind, flags, 0, 0) + payload


def attribute(kind: int, value: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(value), kind) + value + b"\0" * (-len(value) % 4)


def bind(group: int = GROUP) -> socket.socket:
    """A netlink socket bound to nflog group `group`, copying COPY_BYTES of each packet, handing
    each packet over at once; OSError if the kernel refuses."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.bind((0, 0))
    config = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
    for body in (attribute(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_BIND])),
                 attribute(NFULA_CFG_MODE, struct.pack("!IBB", COPY_BYTES, NFULNL_COPY_PACKET, 0)),
                 attribute(NFULA_CFG_QTHRESH, struct.pack("!I", 1)),
                 attribute(NFULA_CFG_TIMEOUT, struct.pack("!I", 10))):
        sock.send(netlink_message(config, NLM_F_REQUEST | NLM_F_ACK, group, body))
        answer = sock.recv(4096)
        kind = struct.unpack("=H", answer[4:6])[0]
        error = struct.unpack("=i", answer[16:20])[0] if kind == NLMSG_ERROR else 0
        if error:
            raise OSError(-error, f"nflog group {group}: {os.strerror(-error)}")
    return sock


def unrecorded() -> int:
    """Refusals over the limit since the last call: the counter is read and reset at once."""
    done = subprocess.run(["nft", "-j", "reset", "counter", *TABLE.split(), UNRECORDED],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return 0
    for item in json.loads(done.stdout).get("nftables", []):
        if "counter" in item:
            return int(item["counter"].get("packets", 0))
    return 0


def listen(record: Record, log: Callable[[str], None]) -> None:
    """Record every packet nflog hands over; every POLL_S after a busy spell, how many went
    unrecorded. Runs for ever (the resolver's thread); a refused bind is logged, not fatal."""
    try:
        sock = bind()
    except OSError as error:
        log(f"refused connections are not recorded: {error}")
        return
    sock.settimeout(POLL_S)
    busy, last_poll = False, time.monotonic()
    while True:
        try:
            for packet in payloads(sock.recv(65536)):
                entry = packet_record(packet)
                if entry:
                    record.write(entry)
                    busy = True
        except socket.timeout:
            pass
        except OSError as error:  # ENOBUFS: the kernel dropped messages the socket had no room for
            log(f"nflog: {error}")
            busy = True
        if time.monotonic() - last_poll >= POLL_S:
            last_poll = time.monotonic()
            missed = unrecorded() if busy else 0
            if missed:
                record.write({"protocol": None, "destination": None, "port": None, "unrecorded": missed})
            busy = missed > 0
