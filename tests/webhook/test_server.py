"""POST /mutate at the HTTP level, the health app, and a real admission round trip over TLS."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import pytest
from starlette.testclient import TestClient

from autocrane import metrics as core_metrics
from autocrane import serving
from tests.webhook import tlstools
from webhook import admission, server, settings, tls

INJECTOR = settings.load(None, {})


def _review(pod: dict[str, Any] | None = None, uid: str = "uid-1", **request: Any) -> dict[str, Any]:
    pod = pod if pod is not None else {
        "metadata": {"generateName": "web-", "annotations": {"data.autocrane.io/model": "models/v1"}},
        "spec": {"containers": [{"name": "app", "image": "shop/web:1"}]}}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "operation": "CREATE", "namespace": "shop", "object": pod, **request}}


def _count(result: str) -> float:
    return core_metrics.REGISTRY.get_sample_value("autocrane_webhook_admissions_total", {"result": result}) or 0.0


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(server.admission_app(INJECTOR), raise_server_exceptions=False) as test_client:
        yield test_client


def test_an_opted_in_pod_is_answered_with_a_patch_that_injects(client: TestClient) -> None:
    review = _review()
    response = client.post("/mutate", json=review)
    assert response.status_code == 200
    answer = response.json()
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == "uid-1" and answer["response"]["allowed"] is True
    patch = json.loads(base64.b64decode(answer["response"]["patch"]))
    pod = jsonpatch.apply_patch(copy.deepcopy(review["request"]["object"]), patch)
    assert len(pod["spec"]["containers"]) + len(pod["spec"].get("initContainers", [])) > 1


def test_a_pod_that_did_not_opt_in_is_allowed_untouched_and_counted_as_skipped(client: TestClient) -> None:
    before = _count("skipped")
    response = client.post("/mutate", json=_review({"metadata": {"name": "plain"},
                                                   "spec": {"containers": [{"name": "a", "image": "a"}]}}))
    assert response.status_code == 200
    assert response.json()["response"] == {"uid": "uid-1", "allowed": True,
                                           "auditAnnotations": {"skip-reason": "not-opted-in"}}
    assert _count("skipped") == before + 1


def test_a_malformed_annotation_is_a_denial_not_an_http_error(client: TestClient,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    pod = {"metadata": {"name": "bad", "annotations": {"data.autocrane.io/model": "models/v1",
                                                       "store.autocrane.io/location": "relative/path"}},
           "spec": {"containers": [{"name": "a", "image": "a"}]}}
    before = _count("denied")
    with caplog.at_level(logging.INFO, logger="webhook.server"):
        response = client.post("/mutate", json=_review(pod, uid="uid-bad"))
    assert response.status_code == 200
    answer = response.json()["response"]
    assert answer["allowed"] is False and "store.autocrane.io/location" in answer["status"]["message"]
    assert _count("denied") == before + 1
    line = next(r for r in caplog.records if r.getMessage() == "admission")
    assert (line.uid, line.pod, line.result) == ("uid-bad", "bad", "denied")  # type: ignore[attr-defined]


def test_every_admission_is_logged_with_its_fields(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="webhook.server"):
        client.post("/mutate", json=_review(uid="uid-log"))
    line = next(r for r in caplog.records if r.getMessage() == "admission")
    fields = line.__dict__
    assert fields["uid"] == "uid-log" and fields["namespace"] == "shop" and fields["pod"] == "web-"
    assert fields["operation"] == "CREATE" and fields["dry_run"] is False
    assert fields["result"] == "injected" and fields["duration_ms"] >= 0


def test_a_body_that_is_not_json_content_type_is_415(client: TestClient) -> None:
    before = _count("rejected")
    response = client.post("/mutate", content=json.dumps(_review()), headers={"content-type": "text/plain"})
    assert response.status_code == 415
    assert "application/json" in response.json()["error"]
    assert _count("rejected") == before + 1


def test_a_content_type_with_a_charset_is_accepted(client: TestClient) -> None:
    response = client.post("/mutate", content=json.dumps(_review()),
                           headers={"content-type": "application/json; charset=utf-8"})
    assert response.status_code == 200


def test_a_body_over_3_mib_is_413(client: TestClient) -> None:
    big = b'{"pad": "' + b"x" * (3 * 1024 * 1024) + b'"}'
    response = client.post("/mutate", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_a_chunked_body_over_3_mib_is_413_too(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"pad": "'
        for _ in range(4):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    response = client.post("/mutate", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


@pytest.mark.parametrize("body", [b"{not json", b"", b"\xff\xfe"])
def test_a_body_that_is_not_json_is_400_with_a_short_error(client: TestClient, body: bytes) -> None:
    response = client.post("/mutate", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"].startswith("body is not JSON")


@pytest.mark.parametrize("body", [
    [1, 2], {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "x"}},
    {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"},
    {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": ""}},
])
def test_json_that_is_not_an_admission_review_v1_is_400(client: TestClient, body: object) -> None:
    response = client.post("/mutate", json=body)
    assert response.status_code == 400
    assert response.json()["error"].startswith("not an AdmissionReview v1")
    assert "Traceback" not in response.text


def test_only_post_is_served_at_mutate(client: TestClient) -> None:
    assert client.get("/mutate").status_code == 405


def test_an_unexpected_exception_denies_with_code_500_and_logs_the_uid(
        client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def broken(review: object, settings: object) -> dict[str, Any]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(admission, "review", broken)
    before = _count("error")
    with caplog.at_level(logging.INFO, logger="webhook.server"):
        response = client.post("/mutate", json=_review(uid="uid-bug"))
    assert response.status_code == 200
    answer = response.json()
    assert answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == "uid-bug" and answer["response"]["allowed"] is False
    assert answer["response"]["status"]["code"] == 500 and "uid-bug" in answer["response"]["status"]["message"]
    assert "a bug" not in response.text  # internals stay in the log
    assert _count("error") == before + 1
    failure = next(r for r in caplog.records if r.levelno == logging.ERROR)
    assert failure.__dict__["uid"] == "uid-bug" and failure.exc_info is not None


def test_the_in_flight_gauge_returns_to_zero(client: TestClient) -> None:
    client.post("/mutate", json=_review())
    assert core_metrics.REGISTRY.get_sample_value("autocrane_webhook_admissions_in_flight_requests") == 0


# The health app


def test_livez_answers_while_the_process_runs() -> None:
    health = server.Health(tls.CertReloader())
    with TestClient(server.health_app(health)) as test_client:
        assert test_client.get("/livez").status_code == 200


def test_readyz_needs_a_certificate_and_the_config() -> None:
    health = server.Health(tls.CertReloader())
    with TestClient(server.health_app(health)) as test_client:
        response = test_client.get("/readyz")
        assert response.status_code == 503
        assert set(response.json()["problems"]) == {"no valid serving certificate loaded",
                                                    "injector config not loaded"}
        health.reloader.install(tlstools.new_leaf(tlstools.new_ca()))
        health.config_loaded = True
        assert test_client.get("/readyz").json() == {"ready": True}
        health.stopping = True
        assert test_client.get("/readyz").json()["problems"] == ["shutting down"]


def test_metrics_are_exposed_in_the_prometheus_text_format(client: TestClient) -> None:
    client.post("/mutate", json=_review())
    with TestClient(server.health_app(server.Health(tls.CertReloader()))) as test_client:
        response = test_client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    for name in ("autocrane_webhook_admissions_total", "autocrane_webhook_admission_duration_seconds_bucket",
                 "autocrane_webhook_admissions_in_flight_requests", "autocrane_webhook_cert_expiry_timestamp_seconds",
                 "process_cpu_seconds_total"):
        assert name in response.text
    assert "_created" not in response.text


# Over real TLS


def test_an_admission_round_trip_over_tls_on_a_real_server() -> None:
    asyncio.run(_round_trip())


async def _round_trip() -> None:
    ca = tlstools.new_ca()
    reloader = tls.CertReloader()
    reloader.install(tlstools.new_leaf(ca))
    health = server.Health(reloader, config_loaded=True)
    sites = [serving.Site("admission", server.admission_app(INJECTOR), "127.0.0.1", 0, reloader.context),
             serving.Site("health", server.health_app(health), "127.0.0.1", 0)]
    async with serving.Serving(sites) as running:
        admission_url = f"https://127.0.0.1:{running.port('admission')}"
        async with httpx.AsyncClient(verify=tlstools.client_context(ca), base_url=admission_url) as http:
            response = await http.post("/mutate", json=_review(uid="tls-1"))
            assert response.status_code == 200 and response.json()["response"]["patchType"] == "JSONPatch"
            assert response.extensions["network_stream"].get_extra_info("ssl_object").version() in (
                "TLSv1.2", "TLSv1.3")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.port('health')}") as http:
            assert (await http.get("/readyz")).status_code == 200
        with pytest.raises(httpx.TransportError):  # the admission port speaks only TLS
            async with httpx.AsyncClient(base_url=admission_url.replace("https", "http")) as http:
                await http.post("/mutate", json=_review())


# The command line


def test_the_command_needs_certificate_files_or_self_signed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        server.main([])
    assert exited.value.code == 2
    assert "--tls-cert-file and --tls-key-file, or --self-signed" in capsys.readouterr().err


def test_self_signed_mode_names_what_it_is_missing(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    with pytest.raises(SystemExit):
        server.main(["--self-signed", "--service", "hook"])
    assert "--self-signed needs --namespace, --webhook-config-name" in capsys.readouterr().err


def test_unreadable_certificate_files_exit_1_with_the_reason(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from autocrane import cli; cli.main()", "webhook", "--port", "0", "--health-port", "0",
         "--tls-cert-file", str(tmp_path / "missing.crt"), "--tls-key-file", str(tmp_path / "missing.key")],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert line["message"] == "cannot start the webhook" and "missing.crt" in line["error"]


@pytest.mark.parametrize("source", ["Models/ResNet 50", "../../etc", "models//resnet", "/models"])
def test_a_data_source_the_datadeployer_would_refuse_is_denied_naming_the_key(client: TestClient,
                                                                             source: str) -> None:
    # Issue 9 item 2: these were admitted and injected, then refused in the pod by the datadeployer.
    pod = {"metadata": {"generateName": "web-", "annotations": {"data.autocrane.io/m": source}},
           "spec": {"containers": [{"name": "app", "image": "shop/web:1"}]}}
    answer = client.post("/mutate", json=_review(pod)).json()["response"]
    assert answer["allowed"] is False and "patch" not in answer
    assert answer["status"]["code"] == 400
    assert answer["status"]["message"].startswith('annotation "data.autocrane.io/m": ')
    assert "expected a data-repository source: names of [a-z0-9-_.] joined by '/'" in answer["status"]["message"]
