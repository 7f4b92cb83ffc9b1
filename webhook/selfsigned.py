"""Self-signed mode: a CA kept in a Secret, a serving certificate per replica, a current caBundle.

For clusters without cert-manager. Each pass (:meth:`SelfSigned.step`, every ``interval``):

1. **CA.** Read the Secret (``ca.crt``/``ca.key``). If it is missing, generate an ECDSA P-256 CA
   and *create* the Secret; when two replicas race, the loser gets AlreadyExists and adopts the
   winner's CA, so all replicas agree without leader election. At 2/3 of the CA's life a new CA
   replaces it (an update conditional on resourceVersion: again, one replica wins, the others
   read its result).
2. **caBundle.** Merge the CA into ``clientConfig.caBundle`` of every webhook of the
   MutatingWebhookConfiguration that points at our Service (:func:`ca_bundle_patch`): old CAs
   stay until they expire, so a leaf signed by the previous CA stays trusted while replicas
   switch. The patch is sent only when a bundle differs, and starts with a ``test`` of
   resourceVersion so a concurrent change (a ``helm upgrade`` reordering webhooks) makes it
   fail and retry rather than write the wrong index. This runs before step 3, so the API server
   trusts a new CA before any replica serves a certificate signed by it.
3. **Serving certificate.** Issue a new one in memory when there is none, when 2/3 of its life
   has passed, when the CA changed, or when the wanted names changed, and install it into the
   live SSLContext (webhook/tls.py).

With ``owner_deployment`` (the chart passes the webhook's own Deployment) the CA Secret carries an
ownerReference to that Deployment, set when it is created and added to a Secret made before, so
``helm uninstall`` (which deletes the Deployment) has the garbage collector delete the Secret too:
Helm never made it and would leave it behind.

A failed pass is logged and retried after ``retry_interval``; the old certificate keeps being
served meanwhile. Needs RBAC: get/create/update on the Secret in our namespace, get/patch on
the MutatingWebhookConfiguration, and get on the owner Deployment (by name).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from autocrane import errors
from webhook import metrics, tls

log = logging.getLogger(__name__)

Body = dict[str, Any]


class KubePort(Protocol):
    """The calls this module makes (``autocrane.kube.Kube`` provides them)."""

    async def get_secret(self, namespace: str, name: str) -> Body: ...
    async def create_secret(self, namespace: str, body: Body) -> Body: ...
    async def replace_secret(self, namespace: str, body: Body) -> Body: ...
    async def get_mutating_webhook_configuration(self, name: str) -> Body: ...
    async def json_patch_mutating_webhook_configuration(self, name: str, operations: list[Body]) -> Body: ...
    async def get_deployment(self, namespace: str, name: str) -> Body: ...


@dataclass(frozen=True, slots=True)
class SelfSignedSettings:
    namespace: str
    """Where the webhook's Service and the CA Secret live."""
    service: str
    """The Service the API server calls; its DNS names go into the serving certificate."""
    webhook_config_name: str
    """The MutatingWebhookConfiguration whose caBundle we keep current."""
    secret_name: str = "autocrane-webhook-ca"
    extra_names: tuple[str, ...] = ()
    """More subjectAltNames: DNS names or IP addresses (e.g. 127.0.0.1 for a URL-configured webhook)."""
    ca_validity: datetime.timedelta = datetime.timedelta(days=365)
    """Renewed at 2/3 (about 8 months); the old CA then stays in the caBundle for its last 4 months."""
    cert_validity: datetime.timedelta = datetime.timedelta(days=7)
    """Short, like cert-manager's own webhook: a leaked key is useful for days, and renewal
    (at 2/3, ~4.7 days) is exercised constantly rather than once a year."""
    interval: float = 60.0
    """Seconds between passes; a renewal is noticed at most this late."""
    retry_interval: float = 5.0
    """Seconds before retrying a pass that failed."""
    owner_deployment: str | None = None
    """The Deployment (in ``namespace``) that owns the CA Secret: deleting it deletes the Secret."""

    def dns_names(self) -> list[str]:
        base = [self.service, f"{self.service}.{self.namespace}", f"{self.service}.{self.namespace}.svc",
                f"{self.service}.{self.namespace}.svc.cluster.local"]
        return base + [name for name in self.extra_names if not _is_ip(name)]

    def ip_addresses(self) -> list[str]:
        return [name for name in self.extra_names if _is_ip(name)]


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def ca_bundle_patch(configuration: Body, ca_pem: bytes, *, namespace: str, service: str,
                    now: datetime.datetime) -> list[Body]:
    """The JSON patch that merges ``ca_pem`` into our webhooks' caBundles; ``[]`` if none changes.

    Only webhooks whose ``clientConfig.service`` is ``namespace/service`` are touched (a URL
    webhook or another service's is not ours to trust). The first operation tests the
    resourceVersion the decision was made on.
    """
    operations: list[Body] = []
    for index, webhook in enumerate(configuration.get("webhooks") or []):
        client_config = webhook.get("clientConfig") or {}
        ref = client_config.get("service") or {}
        if (ref.get("namespace"), ref.get("name")) != (namespace, service):
            continue
        current = client_config.get("caBundle") or ""
        try:
            existing = base64.b64decode(current, validate=True)
        except ValueError:
            existing = b""
        merged = tls.merge_ca_bundle(existing, ca_pem, now=now)
        if merged != existing:
            operations.append({"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": _b64(merged)})
    if not operations:
        return []
    version = configuration.get("metadata", {}).get("resourceVersion", "")
    return [{"op": "test", "path": "/metadata/resourceVersion", "value": version}, *operations]


