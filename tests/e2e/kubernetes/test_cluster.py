"""The test cluster itself: a real node that runs the agent image, without touching the host."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kubecluster.cluster import WANTED_SYSCTLS, Cluster, ClusterError
from tests.kubecluster.host_state import HostState
from tests.kubecluster.layout import NODE_NAME


def test_node_is_ready_at_the_bridge_address(kube_cluster: Cluster) -> None:
    addresses = kube_cluster.kubectl("get", "node", NODE_NAME, "-o",
                                     "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}")
    assert addresses == kube_cluster.node_ip
    version = kube_cluster.kubectl("version", "-o", "json")
    assert '"gitVersion": "v1.34.4"' in version


def test_agent_image_is_in_containerds_kubernetes_namespace(kube_cluster: Cluster, agent_image: str) -> None:
    images = kube_cluster.images()
    assert f"docker.io/{agent_image}" in images, images
    assert "registry.k8s.io/pause:3.10" in images, images


def test_host_sysctls_keep_their_values_while_the_node_runs(kube_cluster: Cluster,
                                                            host_before_cluster: HostState) -> None:
    """kubelet sees the values it wants; the host keeps its own."""
    for key in WANTED_SYSCTLS:
        name = key.replace("/", ".")
        assert Path("/proc/sys", key).read_text().strip() == host_before_cluster.sysctls[name], name


def test_no_node_mount_is_visible_on_the_host(kube_cluster: Cluster, host_before_cluster: HostState) -> None:
    now = HostState.capture()
    assert [m for m in now.mounts if m not in host_before_cluster.mounts] == []
    assert now.iptables == host_before_cluster.iptables


def test_a_second_cluster_is_refused_while_one_runs(kube_cluster: Cluster, tmp_path: Path) -> None:
    second = Cluster(tmp_path / "second")
    with pytest.raises(ClusterError, match="another test cluster runs on this machine"):
        second.start()
    second.stop()  # nothing was made: the bridge, namespace and files of the first stay
    assert kube_cluster.kubectl("get", "--raw", "/readyz") == "ok"
