"""Where a throwaway cluster lives and how its node is addressed: pure values, no processes.

Why its own network: the node's address is a bridge the cluster creates (the node IP, where the
API server, etcd, kubelet and NodePorts listen), with pods on a second subnet of the same bridge
and no NAT to anything else. Nothing listens on the host's addresses or loopback ports another
test could want, and deleting the bridge takes every address and route with it.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

# The second octet picks the block: 10.<octet>.0.0/22 holds the node-and-pod and service subnets.
OCTETS = range(160, 250)
API_PORT = 6443
ETCD_PORTS = (2379, 2380)
NODE_NAME = "agentfleet-node"


def kubernetes_home() -> Path:
    """What scripts/setup built (scripts/lib/kubernetes.sh: current/)."""
    return Path(os.environ.get("AGENTFLEET_HOME", Path.home() / ".agentfleet")) / "kubernetes" / "current"


@dataclass(frozen=True)
class Network:
    bridge: str
    octet: int

    @property
    def node_ip(self) -> str:
        return f"10.{self.octet}.0.1"

    @property
    def node_cidr(self) -> str:
        return f"{self.node_ip}/24"

    @property
    def pod_subnet(self) -> str:
        """The node's subnet: pods get addresses from pod_range_start on, the node is their gateway."""
        return f"10.{self.octet}.0.0/24"

    @property
    def pod_range_start(self) -> str:
        return f"10.{self.octet}.0.10"

    @property
    def service_subnet(self) -> str:
        return f"10.{self.octet}.1.0/24"

    @property
    def service_ip(self) -> str:
        """The `kubernetes` Service's address: the API server's certificate must name it."""
        return f"10.{self.octet}.1.1"

    @property
    def api_server(self) -> str:
        return f"https://{self.node_ip}:{API_PORT}"

    @property
    def etcd_client(self) -> str:
        return f"http://{self.node_ip}:{ETCD_PORTS[0]}"

    @property
    def etcd_peer(self) -> str:
        return f"http://{self.node_ip}:{ETCD_PORTS[1]}"

    @classmethod
    def pick(cls, routes: str, bridge: str) -> Network:
        """The first 10.<octet>.0.0/22 that overlaps no route in `ip -o route` output `routes`."""
        taken = []
        for line in routes.splitlines():
            destination = line.split()[0] if line.strip() else ""
            if destination and destination != "default":
                taken.append(ipaddress.ip_network(destination, strict=False))
        for octet in OCTETS:
            block = ipaddress.ip_network(f"10.{octet}.0.0/22")
            if not any(block.overlaps(route) for route in taken if route.version == 4):
                return cls(bridge, octet)
        raise RuntimeError(f"no free 10.x.0.0/22 for the cluster network in 10.{OCTETS[0]}-{OCTETS[-1]}: "
                           "every candidate overlaps a route (`ip route`)")


@dataclass(frozen=True)
class Layout:
    """Every file and directory of one cluster, under `root` (created, removed with it)."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def containerd(self) -> Path:
        return self.root / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd / "containerd.sock"

    @property
    def cni_conf(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def kubelet(self) -> Path:
        return self.root / "kubelet"

    @property
    def shadow(self) -> Path:
        """Directories mounted over the host's in the node's private mount namespace."""
        return self.root / "shadow"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "admin.kubeconfig"

    def kubeconfig(self, component: str) -> Path:
        return self.root / f"{component}.kubeconfig"
