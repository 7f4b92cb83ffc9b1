"""``autocrane webhook``: the HTTP side of the injector (no pod logic here; see webhook/admission.py).

Two apps, served together by autocrane.serving:

- **admission** (TLS, ``--port``): ``POST /mutate`` takes an AdmissionReview v1 and answers one.
  ``POST /hold`` holds staged Deployments (``webhook.holding``): it reads the group's
  ``AppRollout`` through the API (at most :data:`HOLD_READ_TIMEOUT` seconds; unreadable, or no
  credentials: the fail-safe decision) and always allows, pausing when the Deployment is held.
  The body must be ``application/json`` (else 415) and at most 3 MiB (else 413; the API server
  caps objects at 3 MiB, so a larger review is not from it). A body that is not JSON, or not an
  AdmissionReview v1 (``webhook.admission.MalformedReview``), gets 400 with a one-line JSON
  error: the caller is not the API server or is broken, and an AdmissionReview reply would have
  no uid to answer to.
- **health** (plain HTTP, ``--health-port``): ``/livez`` (the process answers), ``/readyz``
  (a valid serving certificate and the injector config are loaded, and we are not shutting
  down), ``/metrics`` (Prometheus). Kept off the TLS port so probes and scrapes need no certs.

An unexpected exception while admitting (a bug, never bad input: malformed annotations are
denials computed by admission.py) is logged with the request's uid and answered with
``allowed: false``, ``status.code: 500``. We deny rather than allow the pod uninjected: a pod
reaches us only when it carries AutoCrane annotations (the registration's matchConditions), and
an opted-in pod started without its datadeployer would run without its data, or without its
readiness gate, which is exactly the failure opting in is meant to prevent. The deny matches
``failurePolicy: Fail`` for a webhook that is down, and the workload's controller retries the
pod. The reply is still a well-formed AdmissionReview so the API server shows the message.

Every admission is logged as one line with uid, namespace, pod (name or generateName),
operation, dry_run, result (injected/skipped/denied/error), reason and duration_ms; a denial adds
its message (``denial``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from autocrane import approllouts, bodies, errors, kube, logs, malloc, serving
from autocrane import metrics as core_metrics
from webhook import admission, holding, metrics, registration, selfsigned, settings, tls

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 3 * 1024 * 1024
"""The API server's own limit on an object; a review around one pod is far smaller."""
HOLD_READ_TIMEOUT = 2.0
"""Seconds /hold waits for the AppRollout: well inside the hold webhook's 5 s timeout."""


def _failure_review(uid: str) -> bodies.AdmissionReview:
    return admission.answer(uid, {"allowed": False, "status": {
        "code": 500, "reason": "InternalError",
        "message": f"autocrane webhook: internal error while injecting (request uid {uid}; see the webhook's "
                   "logs); the pod was not admitted"}})


def outcome(review_out: bodies.AdmissionReview) -> tuple[str, str]:
    """(result, reason) of an AdmissionReview response, for metrics and the log line."""
    response = review_out.get("response") or {}
    decision = admission.outcome(review_out)
    if decision == "denied":
        status = response.get("status") or {}
        return "denied", str(status.get("reason") or f"code-{status.get('code', 403)}")
    if decision == "injected":
        return "injected", "injected"
    # A skipped pod's reason is in ``auditAnnotations`` (it lands in the API server's audit log too).
    skipped = (response.get("auditAnnotations") or {}).get(admission.SKIP_REASON_AUDIT_KEY)
    return "skipped", str(skipped or "unknown")


def _describe(review_in: object) -> dict[str, Any]:
    """The log line's fields, read before the review is validated: strings only, each cut to what
    Kubernetes allows (a 1 MB or nested "namespace" is not repeated in the log)."""
    request = review_in.get("request") if isinstance(review_in, dict) else None
    request = request if isinstance(request, dict) else {}
    obj = request.get("object")
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    metadata = metadata if isinstance(metadata, dict) else {}
    return {"uid": _field(request, "uid"), "namespace": _field(request, "namespace"),
            "pod": _field(request, "name") or _field(metadata, "name") or _field(metadata, "generateName"),
            "operation": _field(request, "operation"), "dry_run": request.get("dryRun") is True}


def _field(parent: dict[str, Any], key: str, limit: int = 253) -> str:
    value = parent.get(key)
    return value[:limit] if isinstance(value, str) else ""


