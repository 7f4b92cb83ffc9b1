"""Certificate generation, renewal at 2/3 of life, and caBundle merging: pure, with an injected ``now``."""

from __future__ import annotations

import datetime
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.webhook import tlstools
from webhook import tls

DAY = datetime.timedelta(days=1)
HOUR = tlstools.HOUR
NOW = tlstools.NOW


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def test_the_ca_is_a_self_signed_p256_ca_that_signs_only_leaves() -> None:
    ca = _cert(tlstools.new_ca("ca-1", now=NOW, validity=365 * DAY).cert_pem)
    assert ca.subject == ca.issuer
    ca.verify_directly_issued_by(ca)
    public_key = ca.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(public_key.curve, ec.SECP256R1)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign


def test_the_ca_is_valid_for_its_validity_and_backdated_a_little() -> None:
    ca = _cert(tlstools.new_ca(now=NOW, validity=365 * DAY).cert_pem)
    assert ca.not_valid_after_utc == NOW + 365 * DAY
    assert NOW - datetime.timedelta(minutes=10) < ca.not_valid_before_utc < NOW


def test_a_serving_cert_carries_every_dns_name_and_ip_as_subject_alt_names() -> None:
    names = ("webhook", "webhook.autocrane", "webhook.autocrane.svc", "webhook.autocrane.svc.cluster.local")
    leaf = _cert(tlstools.new_leaf(tlstools.new_ca(now=NOW), now=NOW, names=names, ips=("127.0.0.1", "::1")).cert_pem)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == list(names)
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]


def test_a_serving_cert_is_for_server_auth_only_and_signed_by_the_ca() -> None:
    ca = tlstools.new_ca(now=NOW)
    leaf = _cert(tlstools.new_leaf(ca, now=NOW).cert_pem)
    leaf.verify_directly_issued_by(_cert(ca.cert_pem))
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    assert list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH]
    leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)


def test_a_serving_cert_never_outlives_its_ca() -> None:
    ca = tlstools.new_ca(now=NOW, validity=2 * DAY)
    leaf = _cert(tlstools.new_leaf(ca, now=NOW, validity=7 * DAY).cert_pem)
    assert leaf.not_valid_after_utc == NOW + 2 * DAY


def test_a_serving_cert_needs_at_least_one_name() -> None:
    with pytest.raises(ValueError, match="at least one"):
        tlstools.new_leaf(tlstools.new_ca(now=NOW), now=NOW, names=(), ips=())


def test_renewal_is_due_at_two_thirds_of_the_life_not_before() -> None:
    leaf = tlstools.new_leaf(tlstools.new_ca(now=NOW), now=NOW, validity=3 * DAY).cert_pem
    info = tls.describe(leaf)
    two_thirds = info.not_before + (info.not_after - info.not_before) * 2 / 3
    assert tls.renewal_time(leaf) == two_thirds
    assert not tls.renewal_due(leaf, two_thirds - datetime.timedelta(seconds=1))
    assert tls.renewal_due(leaf, two_thirds)
    assert tls.renewal_due(leaf, info.not_after + DAY)


def test_covers_compares_the_whole_name_set() -> None:
    leaf = tlstools.new_leaf(tlstools.new_ca(now=NOW), now=NOW, names=("a", "b"), ips=("10.0.0.1",)).cert_pem
    assert tls.covers(leaf, ["b", "a"], ["10.0.0.1"])
    assert not tls.covers(leaf, ["a"], ["10.0.0.1"])
    assert not tls.covers(leaf, ["a", "b", "c"], ["10.0.0.1"])
    assert not tls.covers(leaf, ["a", "b"], [])


def test_signed_by_checks_the_signature_not_just_the_issuer_name() -> None:
    ca, impostor = tlstools.new_ca("same-name", now=NOW), tlstools.new_ca("same-name", now=NOW)
    leaf = tlstools.new_leaf(ca, now=NOW).cert_pem
    assert tls.signed_by(leaf, ca.cert_pem)
    assert not tls.signed_by(leaf, impostor.cert_pem)


def test_describe_refuses_what_is_not_a_certificate() -> None:
    with pytest.raises(tls.CertError, match="not a PEM certificate"):
        tls.describe(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")


# caBundle merging


def _fingerprints(bundle: bytes) -> list[str]:
    return [cert.fingerprint(hashes.SHA256()).hex() for cert in x509.load_pem_x509_certificates(bundle)]


def test_merging_into_an_empty_bundle_gives_just_the_new_ca() -> None:
    ca = tlstools.new_ca(now=NOW)
    assert tls.merge_ca_bundle(b"", ca.cert_pem, now=NOW) == ca.cert_pem


def test_merging_keeps_the_old_ca_during_a_rotation() -> None:
    old, new = tlstools.new_ca("old", now=NOW), tlstools.new_ca("new", now=NOW + DAY)
    merged = tls.merge_ca_bundle(old.cert_pem, new.cert_pem, now=NOW + DAY)
    assert _fingerprints(merged) == _fingerprints(old.cert_pem + new.cert_pem)


def test_merging_the_same_ca_again_changes_nothing() -> None:
    old, new = tlstools.new_ca("old", now=NOW), tlstools.new_ca("new", now=NOW)
    once = tls.merge_ca_bundle(old.cert_pem, new.cert_pem, now=NOW)
    assert tls.merge_ca_bundle(once, new.cert_pem, now=NOW) == once
    assert tls.merge_ca_bundle(once, old.cert_pem, now=NOW) == once


def test_merging_removes_duplicates_already_in_the_bundle() -> None:
    ca = tlstools.new_ca(now=NOW)
    assert tls.merge_ca_bundle(ca.cert_pem * 3, ca.cert_pem, now=NOW) == ca.cert_pem


def test_merging_drops_expired_cas() -> None:
    expired = tlstools.new_ca("expired", now=NOW - 10 * DAY, validity=DAY)
    current = tlstools.new_ca("current", now=NOW)
    assert tls.merge_ca_bundle(expired.cert_pem, current.cert_pem, now=NOW) == current.cert_pem


def test_merging_drops_blocks_that_are_not_certificates_and_normalises_whitespace() -> None:
    ca, other = tlstools.new_ca("a", now=NOW), tlstools.new_ca("b", now=NOW)
    messy = b"garbage\n" + ca.cert_pem.replace(b"\n", b"\r\n") + \
        b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
    assert tls.merge_ca_bundle(messy, other.cert_pem, now=NOW) == ca.cert_pem + other.cert_pem


def test_a_merged_bundle_verifies_leaves_of_both_generations() -> None:
    old, new = tlstools.new_ca("old", now=NOW), tlstools.new_ca("new", now=NOW)
    bundle = x509.load_pem_x509_certificates(tls.merge_ca_bundle(old.cert_pem, new.cert_pem, now=NOW))
    for ca in (old, new):
        leaf = _cert(tlstools.new_leaf(ca, now=NOW, validity=HOUR).cert_pem)
        assert any(_issued(leaf, root) for root in bundle)


def _issued(leaf: x509.Certificate, root: x509.Certificate) -> bool:
    try:
        leaf.verify_directly_issued_by(root)
    except Exception:
        return False
    return True
