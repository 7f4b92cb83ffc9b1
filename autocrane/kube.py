"""The one port to the Kubernetes API server: raw JSON dicts in and out, async methods.

This is the only module that imports ``kubernetes`` (the official client). Its generated
models are not used: requests take plain dicts and responses are decoded JSON, the shape every
other module (and the API documentation) speaks. The client is synchronous; each call runs in a
worker thread (``asyncio.to_thread``) so the event loop keeps serving meanwhile.

Errors come back as :class:`KubeError` subclasses, so callers never catch the client's own
exception types and can tell "already exists" (a create lost a race: read the winner) from
"conflict" (an update with a stale resourceVersion: read again and retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes
import urllib3
from kubernetes.client import exceptions as client_exceptions

from autocrane import errors

Body = dict[str, Any]

REQUEST_TIMEOUT = 15.0
"""Seconds for one API call (connect + read): an unreachable API server must not hang a loop."""


class KubeError(errors.AutocraneError):
    """An API call failed; ``status`` is the HTTP status, ``reason`` the Status reason if any."""

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class NotFound(KubeError):
    pass


class AlreadyExists(KubeError):
    pass


class Conflict(KubeError):
    """The object changed since it was read (a stale ``metadata.resourceVersion``)."""


def _error(what: str, exc: client_exceptions.ApiException) -> KubeError:
    reason, message = "", ""
    try:
        status = json.loads(exc.body or "{}")
        reason, message = status.get("reason", ""), status.get("message", "")
    except (ValueError, AttributeError):
        pass
    text = f"{what}: {exc.status} {reason or exc.reason}" + (f": {message}" if message else "")
    kind: type[KubeError] = KubeError
    if exc.status == 404:
        kind = NotFound
    elif exc.status == 409:
        kind = AlreadyExists if reason == "AlreadyExists" else Conflict
    return kind(text, status=exc.status, reason=reason)


class Kube:
    """Async methods over one ``kubernetes.client.ApiClient``."""

    def __init__(self, api_client: kubernetes.client.ApiClient) -> None:
        self.api_client = api_client
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._admission = kubernetes.client.AdmissionregistrationV1Api(api_client)
        self._apps = kubernetes.client.AppsV1Api(api_client)

    @classmethod
    def connect(cls, kubeconfig: Path | None = None) -> Kube:
        """The in-cluster service account, or ``kubeconfig`` (or $KUBECONFIG / ~/.kube/config)."""
        configuration = kubernetes.client.Configuration()
        try:
            if kubeconfig is None:
                try:
                    kubernetes.config.load_incluster_config(client_configuration=configuration)
                except kubernetes.config.ConfigException:
                    kubernetes.config.load_kube_config(client_configuration=configuration)
            else:
                kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        except (kubernetes.config.ConfigException, OSError) as exc:
            where = kubeconfig or "the in-cluster service account, $KUBECONFIG or ~/.kube/config"
            raise KubeError(f"no usable Kubernetes credentials from {where}: {exc}") from None
        return cls(kubernetes.client.ApiClient(configuration))

    async def _call(self, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Body:
        def call() -> Body:
            response = method(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs)
            decoded: Body = json.loads(response.data)
            return decoded

        try:
            return await asyncio.to_thread(call)
        except client_exceptions.ApiException as exc:
            raise _error(what, exc) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:  # unreachable, TLS, timeout
            raise KubeError(f"{what}: {exc}") from None

    async def get_pod(self, namespace: str, name: str) -> Body:
        return await self._call(f"read Pod {namespace}/{name}", self._core.read_namespaced_pod, name, namespace)

    async def merge_patch_pod(self, namespace: str, name: str, patch: Body) -> Body:
        """A JSON merge patch; with ``metadata.resourceVersion`` set, a concurrent change is a Conflict."""
        return await self._call(f"patch Pod {namespace}/{name}", self._core.patch_namespaced_pod, name, namespace,
                                patch, _content_type="application/merge-patch+json")

    async def get_secret(self, namespace: str, name: str) -> Body:
        return await self._call(f"read Secret {namespace}/{name}", self._core.read_namespaced_secret, name, namespace)

    async def create_secret(self, namespace: str, body: Body) -> Body:
        name = body.get("metadata", {}).get("name", "?")
        return await self._call(f"create Secret {namespace}/{name}", self._core.create_namespaced_secret,
                                namespace, body)

    async def replace_secret(self, namespace: str, body: Body) -> Body:
        """Replace the Secret; with ``metadata.resourceVersion`` set, a concurrent change is a Conflict."""
        name = body["metadata"]["name"]
        return await self._call(f"replace Secret {namespace}/{name}", self._core.replace_namespaced_secret,
                                name, namespace, body)

    async def get_deployment(self, namespace: str, name: str) -> Body:
        return await self._call(f"read Deployment {namespace}/{name}", self._apps.read_namespaced_deployment,
                                name, namespace)

    async def get_mutating_webhook_configuration(self, name: str) -> Body:
        return await self._call(f"read MutatingWebhookConfiguration {name}",
                                self._admission.read_mutating_webhook_configuration, name)

    async def json_patch_mutating_webhook_configuration(self, name: str, operations: list[Body]) -> Body:
        """Apply an RFC 6902 patch.

        Start it with a ``test`` of ``/metadata/resourceVersion`` to make it conditional: when the
        object changed meanwhile the API server refuses the whole patch (422 Invalid, a KubeError).
        """
        return await self._call(f"patch MutatingWebhookConfiguration {name}",
                                self._admission.patch_mutating_webhook_configuration, name, operations,
                                _content_type="application/json-patch+json")

    async def apply_mutating_webhook_configuration(self, body: Body) -> Body:
        """Create the configuration, or replace the one of that name (its resourceVersion guards the write)."""
        name = body["metadata"]["name"]
        try:
            return await self._call(f"create MutatingWebhookConfiguration {name}",
                                    self._admission.create_mutating_webhook_configuration, body)
        except AlreadyExists:
            current = await self.get_mutating_webhook_configuration(name)
            replacement = {**body, "metadata": {**body["metadata"],
                                                "resourceVersion": current["metadata"]["resourceVersion"]}}
            return await self._call(f"replace MutatingWebhookConfiguration {name}",
                                    self._admission.replace_mutating_webhook_configuration, name, replacement)

    async def delete_mutating_webhook_configuration(self, name: str) -> None:
        with contextlib.suppress(NotFound):  # already gone is what we wanted
            await self._call(f"delete MutatingWebhookConfiguration {name}",
                             self._admission.delete_mutating_webhook_configuration, name)

    def close(self) -> None:
        self.api_client.close()