class Mutate:
    """``POST /mutate`` as a plain ASGI app.

    Plain ASGI rather than a Starlette ``Request``/``JSONResponse`` endpoint: this is the hot path
    the API server waits on, and the wrappers cost more than the header lookups they replace
    (see bench/README.md). Routing, 404 and 405 still come from Starlette.
    """

    def __init__(self, injector: settings.InjectorSettings) -> None:
        self.injector = injector
        self._results = {result: metrics.ADMISSIONS.labels(result) for result in metrics.RESULTS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        metrics.IN_FLIGHT.inc()
        try:
            status, document = await self._handle(scope, receive, started)
            body = orjson.dumps(document)
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
        finally:
            metrics.IN_FLIGHT.dec()
            metrics.ADMISSION_DURATION.observe(time.perf_counter() - started)

    def _reject(self, status: int, message: str) -> tuple[int, dict[str, Any]]:
        self._results["rejected"].inc()
        return status, {"error": message}

    async def _handle(self, scope: Scope, receive: Receive, started: float
                      ) -> tuple[int, bodies.AdmissionReview | dict[str, Any]]:
        content_type, declared = b"", None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                declared = value
        if content_type.split(b";")[0].strip().lower() != b"application/json":
            return self._reject(415, "expected Content-Type: application/json (an AdmissionReview v1)")
        body = await _read_body(receive, declared)
        if body is None:
            return self._reject(413, f"body larger than {MAX_BODY_BYTES} bytes")
        try:
            review_in = orjson.loads(body)
        except orjson.JSONDecodeError as exc:  # also invalid UTF-8
            return self._reject(400, f"body is not JSON: {exc}")
        fields = _describe(review_in)
        try:
            review_out = admission.review(review_in, self.injector)
        except admission.MalformedReview as exc:
            return self._reject(400, f"not an AdmissionReview v1: {exc}")
        except Exception:
            log.exception("admission failed unexpectedly; denying the pod", extra=fields)
            review_out = _failure_review(fields["uid"])
            result, reason = "error", "internal-error"
        else:
            result, reason = outcome(review_out)
        self._results[result].inc()
        if result == "skipped":
            metrics.SKIPS.labels(reason).inc()
        elif result == "denied":
            fields["denial"] = ((review_out.get("response") or {}).get("status") or {}).get("message", "")
        log.info("admission", extra={**fields, "result": result, "reason": reason,
                                     "duration_ms": round((time.perf_counter() - started) * 1000, 3)})
        return 200, review_out


async def _read_body(receive: Receive, declared: bytes | None) -> bytes | None:
    """The body, or None once it exceeds MAX_BODY_BYTES (the rest is not read)."""
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def read_status(api: kube.Api | None, namespace: str, group: str) -> approllouts.Status | None:
    """The group's AppRollout status; an empty one when there is none yet; None when it cannot be read."""
    if api is None:
        return None
    try:
        found = await api.request("GET", approllouts.path(namespace, group), timeout=HOLD_READ_TIMEOUT)
    except errors.NotFound:
        return approllouts.Status()
    except errors.KubeError as exc:
        log.warning("AppRollout not readable; holding fail-safe", extra={"namespace": namespace, "group": group,
                                                                         "error": str(exc)[:300]})
        return None
    status = found.get("status")
    return approllouts.status_from_json(status if isinstance(status, dict) else None)


class Hold:
    """``POST /hold``: hold a staged Deployment whose new template is not released yet."""

    def __init__(self, api: kube.Api | None) -> None:
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request = Request(scope, receive)
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            response: Response = JSONResponse({"error": "expected Content-Type: application/json"}, 415)
            return await response(scope, receive, send)
        body = await _read_body(receive, request.headers.get("content-length", "").encode() or None)
        if body is None:
            return await JSONResponse({"error": f"body larger than {MAX_BODY_BYTES} bytes"}, 413)(scope, receive, send)
        try:
            parsed = holding.parse(orjson.loads(body))
        except (orjson.JSONDecodeError, admission.MalformedReview) as exc:
            return await JSONResponse({"error": f"not an AdmissionReview v1 of a Deployment: {exc}"}, 400)(
                scope, receive, send)
        status = None if parsed.group is None or parsed.operation != "UPDATE" else await read_status(
            self.api, parsed.namespace, parsed.group)
        decision = holding.decide_request(parsed, status)
        metrics.HOLDS.labels(decision.verdict).inc()
        log.info("hold", extra={"uid": parsed.uid, "namespace": parsed.namespace, "deployment": parsed.name,
                                "operation": parsed.operation, "group": parsed.group, "result": decision.verdict,
                                "reason": decision.reason, "patched": bool(decision.patch),
                                "duration_ms": round((time.perf_counter() - started) * 1000, 3)})
        await Response(orjson.dumps(holding.answer(parsed, decision)), media_type="application/json")(
            scope, receive, send)


def admission_app(injector: settings.InjectorSettings, api: kube.Api | None = None) -> Starlette:
    return Starlette(routes=[Route("/mutate", Mutate(injector), methods=["POST"]),
                             Route("/hold", Hold(api), methods=["POST"])])


@dataclass
class Health:
    """What /readyz reports on."""

    reloader: tls.CertReloader
    config_loaded: bool = False
    stopping: bool = False

    def problems(self) -> list[str]:
        found = []
        if not self.reloader.ready():
            found.append("no valid serving certificate loaded")
        if not self.config_loaded:
            found.append("injector config not loaded")
        if self.stopping:
            found.append("shutting down")
        return found


def health_app(health: Health) -> Starlette:
    async def readyz(_: Request) -> Response:
        problems = health.problems()
        if problems:
            return JSONResponse({"ready": False, "problems": problems}, status_code=503)
        return JSONResponse({"ready": True})

    return Starlette(routes=[serving.livez_route(), Route("/readyz", readyz), core_metrics.route()])


# ---------------------------------------------------------------------------------------------
# The command.


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autocrane webhook",
        description="Run the mutating admission webhook: AdmissionReview v1 at POST /mutate over TLS; "
        "/livez, /readyz and /metrics over plain HTTP on the health port. The certificate files are "
        "re-read when they change (cert-manager rotation) without a restart.")
    parser.add_argument("--port", type=int, default=8443, help="TLS port of /mutate (default %(default)s)")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default %(default)s)")
    parser.add_argument("--health-port", type=int, default=8080,
                        help="plain-HTTP port of /livez, /readyz, /metrics (default %(default)s)")
    parser.add_argument("--tls-cert-file", type=Path, help="PEM certificate (chain); watched for changes")
    parser.add_argument("--tls-key-file", type=Path, help="PEM private key of the certificate")
    parser.add_argument("--cert-reload-interval", type=float, default=5.0,
                        help="seconds between checks of the certificate files (default %(default)s)")
    parser.add_argument("--config", type=Path, help="injector config YAML (a mounted ConfigMap)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one injector setting (repeatable); also from the environment as "
                        "AUTOCRANE_INJECTOR_<KEY>")
    self_signed = parser.add_argument_group("self-signed mode (instead of --tls-cert-file/--tls-key-file)")
    self_signed.add_argument("--self-signed", action="store_true",
                             help="generate a CA (kept in a Secret) and serving certificates; keep the "
                             "MutatingWebhookConfiguration's caBundle current")
    self_signed.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE"),
                             help="namespace of the webhook's Service and CA Secret (default $POD_NAMESPACE)")
    self_signed.add_argument("--service", help="the webhook's Service name (its DNS names go into the certificate)")
    self_signed.add_argument("--webhook-config-name", help="the MutatingWebhookConfiguration to keep the caBundle of")
    self_signed.add_argument("--ca-secret-name", default="autocrane-webhook-ca", help="default %(default)s")
    self_signed.add_argument("--ca-secret-owner-deployment", metavar="NAME",
                             help="the Deployment (in --namespace) that owns the CA Secret, so deleting it "
                                  "(helm uninstall) deletes the Secret; needs get on that Deployment")
    self_signed.add_argument("--tls-san", action="append", default=[], metavar="NAME",
                             help="another DNS name or IP address for the certificate (repeatable)")
    self_signed.add_argument("--kubeconfig", type=Path,
                             help="kubeconfig for the API calls (the CA Secret, the registration, /hold's "
                             "AppRollout reads; default: in-cluster, then $KUBECONFIG)")
    register = parser.add_argument_group(
        "self-registration (running outside the cluster, e.g. `python -m devcluster up`)")
    register.add_argument("--register-url", metavar="URL",
                          help="create the MutatingWebhookConfiguration --webhook-config-name with this URL "
                          "as its client config while the webhook runs, and delete it on exit")
    register.add_argument("--register-ca-file", type=Path, metavar="F",
                          help="PEM CA that signed the serving certificate, for the registration's caBundle")
    shutdown = parser.add_argument_group("shutdown")
    shutdown.add_argument("--drain-delay", type=float, default=3.0,
                          help="seconds to keep serving after SIGTERM, with /readyz failing, while the "
                          "endpoint removal reaches the API server (default %(default)s)")
    shutdown.add_argument("--graceful-timeout", type=float, default=20.0,
                          help="seconds in-flight requests get to finish (default %(default)s)")
    logs.add_arguments(parser)
    return parser


