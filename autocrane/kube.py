"""The one Kubernetes client: async, raw JSON in and out, over ``kubernetes.aio``.

This is the only module that imports ``kubernetes`` (the official client). The client is used
for what it does well: reading kubeconfigs and the in-cluster service account (client
certificates, exec plugins, token refresh), TLS and the connection pool (aiohttp). Its generated
API classes and models are not used: a request is ``(method, path, query, body)`` and an answer
is the decoded JSON, the shape every other module and the API documentation speak (a pod costs
~0.1 ms to decode instead of ~1 ms as a model, docs/controller.md). :meth:`Kube.watch` reads a
watch line by line, so the controller's informer can keep one open for hours.

Errors come back typed (``autocrane.errors``), decided here from the answer's status and Status
body: callers compare types, never codes or words. "Already exists" (a create lost a race: read
the winner) is told from "conflict" (a stale resourceVersion: read again), and the Eviction
API's 500 for a pod under several PodDisruptionBudgets is :class:`errors.MultiplePodDisruptionBudgets`.

Two optional parts serve the controller without this module knowing it: a write rate limiter
(:class:`RateLimiter`, ``qps``/``burst``; no Python client has one, and 10,000 patches at once
would be felt by every other API client), and an :class:`Observer` told of every answer and every
wait for the limiter (the controller's API metrics). The webhook uses neither. The few calls the
webhook and ``autocrane watchdog`` make (Secrets, the MutatingWebhookConfiguration, a pod) are
methods written on top of :meth:`Kube.request`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from kubernetes.aio import client as aio_client
from kubernetes.aio import config as aio_config

from autocrane import clock, errors

Body = dict[str, Any]
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
REQUEST_TIMEOUT = 15.0
"""Seconds for one API call (connect + answer): an unreachable API server must not hang a loop."""
WATCH_SLACK = 30.0
"""Seconds a watch may stay silent past its ``timeoutSeconds`` before it counts as broken."""
_MULTIPLE_PDBS = "more than one PodDisruptionBudget"
"""The Eviction API's words for a pod several budgets select (kubernetes pkg/registry/core/pod/storage/eviction.go)."""


class Api(Protocol):
    """Raw-JSON requests: what the controller's writer, leader election and commands need (and tests fake)."""

    async def request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None, body: Any = None,
                      content_type: str = JSON, timeout: float = REQUEST_TIMEOUT) -> Body: ...


class Streaming(Api, Protocol):
    """Requests and watches: what the informer needs."""

    def watch(self, path: str, query: Mapping[str, Any], timeout: float) -> AsyncIterator[Body]: ...


class Observer(Protocol):
    """Told of every answer and every wait for the rate limiter (the controller counts them)."""

    def answered(self, verb: str, resource: str, code: int) -> None:
        """One answer: ``verb`` lower-case (``watch`` for a watch), ``resource`` from :func:`resource_of`,
        ``code`` the HTTP status, 0 when there was none."""
        ...

    def throttled(self, seconds: float) -> None:
        """A write waited ``seconds`` for the rate limiter (0.0 when it did not wait)."""
        ...


class RateLimiter:
    """A token bucket: ``rate`` writes per second, at most ``burst`` saved up; :meth:`take` waits for one."""

    def __init__(self, rate: float, burst: int, *, time: clock.Clock = clock.SYSTEM) -> None:
        if rate <= 0:
            raise ValueError(f"the write rate must be above 0, not {rate}")
        self.rate, self.burst = rate, max(1, burst)
        self.clock = time
        self._tokens = float(self.burst)
        self._last = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self) -> float:
        """Wait for a token; return the seconds waited."""
        async with self._lock:
            now = self.clock.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            wait = 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate
            if wait:
                await self.clock.sleep(wait)
                self._last = self.clock.monotonic()
                self._tokens = 1.0
            self._tokens -= 1
            return wait


