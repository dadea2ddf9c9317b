"""What a cluster could change on the host, captured to compare before and after.

Why: a node left behind (iptables chains, nft tables, sysctls set by kubelet, stray mounts,
cgroups, directories) changes the machine for everything that runs after the tests. The
machine is shared with Docker and with other tests that come and go while the cluster runs, so
what they own (Docker's chains and mounts, per-interface sysctls of their bridges) is left out
of the comparison; everything else must be equal.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, fields
from pathlib import Path

# Paths a node writes to when it is not told otherwise, and those the test cluster and the
# remote-host rig make when the host has none (tests/shared_paths.py): none may appear or vanish.
WATCHED_PATHS = ("/var/lib/cni", "/var/lib/kubelet", "/var/log/pods", "/var/log/containers",
                 "/etc/cni", "/opt/cni", "/etc/kubernetes", "/var/lib/containerd",
                 "/run/netns", "/run/containerd", "/tmp/hostpath_pv")
# Sysctls that change by themselves (counters, random state, clocks).
VOLATILE_SYSCTL = re.compile(
    r"^(fs\.(dentry-state|inode-nr|inode-state|file-nr|quota\.)|kernel\.(random\.|ns_last_pid|pty\.nr|"
    r"sched_domain|tainted|perf_)|net\.netfilter\.nf_conntrack_count|net\.ipv4\.tcp_mem|net\.ipv4\.udp_mem|"
    r"net\.ipv4\.route\.gc_|net\.ipv6\.route\.gc_|vm\.stat_|kernel\.core_pattern_)")
# Per-interface sysctls: interfaces come and go with every container on the machine.
INTERFACE_SYSCTL = re.compile(r"^net\.(ipv4|ipv6)\.(conf|neigh)\.(?!all\.|default\.)")
# Docker's iptables chains, the rules for its bridges (docker0, br-<id>) and the hairpin rule of
# each published port, which change whenever a container publishes a port or a network comes or goes.
DOCKER_RULE = re.compile(r"^(-A|:)\s*DOCKER|\s-[io] (docker0|br-[0-9a-f]{12})\b"
                         r"|^-A POSTROUTING -s (\S+)/32 -d \3/32 -p tcp -m tcp --dport \d+ -j MASQUERADE$")
# Where a node mounts things (system trees, its state directories, the cluster's own /tmp/afk-*
# root); other tenants' build roots (debootstrap under /var/tmp, …) come and go elsewhere.
WATCHED_MOUNT = re.compile(r"^(/|/proc|/sys|/dev|/run|/var/lib|/var/log|/var/run|/etc|/opt|/tmp/afk-)(/|$)")
# Mounts made for containers by other tenants of the machine.
FOREIGN_MOUNT = re.compile(r"^(/var/lib/docker/|/run/docker/|/run/containerd/|/run/netns/|/var/run/netns/)")


def run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def sysctls(text: str) -> dict[str, str]:
    """`sysctl -a` output as a dict, without volatile and per-interface keys."""
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition(" = ")
        if key and not VOLATILE_SYSCTL.match(key) and not INTERFACE_SYSCTL.match(key):
            values[key] = value
    return values


def iptables_rules(text: str) -> list[str]:
    """`iptables-save` output without counters, comments and Docker's chains."""
    kept = []
    for line in text.splitlines():
        if line.startswith("#") or DOCKER_RULE.search(line):
            continue
        kept.append(re.sub(r"\[\d+:\d+\]", "", line).strip())
    return kept


def mounts(text: str) -> list[str]:
    """/proc/self/mountinfo as mount point, type and source, sorted: where a node mounts, without
    other tenants' mounts."""
    kept = []
    for line in text.splitlines():
        parts = line.split()
        dash = parts.index("-")
        point, kind, source = parts[4], parts[dash + 1], parts[dash + 2]
        if WATCHED_MOUNT.match(point) and not FOREIGN_MOUNT.match(point):
            kept.append(f"{point} {kind} {source}")
    return sorted(kept)


def cgroups(root: Path = Path("/sys/fs/cgroup")) -> list[str]:
    """Top-level cgroups of every hierarchy (kubelet makes `kubepods` in each), without Docker's."""
    found = []
    for hierarchy in sorted(p for p in root.iterdir() if p.is_dir()):
        for child in sorted(p for p in hierarchy.iterdir() if p.is_dir()):
            if child.name not in {"docker", "system.slice"}:
                found.append(str(child))
    return found


@dataclass(frozen=True)
class HostState:
    sysctls: dict[str, str]
    iptables: list[str]
    ip6tables: list[str]
    nft_tables: list[str]
    mounts: list[str]
    cgroups: list[str]
    paths: dict[str, bool]

    @classmethod
    def capture(cls) -> HostState:
        return cls(
            sysctls=sysctls(run("sysctl", "-a")),
            iptables=iptables_rules(run("iptables-save")),
            ip6tables=iptables_rules(run("ip6tables-save")),
            nft_tables=sorted(run("nft", "list", "tables").splitlines()),
            mounts=mounts(Path("/proc/self/mountinfo").read_text()),
            cgroups=cgroups(),
            paths={path: Path(path).exists() for path in WATCHED_PATHS},
        )

    def differences(self, after: HostState) -> list[str]:
        """One line per part that differs, naming what appeared, vanished or changed."""
        problems = []
        for field in fields(self):
            before_value, after_value = getattr(self, field.name), getattr(after, field.name)
            if before_value == after_value:
                continue
            if isinstance(before_value, dict):
                changed = {k: (before_value.get(k), after_value.get(k))
                           for k in before_value.keys() | after_value.keys()
                           if before_value.get(k) != after_value.get(k)}
                problems.append(f"{field.name}: {dict(sorted(changed.items()))}")
            else:
                added = [x for x in after_value if x not in before_value]
                removed = [x for x in before_value if x not in after_value]
                problems.append(f"{field.name}: added {added}, removed {removed}")
        return problems
