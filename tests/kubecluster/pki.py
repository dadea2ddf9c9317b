"""Fresh certificates and kubeconfigs for a throwaway cluster.

Why our own: a test cluster must never reuse credentials, and generating EC P-256 keys in
process takes milliseconds (kubeadm would be one more binary to build). One CA signs every
serving and client certificate; identities follow Kubernetes' conventions (CN = user,
O = group), so RBAC's default bindings apply.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=2)


@dataclass(frozen=True)
class Identity:
    """A client identity the cluster's components log in with."""

    file: str  # pki/<file>.crt, pki/<file>.key, <file>.kubeconfig
    user: str
    groups: tuple[str, ...] = ()


CLIENTS = (
    Identity("admin", "kubernetes-admin", ("system:masters",)),
    Identity("controller-manager", "system:kube-controller-manager"),
    Identity("scheduler", "system:kube-scheduler"),
    Identity("kube-proxy", "system:kube-proxy"),
    Identity("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",)),
)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _name(common: str, groups: tuple[str, ...] = ()) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups]
                     + [x509.NameAttribute(NameOID.COMMON_NAME, common)])


class Pki:
    """The CA, the certificates signed by it and the service-account key pair, under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._ca_key = _key()
        now = datetime.datetime.now(datetime.timezone.utc)
        self._ca = (x509.CertificateBuilder()
                    .subject_name(_name("agentfleet-test-ca")).issuer_name(_name("agentfleet-test-ca"))
                    .public_key(self._ca_key.public_key()).serial_number(x509.random_serial_number())
                    .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
                    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                    .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                   critical=True)
                    .sign(self._ca_key, hashes.SHA256()))
        self.ca_file.write_bytes(self._ca.public_bytes(serialization.Encoding.PEM))
        service_account = _key()
        _write_key(root / "sa.key", service_account)
        (root / "sa.pub").write_bytes(service_account.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    @property
    def ca_file(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_pem(self) -> bytes:
        return self.ca_file.read_bytes()

    def issue(self, file: str, common: str, groups: tuple[str, ...] = (), *,
              dns: tuple[str, ...] = (), ips: tuple[str, ...] = ()) -> tuple[Path, Path]:
        """A key and certificate pki/<file>.{key,crt}: a serving one when given names or
        addresses, else a client one."""
        key = _key()
        now = datetime.datetime.now(datetime.timezone.utc)
        serving = bool(dns or ips)
        usage = [ExtendedKeyUsageOID.SERVER_AUTH] if serving else [ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = (x509.CertificateBuilder()
                   .subject_name(_name(common, groups)).issuer_name(self._ca.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage(usage), critical=False))
        if serving:
            names = [x509.DNSName(name) for name in dns] + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        certificate = builder.sign(self._ca_key, hashes.SHA256())
        key_file, cert_file = self.root / f"{file}.key", self.root / f"{file}.crt"
        _write_key(key_file, key)
        cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return cert_file, key_file

    def kubeconfig(self, path: Path, identity: Identity, server: str) -> Path:
        """A kubeconfig for `identity` with everything inline (it can be handed to Pulumi)."""
        cert_file, key_file = self.issue(identity.file, identity.user, identity.groups)
        path.write_text(kubeconfig_text(server, self.ca_pem, cert_file.read_bytes(), key_file.read_bytes(),
                                        identity.user))
        path.chmod(0o600)
        return path


def kubeconfig_text(server: str, ca: bytes, cert: bytes, key: bytes, user: str) -> str:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "agentfleet-test",
        "clusters": [{"name": "agentfleet-test",
                      "cluster": {"server": server, "certificate-authority-data": b64(ca)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}],
        "contexts": [{"name": "agentfleet-test", "context": {"cluster": "agentfleet-test", "user": user}}],
    }, sort_keys=False)
