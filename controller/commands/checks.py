"""The verdicts of ``autocrane check``: each a pure function from observed objects to a :class:`Result`.

``controller.commands.check`` reads the objects (the I/O); here each check says whether what it
saw is right, and when it is not, what is wrong and how to fix it. Nothing here talks to the API,
so every fault a user can meet is unit-tested (tests/controller/commands/test_checks.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtensionOID

from autocrane import keys, untrusted

CRDS = ("datarollouts.autocrane.io", "approllouts.autocrane.io")
INJECT_WEBHOOK = "inject.autocrane.io"
INJECT_LABEL = "autocrane-inject"
LEASE_GRACE = 5.0
"""Seconds past ``renewTime + leaseDurationSeconds`` before a Lease counts as stale (clock skew)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    check: str
    ok: bool | None
    """True: good; False: a fault; None: skipped or a note (neither good nor a fault)."""
    message: str
    fix: str = ""


def _meta(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return untrusted.mapping(untrusted.mapping(obj).get("metadata"))


def crds(found: Mapping[str, Mapping[str, Any] | None]) -> list[Result]:
    """Each CRD exists and is Established."""
    results = []
    for name, crd in found.items():
        if crd is None:
            results.append(Result("crd", False, f"CRD {name} is not installed",
                                  "install the chart with crds.install=true (or kubectl apply its files/crds/)"))
            continue
        conditions = untrusted.mapping(crd.get("status")).get("conditions") or ()
        established = any(isinstance(c, Mapping) and c.get("type") == "Established" and c.get("status") == "True"
                          for c in conditions)
        results.append(Result("crd", True, f"CRD {name} is installed") if established else
                       Result("crd", False, f"CRD {name} exists but is not Established",
                              f"kubectl describe crd {name} (its conditions say why)"))
    return results


def inject_webhook(config: Mapping[str, Any] | None, name: str) -> tuple[Result, Mapping[str, Any] | None]:
    """The MutatingWebhookConfiguration has the inject webhook with a caBundle; (result, the webhook)."""
    if config is None:
        return Result("webhook", False, f"MutatingWebhookConfiguration {name} is missing",
                      "helm upgrade --install the release (the chart makes it)"), None
    hook = next((w for w in config.get("webhooks") or () if isinstance(w, Mapping)
                 and w.get("name") == INJECT_WEBHOOK), None)
    if hook is None:
        return Result("webhook", False, f"MutatingWebhookConfiguration {name} has no webhook {INJECT_WEBHOOK}",
                      "helm upgrade the release to restore it"), None
    if not untrusted.mapping(hook.get("clientConfig")).get("caBundle"):
        return Result("webhook", False, f"webhook {INJECT_WEBHOOK} of {name} has no caBundle: the API server "
                      "cannot trust it", "self-signed: the webhook writes it (are its pods running?); cert-manager: "
                      "cainjector writes it (is cert-manager running?)"), hook
    return Result("webhook", True, f"MutatingWebhookConfiguration {name} registers {INJECT_WEBHOOK}"), hook


def _certs(pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        return []


def _issued_by(cert: x509.Certificate, authorities: Sequence[x509.Certificate]) -> bool:
    for authority in authorities:
        try:
            cert.verify_directly_issued_by(authority)
            return True
        except (ValueError, TypeError, InvalidSignature):
            continue
    return False


def ca_bundle(bundle: bytes, *, serving: bytes | None, ca: bytes | None, dns_name: str, now: dt.datetime,
              fix: str) -> Result:
    """The caBundle parses, and verifies the serving certificate (or holds the self-signed mode's CA).

    ``serving``: the PEM the webhook serves (its TLS Secret's ``tls.crt``), else None; ``ca``: the
    self-signed mode's CA (its Secret's ``ca.crt``), else None. ``dns_name``: the Service's name the
    API server calls (``NAME.NAMESPACE.svc``), which the certificate must carry.
    """
    authorities = _certs(bundle)
    if not authorities:
        return Result("cabundle", False, "the webhook's caBundle holds no PEM certificate", fix)
    live = [a for a in authorities if a.not_valid_after_utc > now]
    if not live:
        return Result("cabundle", False, "every certificate of the webhook's caBundle has expired", fix)
    if serving is not None:
        chain = _certs(serving)
        if not chain:
            return Result("cabundle", False, "the webhook's TLS Secret holds no PEM certificate in tls.crt",
                          "renew the webhook's certificate (cert-manager: cmctl renew)")
        leaf = chain[0]
        if not _issued_by(leaf, live) and not any(_issued_by(c, live) for c in chain[1:]):
            return Result("cabundle", False, f"the caBundle does not verify the certificate the webhook serves "
                          f"(issuer {leaf.issuer.rfc4514_string()}): the API server refuses to call it", fix)
        try:
            names = leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
            dns = names.get_values_for_type(x509.DNSName)  # type: ignore[attr-defined]
        except x509.ExtensionNotFound:
            dns = []
        if dns_name not in dns:
            return Result("cabundle", False, f"the webhook's certificate is not for {dns_name} (it names "
                          f"{', '.join(dns) or 'no DNS name'})", "reissue it for the Service's DNS name")
        if leaf.not_valid_after_utc <= now:
            return Result("cabundle", False, "the webhook's serving certificate has expired",
                          "renew it (cert-manager: cmctl renew; tls.mode=secret: replace the Secret)")
        return Result("cabundle", True, "the caBundle verifies the webhook's serving certificate")
    if ca is not None:
        own = _certs(ca)
        wanted = {c.fingerprint(c.signature_hash_algorithm) for c in own if c.signature_hash_algorithm}
        held = {c.fingerprint(c.signature_hash_algorithm) for c in live if c.signature_hash_algorithm}
        if not own or not wanted & held:
            return Result("cabundle", False, "the caBundle does not hold the webhook's CA (self-signed mode): "
                          "the API server refuses to call it", fix)
        return Result("cabundle", True, "the caBundle holds the webhook's CA")
    return Result("cabundle", None, f"the caBundle parses ({len(live)} certificates); the serving certificate "
                  "could not be read to verify it (no rights on the webhook's Secret?)")


def endpoints(service: str, slices: Iterable[Mapping[str, Any]]) -> Result:
    """The Service has at least one ready endpoint (from its EndpointSlices)."""
    ready = [address for one in slices for e in one.get("endpoints") or () if isinstance(e, Mapping)
             and untrusted.mapping(e.get("conditions")).get("ready") is not False
             for address in e.get("addresses") or ()]
    if not ready:
        return Result("endpoints", False, f"Service {service} has no ready endpoints: no webhook pod is ready",
                      f"kubectl get pods -l app.kubernetes.io/component=injector (scaled to 0? crashing? "
                      f"kubectl describe deployment {service})")
    return Result("endpoints", True, f"Service {service} has {len(ready)} ready endpoints")


def _time(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def leader(lease: Mapping[str, Any] | None, name: str, now: float) -> Result:
    """The Lease has a holder whose renewal is within its duration."""
    fix = (f"kubectl get pods -l app.kubernetes.io/component=controller (scaled to 0? crash-looping? "
           f"kubectl logs deployment/{name})")
    if lease is None:
        return Result("leader", False, f"Lease {name} is missing: no controller has ever led", fix)
    spec = untrusted.mapping(lease.get("spec"))
    holder = spec.get("holderIdentity")
    renewed = _time(spec.get("renewTime"))
    duration = spec.get("leaseDurationSeconds")
    if not holder or renewed is None or not isinstance(duration, int):
        return Result("leader", False, f"no controller holds Lease {name}", fix)
    age = now - renewed
    if age > duration + LEASE_GRACE:
        return Result("leader", False, f"the controller leader {holder} last renewed Lease {name} {age:.0f}s ago "
                      f"(its lease lasts {duration}s): no live leader", fix)
    return Result("leader", True, f"controller leader {holder} renewed its Lease {age:.0f}s ago")


def repository(answer: tuple[int, Mapping[str, Any]] | None, name: str) -> Result:
    """The data repository's ``/readyz`` (HTTP status, JSON body) through the service proxy; None: no repository.

    A body with ``ready`` is the repository's own; any other is the API server's (no endpoints, an
    unreachable pod).
    """
    if answer is None:
        return Result("repository", None, "the release has no data repository (dataRepository.enabled=false): "
                      "not checked")
    status, body = answer
    if "ready" not in body:
        return Result("repository", False, f"data repository {name} cannot be reached (HTTP {status}: "
                      f"{str(body.get('message') or 'no answer')[:200]})",
                      "kubectl get pods -l app.kubernetes.io/component=datarepository (scaled to 0? not ready?)")
    if body.get("ready") is True:
        sources = sorted(untrusted.mapping(body.get("sources")))
        return Result("repository", True, f"data repository {name} is ready, every source fetched "
                      f"({', '.join(sources) or 'no sources'})")
    unready = ", ".join(str(n) for n in body.get("unready") or ()) or "?"
    return Result("repository", False, f"data repository {name} is not ready: sources without a version: {unready}",
                  f"kubectl logs statefulset/{name} (is the source reachable? its polls say why)")


def namespaces(found: Iterable[Mapping[str, Any]]) -> Result:
    names = sorted(str(_meta(n).get("name")) for n in found)
    if not names:
        return Result("namespaces", None, f"no namespace is opted in: label one with "
                      f"kubectl label namespace NAME {INJECT_LABEL}=enabled")
    return Result("namespaces", True, f"opted-in namespaces: {', '.join(names)}")


def dry_run_pod() -> dict[str, Any]:
    """The pod a server-side dry run creates: opted in, restricted, nothing that needs a real node."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "autocrane-check-", "annotations": {keys.MIN_READY_SECONDS: "0"}},
            "spec": {"automountServiceAccountToken": False,
                     "securityContext": {"runAsNonRoot": True, "runAsUser": 65532,
                                         "seccompProfile": {"type": "RuntimeDefault"}},
                     "containers": [{"name": "check", "image": "autocrane.invalid/check:0",
                                     "securityContext": {"allowPrivilegeEscalation": False,
                                                         "capabilities": {"drop": ["ALL"]}}}]}}


def dry_run(namespace: str | None, answer: Mapping[str, Any] | str | None) -> Result:
    """The dry-run create came back injected; ``answer``: the pod, or the API server's refusal."""
    if namespace is None:
        return Result("injection", None, "no opted-in namespace to try a dry-run injection in")
    if isinstance(answer, str):
        fix = ("the caBundle or the webhook's certificate is wrong (see above)" if "x509" in answer or
               "certificate" in answer else "check the webhook's pods and logs")
        return Result("injection", False, f"a dry-run pod in {namespace} was refused: {answer[:400]}", fix)
    annotations = untrusted.mapping(_meta(answer).get("annotations"))
    if keys.INJECTOR_STATUS not in annotations:
        return Result("injection", False, f"a dry-run pod in {namespace} came back without injection: the API "
                      "server did not reach the webhook (failurePolicy Ignore hides why)",
                      "see the checks above: endpoints, caBundle; kubectl logs of the webhook")
    return Result("injection", True, f"a dry-run pod in {namespace} was injected")


def exit_code(results: Iterable[Result]) -> int:
    """0 when no check found a fault, else 1 (2, the API unreachable, is decided by the caller)."""
    return 1 if any(r.ok is False for r in results) else 0


def report(results: Iterable[Result]) -> str:
    lines = []
    for one in results:
        mark = {True: "ok  ", False: "FAIL", None: "note"}[one.ok]
        lines.append(f"[{mark}] {one.check}: {one.message}")
        if one.ok is False and one.fix:
            lines.append(f"       fix: {one.fix}")
    return "\n".join(lines)