def resource_of(path: str) -> str:
    """``/api/v1/namespaces/x/pods/y/eviction`` -> ``pods/eviction`` (a low-cardinality metric label)."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    if parts[:1] == ["api"]:
        parts = parts[2:]
    elif parts[:1] == ["apis"]:
        parts = parts[3:]
    if parts[:1] == ["namespaces"] and len(parts) > 2:
        parts = parts[2:]
    kinds = parts[0::2]
    return "/".join(kinds[:1] + parts[2:3]) if len(parts) > 2 else (kinds[0] if kinds else "")


_BY_STATUS: dict[int, type[errors.KubeError]] = {
    401: errors.Unauthorized, 403: errors.Forbidden, 404: errors.NotFound, 409: errors.Conflict,
    410: errors.Gone, 422: errors.Invalid, 429: errors.TooManyRequests,
}


def error(what: str, status: int, body: Mapping[str, Any] | None = None,
          retry_after: float | None = None) -> errors.KubeError:
    """The typed error for an answer of ``status`` with the Status ``body`` (decoded JSON, may be empty)."""
    body = dict(body or {})
    reason, message = str(body.get("reason") or ""), str(body.get("message") or "")
    kind = _BY_STATUS.get(status, errors.ServerError if status >= 500 else errors.KubeError)
    if status == 409 and reason == "AlreadyExists":
        kind = errors.AlreadyExists
    elif status == 500 and _MULTIPLE_PDBS in message:
        kind = errors.MultiplePodDisruptionBudgets
    if retry_after is None:
        details = body.get("details")
        seconds = details.get("retryAfterSeconds") if isinstance(details, dict) else None
        retry_after = float(seconds) if isinstance(seconds, int) and not isinstance(seconds, bool) and seconds > 0 \
            else None
    text = f"{what}: {status} {reason}".rstrip() + (f": {message}" if message else "")
    return kind(text, status=status, reason=reason, retry_after=retry_after, body=body)


def status_error(what: str, status: Mapping[str, Any]) -> errors.KubeError:
    """The typed error for a Status object (a watch's ERROR event); its ``code`` is the HTTP status."""
    code = status.get("code")
    return error(what, code if isinstance(code, int) and not isinstance(code, bool) else 0, status)


def _retry_after(value: str | None) -> float | None:
    return float(value) if value and value.isdigit() else None


class Kube:
    """Raw-JSON requests over one ``kubernetes.aio`` ApiClient (use :meth:`connect`)."""

    def __init__(self, api_client: aio_client.ApiClient, *, limiter: RateLimiter | None = None,
                 observer: Observer | None = None) -> None:
        self.api_client = api_client
        self.limiter = limiter
        """Writes (every verb but GET) wait for it; None: no limit."""
        self.observer = observer

    @classmethod
    async def connect(cls, kubeconfig: Path | None = None, *, limiter: RateLimiter | None = None,
                      observer: Observer | None = None) -> Kube:
        """``kubeconfig``, else the in-cluster service account, else $KUBECONFIG / ~/.kube/config."""
        configuration = aio_client.Configuration()
        try:
            if kubeconfig is not None:
                await aio_config.load_kube_config(  # type: ignore[no-untyped-call]  # kubernetes.aio: unannotated
                    config_file=str(kubeconfig), client_configuration=configuration)
            else:
                try:
                    aio_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]  # kubernetes.aio's own code has no annotations
                except aio_config.ConfigException:
                    await aio_config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]  # kubernetes.aio's own code has no annotations
        except (aio_config.ConfigException, OSError) as exc:
            where = kubeconfig or "the in-cluster service account, $KUBECONFIG or ~/.kube/config"
            raise errors.ConfigError(f"no usable Kubernetes credentials from {where}: {exc}") from None
        return cls(aio_client.ApiClient(configuration), limiter=limiter, observer=observer)

    async def close(self) -> None:
        await self.api_client.close()  # type: ignore[no-untyped-call]  # kubernetes.aio's own code has no annotations

    def _answered(self, verb: str, path: str, code: int) -> None:
        if self.observer is not None:
            self.observer.answered(verb, resource_of(path), code)

    async def _send(self, method: str, path: str, query: Mapping[str, Any] | None, body: Any,
                    content_type: str, timeout: aiohttp.ClientTimeout) -> aio_client.rest.RESTResponse:
        if method != "GET" and self.limiter is not None:
            waited = await self.limiter.take()
            if self.observer is not None:
                self.observer.throttled(waited)
        if query:
            path += "?" + urllib.parse.urlencode(
                {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in query.items() if v is not None})
        headers = {"Content-Type": content_type, "Accept": JSON}
        method, url, headers, body, _ = await self.api_client.param_serialize(
            method, path, header_params=headers, body=body, auth_settings=["BearerToken"])
        try:
            response: aio_client.rest.RESTResponse = await self.api_client.call_api(
                method, url, headers, body, _request_timeout=timeout)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._answered(method.lower(), path, 0)
            raise errors.NoAnswer(f"{method} {path}: no answer: {type(exc).__name__}: {exc}") from None
        return response

    async def request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None, body: Any = None,
                      content_type: str = JSON, timeout: float = REQUEST_TIMEOUT) -> Body:
        """Send one request and return the decoded JSON answer; a non-2xx answer raises its typed error."""
        response = await self._send(method, path, query, body, content_type, aiohttp.ClientTimeout(total=timeout))
        try:
            data: bytes = await response.read()  # type: ignore[no-untyped-call]  # kubernetes.aio's own code has no annotations
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._answered(method.lower(), path, 0)
            raise errors.NoAnswer(f"{method} {path}: answer cut off: {type(exc).__name__}: {exc}") from None
        self._answered(method.lower(), path, response.status)
        try:
            decoded = json.loads(data) if data else {}
        except ValueError:
            decoded = {"message": data[:200].decode("utf-8", "replace")}
        if not isinstance(decoded, dict):
            decoded = {"message": f"not a JSON object: {str(decoded)[:200]}"}
        if 200 <= response.status < 300:
            return decoded
        raise error(f"{method} {path.split('?')[0]}", response.status, decoded,
                    _retry_after(response.headers.get("Retry-After")))

    async def watch(self, path: str, query: Mapping[str, Any], timeout: float) -> AsyncIterator[Body]:
        """Yield the events of a watch (``watch=true`` is added) until the server ends it.

        ``timeout`` is the watch's ``timeoutSeconds``: a watch silent for :data:`WATCH_SLACK`
        seconds longer is broken (:class:`errors.NoAnswer`).
        """
        response = await self._send("GET", path, {**query, "watch": True}, None, JSON,
                                    aiohttp.ClientTimeout(total=None, sock_connect=REQUEST_TIMEOUT,
                                                          sock_read=timeout + WATCH_SLACK))
        self._answered("watch", path, response.status)
        raw = response.response
        try:
            if response.status != 200:
                data = await raw.read()
                try:
                    status = json.loads(data)
                except ValueError:
                    status = {"message": data[:200].decode("utf-8", "replace")}
                raise error(f"watch {path}", response.status, status if isinstance(status, dict) else {})
            async for line in raw.content:
                if line.strip():
                    yield json.loads(line)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise errors.NoAnswer(f"watch {path}: broken: {type(exc).__name__}: {exc}") from None
        finally:
            raw.release()

    # --- the webhook's and `autocrane watchdog`'s calls, on top of request() ----------------------

    async def get_pod(self, namespace: str, name: str) -> Body:
        return await self.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")

    async def merge_patch_pod(self, namespace: str, name: str, patch: Body) -> Body:
        """A JSON merge patch; with ``metadata.resourceVersion`` set, a concurrent change is a Conflict."""
        return await self.request("PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}", body=patch,
                                  content_type=MERGE_PATCH)

    async def get_secret(self, namespace: str, name: str) -> Body:
        return await self.request("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")

    async def create_secret(self, namespace: str, body: Body) -> Body:
        return await self.request("POST", f"/api/v1/namespaces/{namespace}/secrets", body=body)

    async def replace_secret(self, namespace: str, body: Body) -> Body:
        """Replace the Secret; with ``metadata.resourceVersion`` set, a concurrent change is a Conflict."""
        name = body["metadata"]["name"]
        return await self.request("PUT", f"/api/v1/namespaces/{namespace}/secrets/{name}", body=body)

    async def get_deployment(self, namespace: str, name: str) -> Body:
        return await self.request("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")

    async def get_mutating_webhook_configuration(self, name: str) -> Body:
        return await self.request("GET", f"{_MWC}/{name}")

    async def json_patch_mutating_webhook_configuration(self, name: str, operations: list[Body]) -> Body:
        """Apply an RFC 6902 patch.

        Start it with a ``test`` of ``/metadata/resourceVersion`` to make it conditional: when the
        object changed meanwhile the API server refuses the whole patch (:class:`errors.Invalid`).
        """
        return await self.request("PATCH", f"{_MWC}/{name}", body=operations, content_type=JSON_PATCH)

    async def apply_mutating_webhook_configuration(self, body: Body) -> Body:
        """Create the configuration, or replace the one of that name (its resourceVersion guards the write)."""
        name = body["metadata"]["name"]
        try:
            return await self.request("POST", _MWC, body=body)
        except errors.AlreadyExists:
            current = await self.get_mutating_webhook_configuration(name)
            replacement = {**body, "metadata": {**body["metadata"],
                                                "resourceVersion": current["metadata"]["resourceVersion"]}}
            return await self.request("PUT", f"{_MWC}/{name}", body=replacement)

    async def delete_mutating_webhook_configuration(self, name: str) -> None:
        with contextlib.suppress(errors.NotFound):  # already gone is what we wanted
            await self.request("DELETE", f"{_MWC}/{name}")


_MWC = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
