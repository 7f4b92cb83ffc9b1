"""Certificates and keys for the local control plane, made with ``cryptography``.

One throw-away CA signs the apiserver's serving certificate (IP SANs 127.0.0.1, the ``kubernetes``
Service's IP and, with a real node, the host's address toward it, so clients verify it), the
admin's client certificate (group ``system:masters``) and the certificate the apiserver presents
to kubelets. The real node's own certificates (kubelet serving and client, kube-proxy, CoreDNS) are
issued by :func:`issue_client_cert` and :func:`issue_serving_cert`. A separate RSA key pair signs
service-account tokens. Everything is written into the cluster's own directory and is never reused
between clusters.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import json
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=7)
KUBERNETES_SERVICE_IP = "10.96.0.1"
"""The ``kubernetes`` Service's ClusterIP: the first address of the apiserver's service range."""


@dataclasses.dataclass(frozen=True, slots=True)
class ClusterPKI:
    """Paths of every PEM file the control plane needs."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_private_key: Path
    sa_public_key: Path
    kubelet_client_cert: Path
    """What the apiserver presents to kubelets (``kubectl logs``, ``exec``, ``port-forward``)."""
    kubelet_client_key: Path


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
    )


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName] | None = None,
) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(subject, ca_name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _sans(ips: Sequence[str], names: Sequence[str]) -> list[x509.GeneralName]:
    return [*(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips), *(x509.DNSName(n) for n in names)]


def write_cluster_pki(directory: Path, *, apiserver_ips: Sequence[str] = ()) -> ClusterPKI:
    """Create a CA, the apiserver's serving and kubelet-client certs, an admin cert and a SA key pair.

    ``apiserver_ips``: addresses it serves on besides 127.0.0.1 and the ``kubernetes`` Service IP.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("autocrane-devcluster-ca")
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    sans = _sans(["127.0.0.1", KUBERNETES_SERVICE_IP, *apiserver_ips], [
        "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local"])
    serving = _leaf(ca_key, ca_name, _name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH, sans)
    admin = _leaf(ca_key, ca_name, _name("autocrane-admin", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH)
    kubelet_client = _leaf(ca_key, ca_name, _name("kube-apiserver-kubelet-client", "system:masters"),
                           ExtendedKeyUsageOID.CLIENT_AUTH)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    pki = ClusterPKI(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
        sa_private_key=directory / "sa.key",
        sa_public_key=directory / "sa.pub",
        kubelet_client_cert=directory / "apiserver-kubelet-client.crt",
        kubelet_client_key=directory / "apiserver-kubelet-client.key",
    )
    files = {
        pki.ca_cert: ca_cert.public_bytes(serialization.Encoding.PEM),
        pki.ca_key: _key_pem(ca_key),
        pki.serving_cert: serving[0],
        pki.serving_key: serving[1],
        pki.admin_cert: admin[0],
        pki.admin_key: admin[1],
        pki.sa_private_key: _key_pem(sa_key),
        pki.sa_public_key: sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        pki.kubelet_client_cert: kubelet_client[0],
        pki.kubelet_client_key: kubelet_client[1],
    }
    for path, data in files.items():
        path.write_bytes(data)
        path.chmod(0o600)
    return pki


def _issue(pki: ClusterPKI, subject: x509.Name, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName] | None,
           cert_path: Path, key_path: Path) -> None:
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{pki.ca_key}: expected the EC key this module writes")
    cert, key = _leaf(ca_key, ca_cert.subject, subject, usage, sans)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(cert)
    key_path.write_bytes(key)
    key_path.chmod(0o600)


def issue_serving_cert(pki: ClusterPKI, common_name: str, cert_path: Path, key_path: Path, *,
                       ips: Sequence[str], names: Sequence[str] = ()) -> None:
    """A serving certificate for ``ips`` and ``names``, signed by the cluster CA."""
    _issue(pki, _name(common_name), ExtendedKeyUsageOID.SERVER_AUTH, _sans(ips, names), cert_path, key_path)


def issue_client_cert(pki: ClusterPKI, user: str, cert_path: Path, key_path: Path, *, group: str | None = None) -> None:
    """A client certificate for ``user`` (in ``group``), signed by the cluster CA."""
    _issue(pki, _name(user, group), ExtendedKeyUsageOID.CLIENT_AUTH, None, cert_path, key_path)


def issue_loopback_serving_cert(pki: ClusterPKI, cert_path: Path, key_path: Path) -> None:
    """A serving certificate for 127.0.0.1/localhost signed by the cluster CA (for local webhooks)."""
    issue_serving_cert(pki, "autocrane-webhook", cert_path, key_path, ips=["127.0.0.1"], names=["localhost"])


def write_kubeconfig(path: Path, server: str, ca_cert: Path, client_cert: Path, client_key: Path, *,
                     user: str = "admin") -> None:
    """A kubeconfig for ``server`` with one client certificate (JSON: every kubeconfig reader takes it)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "autocrane-dev", "cluster": {"server": server, "certificate-authority": str(ca_cert)}}],
        "users": [{"name": user, "user": {"client-certificate": str(client_cert), "client-key": str(client_key)}}],
        "contexts": [{"name": "autocrane-dev", "context": {"cluster": "autocrane-dev", "user": user}}],
        "current-context": "autocrane-dev",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
