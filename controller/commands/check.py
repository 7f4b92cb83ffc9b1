"""``autocrane check``: is this installation working, and if not, what to fix (as ``linkerd check``).

Reads what each check needs (this module is the I/O) and hands it to the pure verdicts of
:mod:`controller.commands.checks`. Exit 0: no fault; 1: a fault found; 2: the API server cannot
be reached (or refuses our credentials), so nothing could be checked.

What it reads, for release R in namespace N (the chart's names): the CRDs; the
MutatingWebhookConfiguration ``R-injector``, its caBundle checked against the certificate the
webhook serves (its TLS Secret's ``tls.crt``; in self-signed mode, its CA Secret's ``ca.crt``);
the EndpointSlices of Service ``R-injector``; the Lease ``R-controller``; the data repository's
``/readyz`` through the API server's service proxy (Service ``R-datarepository``, when the release
has one); the namespaces labelled ``autocrane-inject=enabled``; and a server-side dry-run create of
a pod in the first of them, which must come back injected.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import datetime as dt
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autocrane import errors, kube, untrusted
from controller.commands import checks

MWC = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
CRD = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
HOLD_WEBHOOK = "hold.autocrane.io"


async def _get(api: kube.Api, path: str, **query: Any) -> dict[str, Any] | None:
    """The object, or None when it does not exist."""
    try:
        return await api.request("GET", path, query=query or None)
    except errors.NotFound:
        return None


async def _secret_field(api: kube.Api, namespace: str, name: str, field: str) -> bytes | None:
    try:
        secret = await _get(api, f"/api/v1/namespaces/{namespace}/secrets/{name}")
    except errors.Forbidden:
        return None
    value = untrusted.mapping(untrusted.mapping(secret).get("data")).get(field)
    try:
        return base64.b64decode(value) if isinstance(value, str) else None
    except (binascii.Error, ValueError):
        return None


async def _serving(api: kube.Api, namespace: str, deployment: str) -> tuple[bytes | None, bytes | None]:
    """(the serving certificate, the self-signed CA) as the webhook's Deployment says where they are."""
    found = await _get(api, f"/apis/apps/v1/namespaces/{namespace}/deployments/{deployment}")
    spec = untrusted.mapping(untrusted.mapping(untrusted.mapping(found).get("spec")).get("template")).get("spec")
    spec = untrusted.mapping(spec)
    for volume in spec.get("volumes") or ():
        secret = untrusted.mapping(untrusted.mapping(volume).get("secret")).get("secretName")
        if untrusted.mapping(volume).get("name") == "tls" and isinstance(secret, str):
            return await _secret_field(api, namespace, secret, "tls.crt"), None
    for container in spec.get("containers") or ():
        for arg in untrusted.mapping(container).get("args") or ():
            if isinstance(arg, str) and arg.startswith("--ca-secret-name="):
                return None, await _secret_field(api, namespace, arg.partition("=")[2], "ca.crt")
    return None, None


async def _webhook(api: kube.Api, args: argparse.Namespace) -> tuple[list[checks.Result], bool]:
    """The webhook's registration, caBundle and endpoints; and whether it holds Deployments (app rollouts)."""
    name = f"{args.release}-injector"
    config = await _get(api, f"{MWC}/{name}")
    result, hook = checks.inject_webhook(config, name)
    results = [result]
    holds = any(untrusted.mapping(w).get("name") == HOLD_WEBHOOK for w in untrusted.mapping(config).get("webhooks")
                or ())
    if hook is None:
        return results, holds
    client = untrusted.mapping(hook.get("clientConfig"))
    service = untrusted.mapping(client.get("service"))
    svc, svc_ns = str(service.get("name", name)), str(service.get("namespace", args.namespace))
    try:
        bundle = base64.b64decode(str(client.get("caBundle")))
    except (binascii.Error, ValueError):
        bundle = b""
    serving, ca = await _serving(api, svc_ns, name)
    fix = (f"self-signed: the webhook merges its CA back within a pass (or restart it: kubectl rollout restart "
           f"deployment/{name} -n {svc_ns}); cert-manager: check cainjector; tls.mode=secret: set tls.caBundle "
           "to the CA of the Secret and helm upgrade")
    results.append(checks.ca_bundle(bundle, serving=serving, ca=ca, dns_name=f"{svc}.{svc_ns}.svc",
                                    now=dt.datetime.now(dt.UTC), fix=fix))
    slices = await api.request("GET", f"/apis/discovery.k8s.io/v1/namespaces/{svc_ns}/endpointslices",
                               query={"labelSelector": f"kubernetes.io/service-name={svc}"})
    results.append(checks.endpoints(svc, [untrusted.mapping(s) for s in slices.get("items") or ()]))
    return results, holds