@dataclass
class SelfSigned:
    """The loop of the module docstring, serving through ``reloader``."""

    kube: KubePort
    reloader: tls.CertReloader
    settings: SelfSignedSettings
    clock: Callable[[], datetime.datetime] = tls.utcnow
    serving: tls.KeyPair | None = field(default=None, init=False)
    """The pair installed last by this loop."""
    _owner: Body | None = field(default=None, init=False)

    async def owner(self) -> Body | None:
        """The ownerReference to ``owner_deployment`` (looked up once), or None without one.

        A failed lookup is logged and the Secret is written without it this pass: serving matters
        more than its clean-up, and the next pass adds it.
        """
        name = self.settings.owner_deployment
        if name is None or self._owner is not None:
            return self._owner
        try:
            deployment = await self.kube.get_deployment(self.settings.namespace, name)
        except errors.KubeError as error:
            log.warning("the CA Secret's owner Deployment cannot be read; the Secret stays without "
                        "an ownerReference for now", extra={"deployment": name, "error": str(error)})
            return None
        self._owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                       "uid": deployment["metadata"]["uid"]}
        return self._owner

    def _secret(self, ca: tls.KeyPair, resource_version: str | None = None, owner: Body | None = None) -> Body:
        metadata: Body = {"name": self.settings.secret_name, "namespace": self.settings.namespace,
                          "labels": {"app.kubernetes.io/managed-by": "autocrane",
                                     "app.kubernetes.io/component": "webhook"}}
        if resource_version:
            metadata["resourceVersion"] = resource_version
        if owner is not None:
            metadata["ownerReferences"] = [owner]
        return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque",
                "data": {"ca.crt": _b64(ca.cert_pem), "ca.key": _b64(ca.key_pem)}}

    def _new_ca(self, now: datetime.datetime) -> tls.KeyPair:
        return tls.generate_ca(common_name=f"autocrane-webhook-ca@{int(now.timestamp())}", now=now,
                               validity=self.settings.ca_validity)

    @staticmethod
    def _read_ca(secret: Body) -> tls.KeyPair | None:
        data = secret.get("data") or {}
        try:
            pair = tls.KeyPair(base64.b64decode(data["ca.crt"]), base64.b64decode(data["ca.key"]))
            tls.describe(pair.cert_pem)
        except (KeyError, ValueError, tls.CertError):
            return None
        return pair

    async def ensure_ca(self, now: datetime.datetime) -> tls.KeyPair:
        """The CA every replica uses, created or rotated here if needed."""
        namespace, name = self.settings.namespace, self.settings.secret_name
        owner = await self.owner()
        try:
            secret = await self.kube.get_secret(namespace, name)
        except errors.NotFound:
            ca = self._new_ca(now)
            try:
                await self.kube.create_secret(namespace, self._secret(ca, owner=owner))
                log.info("created the webhook CA", extra={"secret": f"{namespace}/{name}",
                                                           "ca": tls.describe(ca.cert_pem).subject})
                return ca
            except errors.AlreadyExists:  # another replica won the race: use its CA
                secret = await self.kube.get_secret(namespace, name)
        ca_or_none = self._read_ca(secret)
        version = secret["metadata"].get("resourceVersion")
        if ca_or_none is not None and not tls.renewal_due(ca_or_none.cert_pem, now):
            if owner is not None and owner not in (secret["metadata"].get("ownerReferences") or []):
                with contextlib.suppress(errors.Conflict):  # changed meanwhile: the next pass adds it
                    await self.kube.replace_secret(namespace, self._secret(ca_or_none, version, owner))
                    log.info("the webhook CA Secret is now owned by its Deployment",
                             extra={"secret": f"{namespace}/{name}", "deployment": owner["name"]})
            return ca_or_none
        ca = self._new_ca(now)
        why = "is unreadable" if ca_or_none is None else "reached 2/3 of its life"
        try:
            await self.kube.replace_secret(namespace, self._secret(ca, version, owner))
        except errors.Conflict:  # another replica rotated it first
            secret = await self.kube.get_secret(namespace, name)
            winner = self._read_ca(secret)
            if winner is None:
                raise
            return winner
        log.info("rotated the webhook CA", extra={"secret": f"{namespace}/{name}", "why": f"the old CA {why}",
                                                   "ca": tls.describe(ca.cert_pem).subject})
        return ca

    async def ensure_ca_bundle(self, ca: tls.KeyPair, now: datetime.datetime) -> bool:
        """Merge ``ca`` into the caBundles; returns whether a patch was sent."""
        name = self.settings.webhook_config_name
        try:
            configuration = await self.kube.get_mutating_webhook_configuration(name)
        except errors.NotFound:
            log.warning("the MutatingWebhookConfiguration does not exist (yet); caBundle not set",
                        extra={"webhook_config": name})
            return False
        operations = ca_bundle_patch(configuration, ca.cert_pem, namespace=self.settings.namespace,
                                     service=self.settings.service, now=now)
        if not operations:
            return False
        try:
            await self.kube.json_patch_mutating_webhook_configuration(name, operations)
        except errors.KubeError:
            metrics.CA_BUNDLE_UPDATES.labels("error").inc()
            raise
        metrics.CA_BUNDLE_UPDATES.labels("ok").inc()
        log.info("updated the caBundle", extra={"webhook_config": name, "webhooks": len(operations) - 1})
        return True

    def serving_cert_due(self, ca: tls.KeyPair, now: datetime.datetime) -> str | None:
        """Why a new serving certificate is needed now, or None."""
        if self.serving is None:
            return "none yet"
        if tls.renewal_due(self.serving.cert_pem, now):
            return "2/3 of its life passed"
        if not tls.signed_by(self.serving.cert_pem, ca.cert_pem):
            return "the CA changed"
        if not tls.covers(self.serving.cert_pem, self.settings.dns_names(), self.settings.ip_addresses()):
            return "the names changed"
        return None

    async def step(self) -> None:
        now = self.clock()
        ca = await self.ensure_ca(now)
        await self.ensure_ca_bundle(ca, now)
        why = self.serving_cert_due(ca, now)
        if why is not None:
            pair = tls.issue_serving_cert(ca, dns_names=self.settings.dns_names(),
                                          ip_addresses=self.settings.ip_addresses(), now=now,
                                          validity=self.settings.cert_validity)
            self.reloader.install(pair, source=f"self-signed ({why})")
            self.serving = pair

    async def run(self) -> None:
        """Pass after pass, forever; cancel to stop."""
        while True:
            try:
                await self.step()
                delay = self.settings.interval
            except (errors.KubeError, tls.CertError) as error:
                log.error("self-signed certificate pass failed; retrying", extra={"error": str(error)})
                delay = self.settings.retry_interval
            except Exception:  # a bug must not end renewals for good: keep serving, keep trying
                log.exception("self-signed certificate pass failed unexpectedly; retrying")
                delay = self.settings.retry_interval
            await asyncio.sleep(delay)
