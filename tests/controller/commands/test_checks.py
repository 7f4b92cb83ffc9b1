"""The verdicts of ``autocrane check``, from observed objects (the I/O is tested on a cluster)."""

from __future__ import annotations

import datetime as dt

from controller.commands import checks
from tests.webhook import tlstools

NOW = tlstools.utcnow()
DNS = "autocrane-injector.autocrane-system.svc"


def test_crds_must_exist_and_be_established() -> None:
    established = {"status": {"conditions": [{"type": "Established", "status": "True"}]}}
    results = checks.crds({"datarollouts.autocrane.io": established, "approllouts.autocrane.io": None,
                           "other.autocrane.io": {"status": {}}})
    assert [r.ok for r in results] == [True, False, False]
    assert "not installed" in results[1].message and "crds.install=true" in results[1].fix
    assert "not Established" in results[2].message
    assert checks.exit_code(results) == 1 and checks.exit_code(results[:1]) == 0


def test_the_inject_webhook_must_be_registered_with_a_ca_bundle() -> None:
    assert checks.inject_webhook(None, "r-injector")[0].ok is False
    other = {"webhooks": [{"name": "hold.autocrane.io", "clientConfig": {"caBundle": "eA=="}}]}
    assert "no webhook inject.autocrane.io" in checks.inject_webhook(other, "r-injector")[0].message
    bare = {"webhooks": [{"name": "inject.autocrane.io", "clientConfig": {"service": {}}}]}
    assert "no caBundle" in checks.inject_webhook(bare, "r-injector")[0].message
    good = {"webhooks": [{"name": "inject.autocrane.io", "clientConfig": {"caBundle": "eA=="}}]}
    result, hook = checks.inject_webhook(good, "r-injector")
    assert result.ok is True and hook == good["webhooks"][0]


def test_the_ca_bundle_must_verify_the_serving_certificate_for_the_services_name() -> None:
    ca, other = tlstools.new_ca("right"), tlstools.new_ca("wrong")
    leaf = tlstools.new_leaf(ca, names=(DNS,))

    def verdict(bundle: bytes, serving: bytes | None = leaf.cert_pem, ca_pem: bytes | None = None) -> checks.Result:
        return checks.ca_bundle(bundle, serving=serving, ca=ca_pem, dns_name=DNS, now=NOW, fix="the fix")

    assert verdict(ca.cert_pem).ok is True
    assert verdict(other.cert_pem + ca.cert_pem).ok is True  # a bundle in rotation, old and new CA
    wrong = verdict(other.cert_pem)
    assert wrong.ok is False and "does not verify" in wrong.message and wrong.fix == "the fix"
    assert "no PEM certificate" in verdict(b"not a certificate").message
    elsewhere = checks.ca_bundle(ca.cert_pem, serving=tlstools.new_leaf(ca, names=("other.svc",)).cert_pem, ca=None,
                                 dns_name=DNS, now=NOW, fix="")
    assert elsewhere.ok is False and "not for " + DNS in elsewhere.message
    later = NOW + dt.timedelta(days=2)  # the leaf lives an hour, the CA 30 days
    assert "expired" in checks.ca_bundle(ca.cert_pem, serving=leaf.cert_pem, ca=None, dns_name=DNS, now=later,
                                         fix="").message
    gone = checks.ca_bundle(ca.cert_pem, serving=None, ca=None, dns_name=DNS, now=NOW + dt.timedelta(days=40), fix="")
    assert gone.ok is False and "expired" in gone.message


def test_in_self_signed_mode_the_bundle_must_hold_the_webhooks_ca() -> None:
    ca, other = tlstools.new_ca("right"), tlstools.new_ca("wrong")
    assert checks.ca_bundle(ca.cert_pem, serving=None, ca=ca.cert_pem, dns_name=DNS, now=NOW, fix="").ok is True
    wrong = checks.ca_bundle(other.cert_pem, serving=None, ca=ca.cert_pem, dns_name=DNS, now=NOW, fix="f")
    assert wrong.ok is False and "does not hold the webhook's CA" in wrong.message
    unread = checks.ca_bundle(ca.cert_pem, serving=None, ca=None, dns_name=DNS, now=NOW, fix="")
    assert unread.ok is None  # a note, not a fault: the Secret could not be read