def _overrides(pairs: list[str]) -> dict[str, str]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise errors.ConfigError(f"--set {pair!r}: expected KEY=VALUE")
        result[key.strip()] = value
    return result


async def serve(arguments: argparse.Namespace, injector: settings.InjectorSettings,
                on_started: Callable[[serving.Serving], None] | None = None) -> None:
    """Serve until SIGTERM/SIGINT (``on_started`` lets tests learn the ports)."""
    background: list[asyncio.Task[None]] = []
    client: kube.Kube | None = None
    if arguments.self_signed:
        reloader = tls.CertReloader()
        client = await kube.Kube.connect(arguments.kubeconfig)
        signer = selfsigned.SelfSigned(client, reloader, selfsigned.SelfSignedSettings(
            namespace=arguments.namespace, service=arguments.service,
            webhook_config_name=arguments.webhook_config_name, secret_name=arguments.ca_secret_name,
            extra_names=tuple(arguments.tls_san), owner_deployment=arguments.ca_secret_owner_deployment))
        background.append(asyncio.create_task(signer.run(), name="self-signed"))
    else:
        reloader = tls.CertReloader(arguments.tls_cert_file, arguments.tls_key_file,
                                    interval=arguments.cert_reload_interval)
        reloader.load_files()
        background.append(asyncio.create_task(reloader.watch(), name="cert-reloader"))
    if arguments.register_url:
        client = client or await kube.Kube.connect(arguments.kubeconfig)
        await client.apply_mutating_webhook_configuration(registration.mutating_webhook_configuration(
            namespace=arguments.namespace or "default", ca_bundle=arguments.register_ca_file.read_bytes(),
            url=arguments.register_url, name=arguments.webhook_config_name or registration.NAME))
        log.info("registered", extra={"url": arguments.register_url})
    if client is None:
        try:  # /hold reads AppRollouts; without credentials it holds fail-safe
            client = await kube.Kube.connect(arguments.kubeconfig)
        except errors.ConfigError as exc:
            log.warning("no API credentials: /hold cannot read AppRollouts and holds every new template",
                        extra={"error": str(exc)})
    health = Health(reloader, config_loaded=True)
    server = serving.Serving([
        serving.Site("admission", admission_app(injector, client), arguments.host, arguments.port,
                     reloader.context),
        serving.Site("health", health_app(health), arguments.host, arguments.health_port),
    ], graceful_timeout=arguments.graceful_timeout, drain_delay=arguments.drain_delay)
    server.on_stopping.append(lambda: setattr(health, "stopping", True))
    try:
        await serving.run(server)
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if client is not None and arguments.register_url:
            await client.delete_mutating_webhook_configuration(arguments.webhook_config_name or registration.NAME)
        if client is not None:
            await client.close()


