"""Storage for agents on the test cluster, which has no dynamic provisioner."""

from __future__ import annotations

import yaml

from tests.kubecluster.cluster import Cluster

STORAGE_CLASS = "agentfleet-test"


def static_storage(cluster: Cluster, *names: str) -> None:
    """A class without a provisioner and a hostPath volume of it per name (the test cluster has
    no dynamic provisioner): what agents' claims bind to, one volume each."""
    manifests = [
        {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": STORAGE_CLASS},
         "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "WaitForFirstConsumer"},
        *({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
           "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"],
                    "storageClassName": STORAGE_CLASS, "persistentVolumeReclaimPolicy": "Delete",
                    "hostPath": {"path": str(cluster.root / "volumes" / name), "type": "DirectoryOrCreate"}}}
          for name in names),
    ]
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(manifests))