def test_the_webhook_service_needs_a_ready_endpoint() -> None:
    ready = {"endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True}}]}
    unready = {"endpoints": [{"addresses": ["10.0.0.2"], "conditions": {"ready": False}}]}
    assert checks.endpoints("r-injector", [ready, unready]).message == "Service r-injector has 1 ready endpoints"
    none = checks.endpoints("r-injector", [unready, {"endpoints": None}])
    assert none.ok is False and "no ready endpoints" in none.message and "scaled to 0" in none.fix
    assert checks.endpoints("r-injector", []).ok is False


def _lease(renewed: dt.datetime | None, holder: str | None = "pod-a", duration: int | None = 15) -> dict[str, object]:
    spec = {"holderIdentity": holder, "leaseDurationSeconds": duration,
            "renewTime": None if renewed is None else renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
    return {"spec": spec}


def test_a_live_leader_renewed_its_lease_within_its_duration() -> None:
    now = NOW.timestamp()
    assert checks.leader(_lease(NOW - dt.timedelta(seconds=3)), "r-controller", now).ok is True
    stale = checks.leader(_lease(NOW - dt.timedelta(seconds=60)), "r-controller", now)
    assert stale.ok is False and "60s ago" in stale.message and "no live leader" in stale.message
    assert checks.leader(_lease(NOW, holder=""), "r-controller", now).ok is False  # released on shutdown
    assert checks.leader({"spec": {}}, "r-controller", now).ok is False  # never led (the chart's empty Lease)
    assert "missing" in checks.leader(None, "r-controller", now).message


def test_the_repository_must_be_ready_with_every_source_fetched() -> None:
    assert checks.repository(None, "r-datarepository").ok is None
    ready = checks.repository((200, {"ready": True, "unready": [], "sources": {"model": {}}}), "r-datarepository")
    assert ready.ok is True and "(model)" in ready.message
    unready = checks.repository((503, {"ready": False, "unready": ["model"]}), "r-datarepository")
    assert unready.ok is False and "without a version: model" in unready.message
    down = checks.repository((503, {"kind": "Status", "message": 'no endpoints available for service "r"'}), "r")
    assert down.ok is False and "cannot be reached" in down.message and "no endpoints" in down.message


def test_opted_in_namespaces_are_listed_and_none_is_a_note() -> None:
    listed = checks.namespaces([{"metadata": {"name": "shop"}}, {"metadata": {"name": "apps"}}])
    assert listed.ok is True and listed.message == "opted-in namespaces: apps, shop"
    assert checks.namespaces([]).ok is None


def test_the_dry_run_pod_must_come_back_injected() -> None:
    pod = checks.dry_run_pod()
    assert "watchdoghealthz.autocrane.io/min-ready-seconds" in pod["metadata"]["annotations"]
    assert checks.dry_run("shop", {"metadata": {"annotations": {"injector.autocrane.io/status": "{}"}}}).ok is True
    plain = checks.dry_run("shop", {"metadata": {"annotations": {}}})
    assert plain.ok is False and "without injection" in plain.message
    refused = checks.dry_run("shop", 'failed calling webhook "inject.autocrane.io": x509: certificate signed by '
                             'unknown authority')
    assert refused.ok is False and "caBundle" in refused.fix
    assert checks.dry_run(None, None).ok is None


def test_the_report_marks_each_check_and_gives_the_fix_of_a_fault() -> None:
    text = checks.report([checks.Result("a", True, "fine"), checks.Result("b", False, "broken", "do this"),
                          checks.Result("c", None, "skipped", "not shown")])
    assert text.splitlines() == ["[ok  ] a: fine", "[FAIL] b: broken", "       fix: do this", "[note] c: skipped"]
