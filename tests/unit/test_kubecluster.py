"""The test cluster's pure parts: network choice, host-state parsing, node configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.kubecluster import configs
from tests.kubecluster.host_state import HostState, iptables_rules, mounts, sysctls
from tests.kubecluster.layout import Layout, Network
from tests.kubecluster.pki import CLIENTS, Pki, kubeconfig_text

ROUTES = """default via 192.0.2.1 dev eth0
10.160.0.0/16 dev br-a proto kernel scope link src 10.160.0.1
10.161.4.0/24 dev br-b proto kernel scope link src 10.161.4.1
172.17.0.0/16 dev docker0 proto kernel scope link src 172.17.0.1 linkdown
"""


def test_network_skips_blocks_that_overlap_a_route() -> None:
    network = Network.pick(ROUTES, "afk-test")
    assert network.octet == 161  # 10.160/16 overlaps; 10.161.0.0/22 does not touch 10.161.4.0/24
    assert (network.node_ip, network.pod_subnet, network.service_ip) == ("10.161.0.1", "10.161.0.0/24", "10.161.1.1")


def test_network_refuses_when_every_block_is_taken() -> None:
    with pytest.raises(RuntimeError, match="no free 10.x.0.0/22"):
        Network.pick("10.0.0.0/8 dev x\n", "afk-test")


def test_sysctls_leave_out_counters_and_interfaces() -> None:
    text = ("kernel.panic = 1\nfs.file-nr = 1 0 9\nnet.ipv4.conf.veth1.forwarding = 1\n"
            "net.ipv4.conf.all.forwarding = 1\nkernel.random.uuid = x\n")
    assert sysctls(text) == {"kernel.panic": "1", "net.ipv4.conf.all.forwarding": "1"}


def test_iptables_rules_leave_out_counters_comments_and_dockers_chains() -> None:
    text = "# Generated\n*filter\n:INPUT ACCEPT [12:345]\n:DOCKER - [0:0]\n-A DOCKER -j RETURN\n-A INPUT -j KUBE-X\nCOMMIT\n"
    assert iptables_rules(text) == ["*filter", ":INPUT ACCEPT", "-A INPUT -j KUBE-X", "COMMIT"]


def test_mounts_keep_point_type_source_and_leave_out_other_tenants() -> None:
    text = ("22 1 0:21 / /proc rw,nosuid shared:5 - proc proc rw\n"
            "90 22 0:5 / /proc/sys/kernel/panic rw - ext4 /dev/vda rw\n"
            "91 1 0:6 / /var/lib/docker/overlay2/x/merged rw - overlay overlay rw\n"
            "92 1 0:7 / /var/tmp/build.x/rootfs/proc rw - proc proc rw\n")
    assert mounts(text) == ["/proc proc proc", "/proc/sys/kernel/panic ext4 /dev/vda"]


def test_differences_name_what_changed() -> None:
    before = HostState({"kernel.panic": "1"}, [], [], ["table ip nat"], [], [], {"/var/lib/cni": False})
    after = HostState({"kernel.panic": "10"}, [], [], ["table ip nat", "table ip kube-proxy"], [], [],
                      {"/var/lib/cni": True})
    assert before.differences(after) == [
        "sysctls: {'kernel.panic': ('1', '10')}",
        "nft_tables: added ['table ip kube-proxy'], removed []",
        "paths: {'/var/lib/cni': (False, True)}",
    ]


def test_node_config_keeps_the_host_as_it_was(tmp_path: Path) -> None:
    network, layout = Network("afk-test", 200), Layout(tmp_path)
    kubelet = yaml.safe_load(configs.kubelet_config(network, layout))
    assert kubelet["protectKernelDefaults"] is True and kubelet["makeIPTablesUtilChains"] is False
    proxy = yaml.safe_load(configs.kube_proxy_config(network, layout))
    assert proxy["mode"] == "nftables" and proxy["nodePortAddresses"] == ["10.200.0.1/32"]
    assert proxy["conntrack"]["maxPerCore"] == 0
    plugin = json.loads(configs.cni_conflist(network, layout))["plugins"]
    assert [p["type"] for p in plugin] == ["bridge"] and plugin[0]["ipMasq"] is False
    toml = configs.containerd_toml(layout)
    assert f'root = "{tmp_path}/containerd/root"' in toml and "restrict_oom_score_adj = true" in toml


def test_pki_issues_kubeconfigs_signed_by_its_ca(tmp_path: Path) -> None:
    from cryptography import x509

    pki = Pki(tmp_path)
    admin = next(c for c in CLIENTS if c.file == "admin")
    document = yaml.safe_load(pki.kubeconfig(tmp_path / "admin.kubeconfig", admin, "https://10.200.0.1:6443").read_text())
    assert document["clusters"][0]["cluster"]["server"] == "https://10.200.0.1:6443"
    cert = x509.load_pem_x509_certificate((tmp_path / "admin.crt").read_bytes())
    ca = x509.load_pem_x509_certificate(pki.ca_pem)
    cert.verify_directly_issued_by(ca)
    assert "O=system:masters" in cert.subject.rfc4514_string()
    assert (tmp_path / "admin.key").stat().st_mode & 0o777 == 0o600
    assert kubeconfig_text("s", b"c", b"d", b"e", "u").count("data:") == 3