def main(argv: list[str]) -> int:
    parser = _parser()
    arguments = parser.parse_args(argv)
    if arguments.self_signed:
        missing = [flag for flag, value in (("--namespace", arguments.namespace), ("--service", arguments.service),
                                            ("--webhook-config-name", arguments.webhook_config_name)) if not value]
        if missing:
            parser.error(f"--self-signed needs {', '.join(missing)}")
        if arguments.tls_cert_file or arguments.tls_key_file:
            parser.error("--self-signed generates the certificate: drop --tls-cert-file/--tls-key-file")
    elif not (arguments.tls_cert_file and arguments.tls_key_file):
        parser.error("give --tls-cert-file and --tls-key-file, or --self-signed")
    if arguments.register_url and not arguments.register_ca_file:
        parser.error("--register-url needs --register-ca-file (the CA for the caBundle)")
    logs.setup_from_arguments(arguments)
    # A review carries up to MAX_BODY_BYTES: give its memory back once it is answered.
    malloc.return_large_blocks()
    try:
        # Precedence: flags over environment over the config file over defaults.
        overrides = {**settings.environment_overrides(os.environ), **_overrides(arguments.overrides)}
        injector = settings.load(arguments.config, overrides)
        asyncio.run(serve(arguments, injector))
    except (errors.ConfigError, tls.CertError, errors.KubeError, OSError) as exc:
        log.error("cannot start the webhook", extra={"error": str(exc)})
        return 1
    return 0
