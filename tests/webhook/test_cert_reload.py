"""The live SSLContext follows the certificate files: new handshakes get the new pair, nothing fails."""

from __future__ import annotations

import asyncio
import datetime
import logging
import ssl
from pathlib import Path

import httpx
import pytest

from autocrane import metrics as core_metrics
from autocrane import serving
from tests import waiting
from tests.webhook import tlstools
from webhook import server, settings, tls

POD_REVIEW = {
    "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
    "request": {"uid": "rotation", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"}, "operation": "CREATE",
                "namespace": "shop", "object": {
                    "metadata": {"generateName": "web-", "annotations": {"data.autocrane.io/model": "models/v1"}},
                    "spec": {"containers": [{"name": "app", "image": "shop/web:1"}]}}},
}


def _write(cert_file: Path, key_file: Path, pair: tls.KeyPair) -> None:
    cert_file.write_bytes(pair.cert_pem)
    key_file.write_bytes(pair.key_pem)


def test_the_first_load_serves_the_files_and_sets_the_expiry_gauge(tmp_path: Path) -> None:
    pair = tlstools.new_leaf(tlstools.new_ca())
    _write(tmp_path / "tls.crt", tmp_path / "tls.key", pair)
    reloader = tls.CertReloader(tmp_path / "tls.crt", tmp_path / "tls.key")
    info = reloader.load_files()
    assert info.serial == tlstools.serial_of(pair)
    assert reloader.ready()
    assert core_metrics.REGISTRY.get_sample_value("autocrane_webhook_cert_expiry_timestamp_seconds") == \
        info.not_after.timestamp()


def test_missing_files_at_start_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        tls.CertReloader(tmp_path / "tls.crt", tmp_path / "tls.key").load_files()


def test_a_half_written_pair_keeps_the_old_certificate_and_logs_once(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    ca = tlstools.new_ca()
    old, new = tlstools.new_leaf(ca), tlstools.new_leaf(ca)
    _write(cert_file, key_file, old)
    reloader = tls.CertReloader(cert_file, key_file)
    reloader.load_files()

    cert_file.write_bytes(new.cert_pem)  # the key is not there yet
    with caplog.at_level(logging.ERROR, logger="webhook.tls"):
        assert not reloader.check()
        assert not reloader.check()  # same bad pair: not retried, not logged again
    assert reloader.current is not None and reloader.current.serial == tlstools.serial_of(old)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "keeping the current certificate" in errors[0].getMessage()
    assert "do not load together" in errors[0].__dict__["error"]

    key_file.write_bytes(new.key_pem)
    assert reloader.check()
    assert reloader.current.serial == tlstools.serial_of(new)


def test_a_truncated_certificate_is_refused(tmp_path: Path) -> None:
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    old = tlstools.new_leaf(tlstools.new_ca())
    _write(cert_file, key_file, old)
    reloader = tls.CertReloader(cert_file, key_file)
    reloader.load_files()
    cert_file.write_bytes(old.cert_pem[:100])
    assert not reloader.check()
    assert reloader.current is not None and reloader.current.serial == tlstools.serial_of(old)


def test_an_expired_certificate_is_refused(tmp_path: Path) -> None:
    ca = tlstools.new_ca()
    two_days_ago = tlstools.utcnow() - datetime.timedelta(days=2)
    expired = tlstools.new_leaf(ca, now=two_days_ago, validity=datetime.timedelta(days=1))
    with pytest.raises(tls.CertError, match="expired"):
        tls.CertReloader().install(expired)


def test_readiness_ends_when_the_served_certificate_expires() -> None:
    reloader = tls.CertReloader()
    assert not reloader.ready()
    info = reloader.install(tlstools.new_leaf(tlstools.new_ca()))
    assert reloader.ready()
    assert not reloader.ready(now=info.not_after)


def test_a_kubernetes_secret_symlink_swap_is_picked_up(tmp_path: Path) -> None:
    ca = tlstools.new_ca()
    mount = tlstools.SecretMount(tmp_path / "secret")
    mount.publish(tlstools.new_leaf(ca))
    reloader = tls.CertReloader(mount.cert_file, mount.key_file)
    reloader.load_files()
    assert not reloader.check()  # nothing changed
    second = tlstools.new_leaf(ca)
    mount.publish(second)
    assert reloader.check()
    assert reloader.current is not None and reloader.current.serial == tlstools.serial_of(second)


def test_the_server_context_refuses_tls_below_1_2() -> None:
    assert tls.server_context().minimum_version == ssl.TLSVersion.TLSv1_2


def test_rotating_the_certificate_while_requests_flow_fails_none(tmp_path: Path) -> None:
    asyncio.run(_rotate_under_load(tmp_path))


async def _rotate_under_load(tmp_path: Path) -> None:
    ca = tlstools.new_ca()
    first, second = tlstools.new_leaf(ca), tlstools.new_leaf(ca)
    mount = tlstools.SecretMount(tmp_path / "secret")
    mount.publish(first)
    reloader = tls.CertReloader(mount.cert_file, mount.key_file, interval=0.05)
    reloader.load_files()
    app = server.admission_app(settings.load(None, {}))
    context = tlstools.client_context(ca)
    ok: list[int] = []
    failures: list[str] = []
    stop = asyncio.Event()

    async def client(keep_alive: bool) -> None:
        limits = httpx.Limits(max_keepalive_connections=1 if keep_alive else 0)
        async with httpx.AsyncClient(verify=context, limits=limits, base_url=f"https://127.0.0.1:{port}") as http:
            while not stop.is_set():
                try:
                    response = await http.post("/mutate", json=POD_REVIEW)
                    if response.status_code == 200 and response.json()["response"]["allowed"]:
                        ok.append(1)
                    else:
                        failures.append(f"{response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    async with serving.Serving([serving.Site("admission", app, "127.0.0.1", 0, reloader.context)]) as running:
        port = running.port("admission")
        watcher = asyncio.create_task(reloader.watch())
        clients = [asyncio.create_task(client(keep_alive=i % 2 == 0)) for i in range(6)]

        async def flowed(count: int) -> bool:
            return len(ok) >= count

        await waiting.eventually("requests to flow", lambda: flowed(30))
        assert await tlstools.served_serial(port, context) == tlstools.serial_of(first)
        mount.publish(second)

        async def rotated() -> bool:
            return await tlstools.served_serial(port, context) == tlstools.serial_of(second)

        await waiting.eventually("a new handshake to present the new certificate", rotated)
        after = len(ok)
        await waiting.eventually("requests to keep flowing after the rotation", lambda: flowed(after + 30))
        stop.set()
        await asyncio.gather(*clients)
        watcher.cancel()
    assert failures == []
    assert len(ok) >= 60


def test_without_memfd_the_pair_is_staged_in_a_private_temporary_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr("os.memfd_create", raising=False)
    pair = tlstools.new_leaf(tlstools.new_ca())
    assert tls.CertReloader().install(pair).serial == tlstools.serial_of(pair)
