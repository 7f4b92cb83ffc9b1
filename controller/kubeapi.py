"""The controller's own thin port to the API server: async, raw JSON, streaming watches.

Why not ``autocrane.kube``: that port runs the synchronous client in worker threads and decodes
whole responses, which suits the webhook's few calls. The controller keeps a watch open for
hours and reads it line by line, lists 10,000 pods in pages, and writes from one event loop; a
thread per stream and a full decode per call do not fit. So this module uses ``kubernetes.aio``
(aiohttp, shipped with the official ``kubernetes`` package we already depend on) for what it is
good at: reading kubeconfigs and the in-cluster service account (client certificates, exec
plugins, token refresh), TLS and the connection pool. It never uses the generated API classes or
models: requests are ``(method, path, query, body)`` and responses are decoded JSON dicts, so a
pod costs ~0.1 ms to decode instead of ~1 ms as a model (docs/controller.md).

Writes (every verb but GET) go through a token bucket (``qps``/``burst``): no Python client has a
client-side limiter, and 10,000 patches at once would be felt by every other API client.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes.aio import client as aio_client
from kubernetes.aio import config as aio_config

from autocrane import errors
from controller import metrics

Body = dict[str, Any]
REQUEST_TIMEOUT = 15.0
MERGE_PATCH = "application/merge-patch+json"


class ApiError(errors.AutocraneError):
    """A request failed; ``status`` is the HTTP status (0: no answer), ``reason`` the Status reason."""

    def __init__(self, message: str, *, status: int = 0, reason: str = "", retry_after: float | None = None,
                 body: Body | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after
        self.body = body or {}


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; :meth:`take` waits for one."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, max(1, burst)
        self._tokens = float(self.burst)
        self._last = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self) -> float:
        """Wait for a token; return the seconds waited."""
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            wait = 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate
            if wait:
                await asyncio.sleep(wait)
                self._last = time.monotonic()
                self._tokens = 1.0
            self._tokens -= 1
            return wait


def _resource(path: str) -> str:
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


class KubeApi:
    """Raw-JSON requests over one ``kubernetes.aio`` ApiClient."""

    def __init__(self, api_client: aio_client.ApiClient, *, qps: float = 20.0, burst: int = 40) -> None:
        self.api_client = api_client
        self.writes = TokenBucket(qps, burst)

    @classmethod
    async def connect(cls, kubeconfig: Path | None = None, *, qps: float = 20.0, burst: int = 40) -> KubeApi:
        """``kubeconfig``, else the in-cluster service account, else $KUBECONFIG / ~/.kube/config."""
        configuration = aio_client.Configuration()
        if kubeconfig is not None:
            await aio_config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        else:
            try:
                aio_config.load_incluster_config(client_configuration=configuration)
            except aio_config.ConfigException:
                await aio_config.load_kube_config(client_configuration=configuration)
        return cls(aio_client.ApiClient(configuration), qps=qps, burst=burst)

    async def close(self) -> None:
        await self.api_client.close()

    async def _send(self, method: str, path: str, query: Mapping[str, Any] | None, body: Any,
                    content_type: str, timeout: aiohttp.ClientTimeout) -> aio_client.rest.RESTResponse:
        if method != "GET":
            metrics.API_THROTTLE.observe(await self.writes.take())
        if query:
            path += "?" + urllib.parse.urlencode(
                {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in query.items() if v is not None})
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        method, url, headers, body, _ = await self.api_client.param_serialize(
            method, path, header_params=headers, body=body, auth_settings=["BearerToken"])
        try:
            return await self.api_client.call_api(method, url, headers, body, _request_timeout=timeout)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            metrics.API_REQUESTS.labels(method.lower(), _resource(path), "0").inc()
            raise ApiError(f"{method} {path}: no answer: {type(exc).__name__}: {exc}") from None

    async def request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None,
                      body: Any = None, content_type: str = "application/json",
                      timeout: float = REQUEST_TIMEOUT) -> Body:
        """Send one request and return the decoded JSON answer; non-2xx raises :class:`ApiError`."""
        response = await self._send(method, path, query, body, content_type,
                                    aiohttp.ClientTimeout(total=timeout))
        data = await response.read()
        metrics.API_REQUESTS.labels(method.lower(), _resource(path), str(response.status)).inc()
        try:
            decoded: Body = json.loads(data) if data else {}
        except ValueError:
            decoded = {"message": data[:200].decode("utf-8", "replace")}
        if 200 <= response.status < 300:
            return decoded
        retry_after = response.headers.get("Retry-After")
        message = decoded.get("message", "")
        raise ApiError(f"{method} {path.split('?')[0]}: {response.status} {decoded.get('reason', '')}: {message}",
                       status=response.status, reason=str(decoded.get("reason", "")), body=decoded,
                       retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None)

    async def watch(self, path: str, query: Mapping[str, Any], timeout: float) -> AsyncIterator[Body]:
        """Yield the events of a watch (``watch=true`` is added) until the server ends it."""
        response = await self._send("GET", path, {**query, "watch": True}, None, "application/json",
                                    aiohttp.ClientTimeout(total=None, sock_connect=REQUEST_TIMEOUT,
                                                          sock_read=timeout + 30))
        metrics.API_REQUESTS.labels("watch", _resource(path), str(response.status)).inc()
        raw = response.response
        try:
            if response.status != 200:
                data = await raw.read()
                raise ApiError(f"watch {path}: {response.status}: {data[:200]!r}", status=response.status)
            async for line in raw.content:
                if line.strip():
                    yield json.loads(line)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ApiError(f"watch {path}: broken: {type(exc).__name__}: {exc}") from None
        finally:
            raw.release()