async def _repository(api: kube.Api, args: argparse.Namespace) -> checks.Result:
    name = f"{args.release}-datarepository"
    service = await _get(api, f"/api/v1/namespaces/{args.namespace}/services/{name}")
    if service is None:
        return checks.repository(None, name)
    ports: list[Any] = list(untrusted.mapping(service.get("spec")).get("ports") or ()) or [{}]
    port = untrusted.mapping(ports[0]).get("port", 80)
    try:
        body = await api.request("GET", f"/api/v1/namespaces/{args.namespace}/services/http:{name}:{port}/proxy/readyz",
                                 timeout=args.timeout)
        return checks.repository((200, body), name)
    except errors.NoAnswer as exc:
        return checks.repository((0, {"message": str(exc)}), name)
    except errors.KubeError as exc:
        return checks.repository((exc.status, exc.body), name)


async def _injection(api: kube.Api, opted_in: list[dict[str, Any]]) -> checks.Result:
    names = sorted(str(untrusted.mapping(n.get("metadata")).get("name")) for n in opted_in)
    if not names:
        return checks.dry_run(None, None)
    try:
        pod = await api.request("POST", f"/api/v1/namespaces/{names[0]}/pods", query={"dryRun": "All"},
                                body=checks.dry_run_pod())
    except errors.KubeError as exc:
        return checks.dry_run(names[0], exc.message)
    return checks.dry_run(names[0], pod)


async def run_checks(api: kube.Api, args: argparse.Namespace) -> list[checks.Result]:
    webhook, holds = await _webhook(api, args)
    wanted = checks.CRDS if holds else checks.CRDS[:1]
    results = checks.crds({name: await _get(api, f"{CRD}/{name}") for name in wanted})
    results += webhook
    lease_name = f"{args.release}-controller"
    lease = await _get(api, f"/apis/coordination.k8s.io/v1/namespaces/{args.namespace}/leases/{lease_name}")
    results.append(checks.leader(lease, lease_name, time.time()))
    results.append(await _repository(api, args))
    opted_in = await api.request("GET", "/api/v1/namespaces", query={"labelSelector": f"{checks.INJECT_LABEL}=enabled"})
    found = [untrusted.mapping(n) for n in opted_in.get("items") or ()]
    results.append(checks.namespaces(found))
    results.append(await _injection(api, [dict(n) for n in found]))
    return results


def records(results: list[checks.Result]) -> list[Mapping[str, Any]]:
    return [{"check": r.check, "ok": r.ok, "message": r.message, "fix": r.fix} for r in results]


async def _run(args: argparse.Namespace) -> int:
    try:
        api = await kube.Kube.connect(args.kubeconfig)
    except (errors.AutocraneError, OSError, ValueError) as exc:
        print(f"autocrane check: cannot load the kubeconfig: {exc}")
        return 2
    try:
        try:
            await api.request("GET", "/version", timeout=args.timeout)
        except (errors.NoAnswer, errors.Unauthorized, errors.ServerError) as exc:
            print(f"autocrane check: cannot reach the API server: {exc}")
            return 2
        try:
            results = await run_checks(api, args)
        except errors.KubeError as exc:
            print(f"autocrane check: a read failed, so the checks are incomplete: {exc}")
            return 1
        if args.output == "json":
            print(json.dumps(records(results), indent=2))
        else:
            print(checks.report(results))
        code = checks.exit_code(results)
        if args.output != "json":
            print("\nall checks passed" if code == 0 else "\nfaults found: see FAIL above")
        return code
    finally:
        await api.close()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autocrane check", description=(
        "Check an AutoCrane installation: the CRDs, the webhook (registered, a caBundle that verifies its "
        "certificate, ready endpoints), a live controller leader, the data repository (every source fetched), "
        "the opted-in namespaces and a server-side dry-run injection. Says what is wrong and how to fix it. "
        "Exit 0: all good; 1: a fault found; 2: the API server cannot be reached."))
    p.add_argument("--kubeconfig", type=Path, default=None)
    p.add_argument("--namespace", "-n", default="autocrane-system", help="the release's namespace "
                   "(default autocrane-system)")
    p.add_argument("--release", default="autocrane", help="the Helm release name (default autocrane)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
    p.add_argument("--output", "-o", choices=("text", "json"), default="text")
    return p


def main(argv: list[str]) -> int:
    return asyncio.run(_run(parser().parse_args(argv)))
