"""The MutatingWebhookConfiguration that sends opted-in pods to the injector (pure: a dict out).

Three layers keep everything else away from the webhook, so it can never be the reason an unrelated
pod fails to start:

1. ``namespaceSelector``: only namespaces labelled ``autocrane-inject=enabled``, and never
   kube-system, kube-public, kube-node-lease or the injector's own namespace (so the injector can
   always restart, even if some pod there opts in by mistake);
2. ``matchConditions`` (CEL, GA in Kubernetes 1.30): only pods carrying an opt-in annotation,
   ``data.autocrane.io/<name>`` or ``watchdoghealthz.autocrane.io/min-ready-seconds``. Labels could be
   filtered by an objectSelector, annotations only by CEL;
3. rules: ``pods`` CREATE in ``v1`` only (an UPDATE may not add containers anyway).

``failurePolicy`` defaults to ``Fail``. With the layers above, the only pods that wait on the webhook
are pods that asked for AutoCrane, and for them a pod started without its data sidecar or readiness
gate is worse than a pod whose creation is retried by its controller until the injector answers
(Istio makes the same choice; Linkerd's HA mode too). ``Ignore`` is available for clusters that
prefer availability. Either way ``allowed: false`` answers deny: failurePolicy covers only a webhook
that cannot be reached or answers garbage.

``reinvocationPolicy: IfNeeded``: if a later webhook adds a container, we run again and mount the
data into it too; injection is idempotent, so a second run over an unchanged pod returns no patch.

A second webhook, ``hold.autocrane.io`` at ``/hold``, holds staged Deployments
(``webhook.holding``, docs/app-rollouts.md): ``apps/v1`` ``deployments`` CREATE and UPDATE, only
those labelled ``rollout.autocrane.io/group`` (an objectSelector), never ``deployments/scale``
(HPA is never in its way), in every namespace but the system ones and the injector's own. Its
``failurePolicy`` is ``Ignore``: with ``Fail`` a webhook that is down would refuse every update
of a group's Deployments, the controller's own rollbacks and releases included; with ``Ignore`` a
new template passes unheld while it is down and the controller pauses the stages that must wait
at its next pass (holding only ever delays; a stage's first pods may start early, which the gate
then judges like any other).
"""

from __future__ import annotations

import base64
from typing import Any

from autocrane import keys

NAME = "autocrane-injector"
WEBHOOK_NAME = "inject.autocrane.io"
NAMESPACE_LABEL = "autocrane-inject"
NAMESPACE_LABEL_VALUE = "enabled"
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
PATH = "/mutate"
HOLD_WEBHOOK_NAME = "hold.autocrane.io"
HOLD_PATH = "/hold"
HOLD_TIMEOUT_SECONDS = 5
FAILURE_POLICIES = ("Fail", "Ignore")

OPT_IN_CEL = (
    "has(object.metadata.annotations) && object.metadata.annotations.exists(k, "
    f"k.startsWith('{keys.DATA_PREFIX}') || k == '{keys.MIN_READY_SECONDS}')"
)
"""Only pods with an opt-in annotation are sent (mirrors ``webhook.options.opts_in``)."""


def mutating_webhook_configuration(
    *,
    namespace: str,
    ca_bundle: bytes | str | None,
    service: str | None = "autocrane-injector",
    service_port: int = 443,
    url: str | None = None,
    failure_policy: str = "Fail",
    timeout_seconds: int = 5,
    name: str = NAME,
    hold_failure_policy: str = "Ignore",
    app_rollouts: bool = True,
) -> dict[str, Any]:
    """The MutatingWebhookConfiguration for an injector running in ``namespace``.

    ``ca_bundle`` is the PEM (bytes or text) of the CA(s) that signed the serving certificate (base64-encoded here);
    ``None`` leaves ``caBundle`` out, for cert-manager's CA injector to fill. The client config is
    ``url`` when given (e.g. ``https://127.0.0.1:PORT/mutate`` in tests), else the Service ``service``
    in ``namespace`` at ``service_port``, path ``/mutate``; the hold webhook's is the same with the path
    ``/hold``. ``hold_failure_policy`` is the hold webhook's (see the module docstring); without
    ``app_rollouts`` there is no hold webhook.
    """
    for what, policy in (("failure_policy", failure_policy), ("hold_failure_policy", hold_failure_policy)):
        if policy not in FAILURE_POLICIES:
            raise ValueError(f"{what} must be one of {', '.join(FAILURE_POLICIES)}, not {policy!r}")
    if not 1 <= timeout_seconds <= 30:
        raise ValueError(f"timeout_seconds must be from 1 to 30 (the API server's bounds), not {timeout_seconds}")
    def client_config(path: str) -> dict[str, Any]:
        config: dict[str, Any]
        if url is not None:
            config = {"url": url.removesuffix(PATH) + path}
        elif service is not None:
            config = {"service": {"namespace": namespace, "name": service, "path": path, "port": service_port}}
        else:
            raise ValueError("either url or service is needed")
        if ca_bundle is not None:
            pem = ca_bundle.encode() if isinstance(ca_bundle, str) else ca_bundle
            config["caBundle"] = base64.b64encode(pem).decode()
        return config

    excluded = {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                "values": sorted({*SYSTEM_NAMESPACES, namespace})}
    webhook = {
        "name": WEBHOOK_NAME,
        "admissionReviewVersions": ["v1"],
        "clientConfig": client_config(PATH),
        "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"],
                   "scope": "Namespaced"}],
        "namespaceSelector": {"matchExpressions": [
            {"key": NAMESPACE_LABEL, "operator": "In", "values": [NAMESPACE_LABEL_VALUE]}, excluded,
        ]},
        "matchConditions": [{"name": "autocrane-opt-in", "expression": OPT_IN_CEL}],
        "matchPolicy": "Equivalent",
        "sideEffects": "None",
        "timeoutSeconds": timeout_seconds,
        "failurePolicy": failure_policy,
        "reinvocationPolicy": "IfNeeded",
    }
    hold = {
        "name": HOLD_WEBHOOK_NAME,
        "admissionReviewVersions": ["v1"],
        "clientConfig": client_config(HOLD_PATH),
        "rules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                   "resources": ["deployments"], "scope": "Namespaced"}],
        "namespaceSelector": {"matchExpressions": [excluded]},
        "objectSelector": {"matchExpressions": [{"key": keys.ROLLOUT_GROUP_LABEL, "operator": "Exists"}]},
        "matchPolicy": "Equivalent",
        "sideEffects": "None",
        "timeoutSeconds": HOLD_TIMEOUT_SECONDS,
        "failurePolicy": hold_failure_policy,
        "reinvocationPolicy": "Never",
    }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "autocrane",
                                              "app.kubernetes.io/component": "injector"}},
        "webhooks": [webhook, hold] if app_rollouts else [webhook],
    }
