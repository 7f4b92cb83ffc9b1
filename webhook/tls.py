"""The webhook's TLS: the live SSLContext, reloaded when the certificate changes, and self-signing.

Serving. uvicorn builds its ``ssl.SSLContext`` once, from files, and never re-reads them. We
build the context ourselves (:func:`server_context`: TLS >= 1.2, ALPN ``http/1.1``) and hand the
same object to uvicorn (``autocrane.serving.Site.ssl_context``). Every new handshake reads the
certificate the context holds at that moment, so :meth:`CertReloader.install` calling
``load_cert_chain`` on it again switches new connections to the new pair; a connection already
established keeps the certificate it was set up with (OpenSSL copies it into the connection), so
in-flight requests and open keep-alive connections are not disturbed. ``load_cert_chain`` runs
on the event loop's thread, where the handshakes run too, so no handshake sees half a change.

A new pair is first loaded into a scratch context: ``load_cert_chain`` sets the certificate
before it checks the key, so loading a mismatched pair straight into the live context would
leave it serving a certificate whose key it does not have. Only a pair that loads cleanly, is
parseable and has not expired reaches the live context; anything else (a half-written rotation,
a truncated file) is logged once and the old certificate stays. ``load_cert_chain`` only reads
files, so the pair, as bytes read once, is put in anonymous in-memory files (``memfd_create``,
read through ``/proc/self/fd``) for the load: what was validated is exactly what is loaded, the
key never touches a disk, and a read-only root filesystem is fine. Where memfd is missing (not
Linux) a private temporary directory (mode 0700) is used instead.

Watching. :meth:`CertReloader.watch` polls a SHA-256 of the two files every few seconds rather
than using inotify: a mounted Secret is updated by swapping the ``..data`` symlink, which
inotify on the file names does not report, while reading through the names always gives the
current content. Both files are read twice and must agree, so a swap between reading the
certificate and the key is not mistaken for a broken pair.

Self-signing (used by ``webhook/selfsigned.py``). Pure functions generate an ECDSA P-256 CA and a
serving certificate for given DNS names and IPs, decide renewal at 2/3 of a certificate's life
(cert-manager's rule; ``now`` is an argument), and merge CA bundles. This is the only webhook
module that imports ``cryptography``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import ipaddress
import logging
import os
import ssl
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from autocrane import errors
from webhook import metrics

log = logging.getLogger(__name__)

RENEW_AT_FRACTION = 2 / 3
"""Renew a certificate when this fraction of its validity has passed (cert-manager's default):
late enough not to churn, early enough that a missed renewal has a third of the life to be seen."""

BACKDATE = datetime.timedelta(minutes=5)
"""notBefore is set this far in the past, so a peer whose clock is a little behind accepts it."""


class CertError(errors.AutocraneError):
    """A certificate/key pair that cannot be served; the message says which and why."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A PEM certificate (possibly followed by its chain) and its PEM private key."""

    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What we log and decide on about a certificate (the first one of a PEM)."""

    serial: int
    subject: str
    issuer: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    fingerprint: str
    """SHA-256 of the DER encoding, hex."""


# ---------------------------------------------------------------------------------------------
# Pure functions: parsing, generation, renewal, bundles.


def _certificates(pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as error:
        raise CertError(f"not a PEM certificate: {error}") from None


def _info(cert: x509.Certificate) -> CertInfo:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = tuple(sans.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in sans.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns_names, ips = (), ()
    return CertInfo(
        serial=cert.serial_number, subject=cert.subject.rfc4514_string(), issuer=cert.issuer.rfc4514_string(),
        not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
        dns_names=dns_names, ip_addresses=ips, fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
    )


def describe(cert_pem: bytes) -> CertInfo:
    """The first certificate of ``cert_pem``; raises :class:`CertError` if there is none."""
    return _info(_certificates(cert_pem)[0])


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "autocrane"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def generate_ca(*, common_name: str, now: datetime.datetime, validity: datetime.timedelta) -> KeyPair:
    """A self-signed ECDSA P-256 CA that can sign serving certificates and nothing below them.

    The common name should be unique per CA (e.g. carry the creation time), so the issuer of a
    serving certificate tells which CA generation signed it.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue_serving_cert(ca: KeyPair, *, dns_names: Sequence[str], ip_addresses: Sequence[str] = (),
                       now: datetime.datetime, validity: datetime.timedelta) -> KeyPair:
    """An ECDSA P-256 server certificate for ``dns_names`` and ``ip_addresses``, signed by ``ca``.

    The API server (Go) matches only subjectAltNames, never the common name, so every name the
    webhook is reached by must be listed. notAfter never exceeds the CA's.
    """
    if not dns_names and not ip_addresses:
        raise ValueError("a serving certificate needs at least one DNS name or IP address")
    ca_cert = _certificates(ca.cert_pem)[0]
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise CertError("the CA key is not an ECDSA key")
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    common_name = (list(dns_names) or list(ip_addresses))[0][:64]  # CN is at most 64 characters
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(min(now + validity, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def renewal_time(cert_pem: bytes) -> datetime.datetime:
    """When 2/3 of the certificate's validity has passed."""
    info = describe(cert_pem)
    return info.not_before + (info.not_after - info.not_before) * RENEW_AT_FRACTION


def renewal_due(cert_pem: bytes, now: datetime.datetime) -> bool:
    return now >= renewal_time(cert_pem)


def covers(cert_pem: bytes, dns_names: Iterable[str], ip_addresses: Iterable[str] = ()) -> bool:
    """Whether the certificate's subjectAltNames are exactly these names and addresses."""
    info = describe(cert_pem)
    wanted_ips = {str(ipaddress.ip_address(ip)) for ip in ip_addresses}
    return set(info.dns_names) == set(dns_names) and set(info.ip_addresses) == wanted_ips


def signed_by(cert_pem: bytes, ca_pem: bytes) -> bool:
    """Whether ``ca_pem``'s key signed the certificate (not just whether the names match)."""
    cert, ca = _certificates(cert_pem)[0], _certificates(ca_pem)[0]
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):  # other issuer name, other key type, other key
        return False
    return True


def merge_ca_bundle(existing: bytes, new_ca_pem: bytes, *, now: datetime.datetime) -> bytes:
    """``existing`` plus ``new_ca_pem``: unique, unexpired, in a stable order, as normalised PEM.

    Keeping the old CAs is what makes a CA rotation safe: serving certificates signed by the old
    CA stay trusted until every replica has switched, and the old CA drops out by itself when it
    expires. Blocks of ``existing`` that are not certificates are dropped. The result depends
    only on the inputs, so every replica computes the same bundle and re-running changes nothing.
    """
    merged: dict[bytes, x509.Certificate] = {}
    for block in _pem_blocks(existing):
        try:
            certs = x509.load_pem_x509_certificates(block)
        except ValueError:
            log.warning("dropping a block of the caBundle that is not a certificate")
            continue
        for cert in certs:
            if cert.not_valid_after_utc > now:
                merged.setdefault(cert.fingerprint(hashes.SHA256()), cert)
    for cert in _certificates(new_ca_pem):
        merged.setdefault(cert.fingerprint(hashes.SHA256()), cert)
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in merged.values())


def _pem_blocks(bundle: bytes) -> list[bytes]:
    end = b"-----END CERTIFICATE-----"
    blocks = []
    for part in bundle.split(end):
        start = part.find(b"-----BEGIN CERTIFICATE-----")
        if start >= 0:
            blocks.append(part[start:] + end + b"\n")
    return blocks


# ---------------------------------------------------------------------------------------------
# The live context and its reloader.


def server_context() -> ssl.SSLContext:
    """A server context with our floor: TLS 1.2 or later, HTTP/1.1, no client certificates."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    context.verify_mode = ssl.CERT_NONE
    return context


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class CertReloader:
    """Holds the live server context and keeps the certificate it serves current.

    Give it the file paths to watch (cert-manager or any mounted Secret), or none and call
    :meth:`install` with each new pair (self-signed mode).
    """

    def __init__(self, cert_file: Path | None = None, key_file: Path | None = None, *,
                 interval: float = 5.0) -> None:
        if (cert_file is None) != (key_file is None):
            raise ValueError("give both the certificate and the key file, or neither")
        self.cert_file, self.key_file = cert_file, key_file
        self.interval = interval
        self.context = server_context()
        self.current: CertInfo | None = None
        """The certificate new connections get; None until the first pair is installed."""
        self._tried: bytes | None = None  # digest of the last pair read from the files
        self._warned_expiry: int | None = None

    def ready(self, now: datetime.datetime | None = None) -> bool:
        """A certificate is loaded and still valid."""
        return self.current is not None and (now or utcnow()) < self.current.not_after

    def install(self, pair: KeyPair, *, source: str = "memory") -> CertInfo:
        """Validate ``pair`` and make it the certificate of new connections; raises CertError."""
        try:
            info = describe(pair.cert_pem)
            if info.not_after <= utcnow():
                raise CertError(f"the certificate expired at {info.not_after.isoformat()}")
            try:
                with _pem_files(pair) as (cert_path, key_path):
                    try:
                        server_context().load_cert_chain(cert_path, key_path)
                    except ssl.SSLError as error:
                        raise CertError(f"the certificate and key do not load together: {error}") from None
                    self.context.load_cert_chain(cert_path, key_path)
            except OSError as error:
                raise CertError(f"cannot stage the certificate for loading: {error}") from None
        except CertError:
            metrics.CERT_RELOADS.labels("error").inc()
            raise
        previous, self.current = self.current, info
        metrics.CERT_RELOADS.labels("ok").inc()
        metrics.CERT_EXPIRY.set(info.not_after.timestamp())
        log.info("serving certificate loaded", extra={
            "source": source, "serial": f"{info.serial:x}", "subject": info.subject, "issuer": info.issuer,
            "not_after": info.not_after.isoformat(), "dns_names": list(info.dns_names),
            "previous_serial": f"{previous.serial:x}" if previous else None})
        return info

    def _read_files(self) -> KeyPair:
        """Both files, read until two consecutive reads agree (a ``..data`` swap may fall between)."""
        if self.cert_file is None or self.key_file is None:
            raise RuntimeError("this CertReloader has no certificate files")
        previous = None
        for _ in range(5):
            pair = KeyPair(self.cert_file.read_bytes(), self.key_file.read_bytes())
            if pair == previous:
                return pair
            previous = pair
        return pair

    def load_files(self) -> CertInfo:
        """The initial load from the files; raises CertError or OSError when they cannot be served."""
        pair = self._read_files()
        self._tried = _digest(pair)
        return self.install(pair, source=str(self.cert_file))

    def reload(self, pair: KeyPair) -> bool:
        """Install ``pair`` read from the files if it differs from the last one tried.

        Returns whether a new certificate is now served. A pair that fails is logged once, and
        tried again only when the files change.
        """
        digest = _digest(pair)
        if digest == self._tried:
            return False
        self._tried = digest
        try:
            self.install(pair, source=str(self.cert_file))
        except CertError as error:
            log.error("not serving the changed certificate files; keeping the current certificate",
                      extra={"cert_file": str(self.cert_file), "key_file": str(self.key_file), "error": str(error),
                             "serial": f"{self.current.serial:x}" if self.current else None})
            return False
        return True

    def check(self) -> bool:
        """One poll of the files (synchronous; tests and the first load use it)."""
        try:
            pair = self._read_files()
        except OSError as error:
            log.error("cannot read the certificate files", extra={"error": str(error)})
            return False
        return self.reload(pair)

    def warn_if_expiring(self, now: datetime.datetime | None = None) -> None:
        """Log a warning once per certificate that has less than a tenth of its life left."""
        info = self.current
        if info is None or info.serial == self._warned_expiry:
            return
        now = now or utcnow()
        if info.not_after - now < (info.not_after - info.not_before) / 10:
            self._warned_expiry = info.serial
            log.warning("the serving certificate expires soon and has not been replaced",
                        extra={"serial": f"{info.serial:x}", "not_after": info.not_after.isoformat()})

    async def watch(self) -> None:
        """Poll the files every ``interval`` seconds, forever; cancel to stop."""
        if self.cert_file is None:
            raise RuntimeError("CertReloader.watch needs certificate files")
        while True:
            await asyncio.sleep(self.interval)
            try:
                # Reading may block on a slow volume: do it off the loop. Installing happens on
                # the loop's thread, where the handshakes are (see the module docstring).
                pair = await asyncio.to_thread(self._read_files)
            except OSError as error:
                log.error("cannot read the certificate files", extra={"error": str(error)})
                continue
            try:
                self.reload(pair)
                self.warn_if_expiring()
            except Exception:  # a bug here must not stop the watching: the next poll tries again
                log.exception("checking the certificate files failed")


@contextlib.contextmanager
def _pem_files(pair: KeyPair) -> Iterator[tuple[str, str]]:
    """Paths from which ``load_cert_chain`` reads ``pair``: in-memory files where possible."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        descriptors = []
        try:
            for name, data in (("tls.crt", pair.cert_pem), ("tls.key", pair.key_pem)):
                descriptor = os.memfd_create(name, os.MFD_CLOEXEC)
                descriptors.append(descriptor)
                os.write(descriptor, data)
            yield f"/proc/self/fd/{descriptors[0]}", f"/proc/self/fd/{descriptors[1]}"
        finally:
            for descriptor in descriptors:
                os.close(descriptor)
        return
    with tempfile.TemporaryDirectory(prefix="autocrane-tls-") as scratch:
        paths = []
        for name, data in (("tls.crt", pair.cert_pem), ("tls.key", pair.key_pem)):
            path = os.path.join(scratch, name)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
            paths.append(path)
        yield paths[0], paths[1]


def _digest(pair: KeyPair) -> bytes:
    return hashlib.sha256(pair.cert_pem + b"\0" + pair.key_pem).digest()
