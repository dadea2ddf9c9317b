"""Hosts: a fleet on one Docker engine against the same fleet split over two remote hosts, in one
run, interleaved: `pulumi up` until every agent answers git over SSH.

The remote hosts are the tests' rig (tests/e2e/remote_hosts.py): network namespaces on this same
machine, each with its own dockerd and sshd, reached over ssh:// with pinned keys. They share this
machine's cores, so the figure is what reaching engines over SSH costs (the SSH links, the
per-host network and image resources), not what more machines would gain. The agent image is
sent to both hosts before the timed rounds (its transfer is reported on its own).
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import Workbench, load, median, seconds, stack_endpoints, wait_until_answers
from components.backends.docker.engines import Engine, ensure_image, open_client
from tests.e2e.remote_hosts import RemoteHosts


def run(bench: Workbench, agents: int, rounds: int) -> dict[str, Any]:
    with RemoteHosts(2) as rig:
        key_file = bench.write_file("hosts/operator", rig.operator_key)
        key_file.chmod(0o600)
        remotes = [rig.host("host-1"), rig.host("host-2")]
        hosts = {host.name: {"address": host.url, "known_hosts": [host.known_hosts], "identity_file": str(key_file)}
                 for host in remotes}
        transfer_s = send_image(bench, rig, remotes)
        half = agents // 2
        ways = {f"{agents} agents on the local engine": False,
                f"{half} + {agents - half} agents on two remote hosts": True}
        times: dict[str, list[float]] = {way: [] for way in ways}
        for _ in range(rounds):
            for way, remote in ways.items():
                fleet = bench.fleet(agents, prefix="h", remote=False)
                if remote:
                    fleet["hosts"] = hosts
                    for index, agent in enumerate(fleet["agents"]):
                        agent["host"] = "host-1" if index < half else "host-2"
                stack, up_s = bench.up("hosts", fleet)
                try:
                    check_s = wait_until_answers(stack_endpoints(bench, stack.outputs(), stack.name), 180)
                    times[way].append(up_s + check_s)
                finally:
                    bench.discard_stack(stack)
    local, remote = (median(times[way]) for way in ways)
    return {
        "benchmark": "hosts",
        "results": [{"fleet": way, "up_s": seconds(median(values)), "rounds": len(values)}
                    for way, values in times.items()],
        "remote_vs_local": round(remote / local, 2),
        "image_sent_to_both_hosts_s": seconds(transfer_s),
        "load_1min": load(),
    }


def send_image(bench: Workbench, rig: RemoteHosts, remotes) -> float:
    started = time.perf_counter()
    local = open_client(Engine("local"))
    for host in remotes:
        target = open_client(Engine(host.name, host.url, host.known_hosts, rig.operator_key))
        ensure_image(local, target, bench.image)
    return time.perf_counter() - started
