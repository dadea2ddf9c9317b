"""A real single-node Kubernetes cluster for the session (tests/kubecluster), with the agent
image imported. The host is compared with what it was before the run once, when the session
ends (`host_unchanged`, tests/e2e/conftest.py): any difference fails the session's teardown."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kubecluster.cluster import Cluster, remove_tree
from tests.kubecluster.host_state import HostState


@pytest.fixture(scope="session")
def host_before_cluster(host_unchanged: HostState) -> HostState:
    """The host right before the cluster starts: what its tests compare the running node with."""
    return HostState.capture()


@pytest.fixture(scope="session")
def kube_cluster(agent_image: str, host_before_cluster: HostState) -> Iterator[Cluster]:
    # Short path: kubelet and containerd put unix sockets under it (108 bytes at most).
    root = Path(tempfile.mkdtemp(prefix="afk-"))
    cluster = Cluster(root, image=agent_image)
    try:
        with cluster:
            print(f"\ncluster up in {cluster.timings['start_s']:.1f} s "
                  f"(image import {cluster.timings.get('image_import_s', 0):.1f} s)")
            yield cluster
        print(f"\ncluster down in {cluster.timings['stop_s']:.1f} s")
    finally:
        remove_tree(root)
