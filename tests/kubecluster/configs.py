"""The node's configuration files and the control plane's command lines: pure text from a
Layout and a Network.

Why these settings (each keeps the host as it was, or makes the node work on this kind of
machine, see shared/KUBERNETES.md):
- containerd has its own root, state, socket and opt directory, never Docker's; the CRI plugin
  uses cgroupfs, our sandbox image, no AppArmor, and `restrict_oom_score_adj` (a sandbox may not
  lower its OOM score without CAP_SYS_RESOURCE, which runc otherwise fails on).
- CNI: the bridge plugin on the cluster's own bridge, no IP masquerade and no portmap (both add
  iptables rules).
- kubelet: `protectKernelDefaults` (check sysctls, never set them; the private mount namespace
  shows it the values it wants), `makeIPTablesUtilChains: false`, image GC and eviction thresholds
  it cannot reach on a shared disk (the agent image has no registry to come back from).
- kube-proxy: nftables (its own table, removed at the end), conntrack sysctls left alone,
  NodePorts on the node address only.
"""

from __future__ import annotations

import json

import yaml

from tests.kubecluster.layout import API_PORT, NODE_NAME, Layout, Network

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
CNI_BIN = "/usr/lib/cni"  # Debian's containernetworking-plugins
CLUSTER_DOMAIN = "cluster.local"


def containerd_toml(layout: Layout) -> str:
    c = layout.containerd
    return f"""version = 2
root = "{c / 'root'}"
state = "{c / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{layout.containerd_socket}"

[ttrpc]
  address = "{layout.containerd_socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{c / 'opt'}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = false

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{layout.cni_conf}"
"""


def cni_conflist(network: Network, layout: Layout) -> str:
    return json.dumps({
        "cniVersion": "1.0.0",
        "name": "agentfleet",
        "plugins": [{
            "type": "bridge",
            "bridge": network.bridge,
            "isGateway": True,
            "ipMasq": False,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": network.pod_subnet, "rangeStart": network.pod_range_start,
                              "gateway": network.node_ip}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": str(layout.root / "cni" / "ipam"),
            },
        }],
    }, indent=2)


def kubelet_config(network: Network, layout: Layout) -> str:
    return yaml.safe_dump({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": network.node_ip,
        "readOnlyPort": 0,
        "healthzPort": 0,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(layout.pki / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(layout.pki / "kubelet.crt"),
        "tlsPrivateKeyFile": str(layout.pki / "kubelet.key"),
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "protectKernelDefaults": True,
        "makeIPTablesUtilChains": False,
        "failSwapOn": False,
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": "/etc/resolv.conf",
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "podLogsDir": str(layout.root / "pod-logs"),
        "serializeImagePulls": False,
    }, sort_keys=False)


def kube_proxy_config(network: Network, layout: Layout) -> str:
    return yaml.safe_dump({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "nftables",
        "clientConnection": {"kubeconfig": str(layout.kubeconfig("kube-proxy"))},
        "hostnameOverride": NODE_NAME,
        "bindAddress": network.node_ip,
        "healthzBindAddress": f"{network.node_ip}:10256",
        "metricsBindAddress": f"{network.node_ip}:10249",
        "nodePortAddresses": [f"{network.node_ip}/32"],
        "clusterCIDR": network.pod_subnet,
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s",
                      "udpTimeout": "0s", "udpStreamTimeout": "0s"},
    }, sort_keys=False)


def etcd_args(network: Network, layout: Layout) -> list[str]:
    return ["--name", "default", "--data-dir", str(layout.etcd_data),
            "--listen-client-urls", network.etcd_client, "--advertise-client-urls", network.etcd_client,
            "--listen-peer-urls", network.etcd_peer, "--initial-advertise-peer-urls", network.etcd_peer,
            "--initial-cluster", f"default={network.etcd_peer}",
            # A throwaway cluster: losing writes in a host crash costs nothing, fsync costs seconds.
            "--unsafe-no-fsync"]


def apiserver_args(network: Network, layout: Layout) -> list[str]:
    pki = layout.pki
    return ["--etcd-servers", network.etcd_client,
            "--bind-address", network.node_ip, "--advertise-address", network.node_ip,
            "--secure-port", str(API_PORT),
            "--tls-cert-file", str(pki / "apiserver.crt"), "--tls-private-key-file", str(pki / "apiserver.key"),
            "--client-ca-file", str(pki / "ca.crt"),
            "--kubelet-client-certificate", str(pki / "apiserver-kubelet-client.crt"),
            "--kubelet-client-key", str(pki / "apiserver-kubelet-client.key"),
            # The node's address, never its name: a name would be looked up in the host's DNS.
            "--kubelet-preferred-address-types", "InternalIP",
            "--service-account-issuer", f"https://kubernetes.default.svc.{CLUSTER_DOMAIN}",
            "--service-account-key-file", str(pki / "sa.pub"),
            "--service-account-signing-key-file", str(pki / "sa.key"),
            "--service-cluster-ip-range", network.service_subnet,
            "--authorization-mode", "Node,RBAC", "--enable-admission-plugins", "NodeRestriction",
            "--anonymous-auth=false", "--profiling=false"]


def controller_manager_args(network: Network, layout: Layout) -> list[str]:
    return ["--kubeconfig", str(layout.kubeconfig("controller-manager")),
            "--service-account-private-key-file", str(layout.pki / "sa.key"),
            "--root-ca-file", str(layout.pki / "ca.crt"),
            "--service-cluster-ip-range", network.service_subnet,
            "--use-service-account-credentials", "--leader-elect=false", "--secure-port", "0",
            # Kubernetes' own provisioner for single-node test clusters: a claim gets a volume (a
            # directory under /tmp/hostpath_pv), deleted with it unless the class retains it.
            "--enable-hostpath-provisioner=true"]


def scheduler_args(layout: Layout) -> list[str]:
    return ["--kubeconfig", str(layout.kubeconfig("scheduler")), "--leader-elect=false", "--secure-port", "0"]


def kubelet_args(network: Network, layout: Layout) -> list[str]:
    return ["--config", str(layout.root / "kubelet.yaml"), "--kubeconfig", str(layout.kubeconfig("kubelet")),
            "--root-dir", str(layout.kubelet), "--hostname-override", NODE_NAME, "--node-ip", network.node_ip]
