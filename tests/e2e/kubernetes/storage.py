"""Storage for agents on the test cluster: a default class of Kubernetes' host-path provisioner
(enabled in the controller-manager, tests/kubecluster/configs.py), so a claim gets its volume the
way a cluster with dynamic provisioning gives it, and the volume goes with the claim."""

from __future__ import annotations

import yaml

from tests.kubecluster.cluster import Cluster

STORAGE_CLASS = "agentfleet-test"


def dynamic_storage(cluster: Cluster) -> None:
    """The storage class agents' claims name (also the cluster's default)."""
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": STORAGE_CLASS,
                     "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "kubernetes.io/host-path", "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
    }))
