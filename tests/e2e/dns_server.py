"""A DNS server the tests control, run in a container on a test network (python3 of the agent
image): it answers A queries from /srv/dns/records.json ({"name": ["address", ...]}, read again
for every query, so a test changes a record by rewriting the file) with the TTL in
/srv/dns/ttl, and logs every query it receives (`query NAME TYPE`) to stdout, so a test can
show that a query never arrived. Wire format: the agent's resolver's own functions
(cloud-init/agentfleet-resolver, copied next to this file as agentfleet_resolver.py).

usage: python3 dns_server.py   (listens on UDP and TCP port 53 of every address)
"""

from __future__ import annotations

import ipaddress
import json
import socketserver
import struct
import sys
import threading

sys.path.insert(0, "/srv/dns")
from agentfleet_resolver import NXDOMAIN, Malformed, parse_question, read_exactly, reply  # noqa: E402

RECORDS = "/srv/dns/records.json"
TTL = "/srv/dns/ttl"
A = 1


def answer(query: bytes) -> bytes | None:
    try:
        name, qtype, end = parse_question(query)
    except Malformed:
        return None
    print(f"query {name} {qtype}", flush=True)
    with open(RECORDS, encoding="utf-8") as file:
        records = json.load(file)
    with open(TTL, encoding="utf-8") as file:
        ttl = int(file.read())
    if name not in records:
        return reply(query, end, NXDOMAIN)
    found = [ipaddress.IPv4Address(a).packed for a in records[name]] if qtype == A else []
    header = bytearray(reply(query, end, 0)[:12])
    header[2] |= 0x04  # authoritative
    header[6:8] = struct.pack("!H", len(found))
    answers = b"".join(struct.pack("!HHHIH", 0xC00C, A, 1, ttl, 4) + packed for packed in found)
    return bytes(header) + query[12:end] + answers


class Udp(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        query, sock = self.request
        response = answer(query)
        if response:
            sock.sendto(response, self.client_address)


class Tcp(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        try:
            query = read_exactly(self.request, struct.unpack("!H", read_exactly(self.request, 2))[0])
        except OSError:
            return
        response = answer(query)
        if response:
            self.request.sendall(struct.pack("!H", len(response)) + response)


if __name__ == "__main__":
    for server_class, handler in ((socketserver.ThreadingUDPServer, Udp), (socketserver.ThreadingTCPServer, Tcp)):
        server = type("Server", (server_class,), {"allow_reuse_address": True, "daemon_threads": True})(("0.0.0.0", 53), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("listening", flush=True)
    threading.Event().wait()
