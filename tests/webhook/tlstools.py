"""Helpers for TLS tests: throw-away CAs and leaves, Secret-style mounts, handshakes, waiting."""

from __future__ import annotations

import asyncio
import datetime
import os
import ssl
from pathlib import Path

from cryptography import x509

from webhook import tls

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
HOUR = datetime.timedelta(hours=1)


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def new_ca(name: str = "test-ca", now: datetime.datetime | None = None,
           validity: datetime.timedelta = datetime.timedelta(days=30)) -> tls.KeyPair:
    return tls.generate_ca(common_name=name, now=now or utcnow(), validity=validity)


def new_leaf(ca: tls.KeyPair, now: datetime.datetime | None = None, validity: datetime.timedelta = HOUR,
             names: tuple[str, ...] = ("localhost",), ips: tuple[str, ...] = ("127.0.0.1",)) -> tls.KeyPair:
    return tls.issue_serving_cert(ca, dns_names=names, ip_addresses=ips, now=now or utcnow(), validity=validity)


def client_context(*cas: tls.KeyPair) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata="".join(ca.cert_pem.decode() for ca in cas))
    return context


class SecretMount:
    """A directory laid out like a mounted Kubernetes Secret: ``tls.crt -> ..data/tls.crt``,
    ``..data -> ..<generation>``; :meth:`publish` swaps ``..data`` atomically, as the kubelet does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.generation = 0
        root.mkdir(parents=True, exist_ok=True)

    @property
    def cert_file(self) -> Path:
        return self.root / "tls.crt"

    @property
    def key_file(self) -> Path:
        return self.root / "tls.key"

    def publish(self, pair: tls.KeyPair) -> None:
        self.generation += 1
        version = self.root / f"..{self.generation}"
        version.mkdir()
        (version / "tls.crt").write_bytes(pair.cert_pem)
        (version / "tls.key").write_bytes(pair.key_pem)
        temporary = self.root / "..data_tmp"
        os.symlink(version.name, temporary)
        os.replace(temporary, self.root / "..data")
        for name in ("tls.crt", "tls.key"):
            if not (self.root / name).is_symlink():
                os.symlink(f"..data/{name}", self.root / name)


async def served_serial(port: int, context: ssl.SSLContext, host: str = "127.0.0.1") -> int:
    """The serial of the certificate a brand-new TLS handshake with ``host:port`` presents."""
    _, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname="localhost")
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        await writer.wait_closed()
    return x509.load_der_x509_certificate(der).serial_number


def serial_of(pair: tls.KeyPair) -> int:
    return tls.describe(pair.cert_pem).serial
