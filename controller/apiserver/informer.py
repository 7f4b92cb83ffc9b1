"""A slim pod informer: LIST once, then WATCH from there, keeping :class:`controller.pods.Pod` records.

- The LIST is paged (``limit``/``continue``) so a 10,000-pod cluster never sits in memory as one
  55 MiB answer; each pod is decoded to a slim record at once (``controller.pods``).
- The WATCH starts at the LIST's resourceVersion with ``allowWatchBookmarks``: bookmarks keep the
  resourceVersion fresh on a quiet, filtered watch, so reconnecting rarely meets 410 Gone.
- A watch the server ends (``timeoutSeconds``, jittered so replicas do not reconnect in step) is
  resumed from the last resourceVersion: no LIST. A broken connection is retried with jittered
  exponential back-off, also from the last resourceVersion.
- Only 410 Gone (history compacted) re-LISTs; the new store replaces the old one, so pods deleted
  meanwhile disappear without a DELETED event. There is no periodic re-LIST.
- :attr:`synced` is set after the first complete LIST; nothing may act on the store before.

Scope is one namespace (or all) and an optional label selector, both applied by the server.
"""

from __future__ import annotations

import asyncio
import logging
import random
import typing
from collections.abc import Callable
from typing import Any

from autocrane import backoff, bodies, clock, errors, kube
from controller import metrics, pods

log = logging.getLogger(__name__)


def _key(obj: dict[str, Any]) -> str:
    """``namespace/name`` of a raw pod, as :attr:`controller.pods.Pod.key` would say."""
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


class PodInformer:
    def __init__(self, api: kube.Streaming, *, namespace: str | None = None, label_selector: str | None = None,
                 page_size: int = 500, watch_timeout: float = 300.0, max_backoff: float = 30.0,
                 decode: Callable[[bodies.Pod], pods.Pod] = pods.from_json, time: clock.Clock = clock.SYSTEM
                 ) -> None:
        self.api = api
        self.namespace = namespace
        self.label_selector = label_selector
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self.backoff = backoff.Backoff(min(1.0, max_backoff), max_backoff, jitter=0.5)
        """Waits between failed lists or watches (jittered: replicas do not reconnect in step)."""
        self.clock = time
        self.decode = decode
        self.store: dict[str, pods.Pod] = {}
        """Pods by ``namespace/name``."""
        self.resource_version = ""
        self.synced = asyncio.Event()
        self.last_event = 0.0
        """Wall-clock time of the last watch event or bookmark (for the lag metric)."""

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods" if self.namespace else "/api/v1/pods"

    def snapshot(self) -> list[pods.Pod]:
        return list(self.store.values())

    async def list(self) -> None:
        """Replace the store with a fresh paged LIST."""
        store: dict[str, pods.Pod] = {}
        token: str | None = None
        while True:
            query = {"limit": self.page_size, "continue": token, "labelSelector": self.label_selector}
            page = await self.api.request("GET", self.path, query=query, timeout=60)
            for item in page.get("items") or ():
                pod = self._decode(item)
                if pod is not None:
                    store[pod.key] = pod
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                break
        self.store = store
        self.resource_version = str(meta.get("resourceVersion", ""))
        self.last_event = self.clock.time()
        metrics.INFORMER_PODS.set(len(self.store))
        self.synced.set()

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one watch event into the store."""
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":  # a Status; 410 (errors.Gone) means the history is gone: LIST again
            raise kube.status_error("watch", obj if isinstance(obj, dict) else {})
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED"):
            pod = self._decode(obj)
            if pod is not None:
                self.store[pod.key] = pod
            else:  # not understood: better no record than a stale one
                self.store.pop(_key(obj), None)
        elif kind == "DELETED":
            self.store.pop(_key(obj), None)
        if rv:
            self.resource_version = str(rv)
        self.last_event = self.clock.time()
        metrics.INFORMER_PODS.set(len(self.store))
        metrics.INFORMER_LAST_EVENT.set(self.last_event)

    def _decode(self, obj: dict[str, Any]) -> pods.Pod | None:
        """The slim record, or None (logged) for an object it cannot be made from: one odd pod never
        stops the informer, which would stop every pass."""
        try:
            return self.decode(typing.cast(bodies.Pod, obj))  # what the API server lists and watches
        except Exception as error:
            log.error("pod left out of the store: it cannot be decoded", exc_info=error,
                      extra={"pod": _key(obj), "error": f"{type(error).__name__}: {error}"[:300]})
            return None

    async def watch(self) -> None:
        """One watch from :attr:`resource_version` until the server closes it."""
        timeout = int(self.watch_timeout * random.uniform(0.8, 1.2))
        query = {"resourceVersion": self.resource_version, "allowWatchBookmarks": True,
                 "timeoutSeconds": timeout, "labelSelector": self.label_selector}
        async for event in self.api.watch(self.path, query, timeout):
            self.apply(event)

    async def run(self) -> None:
        """LIST and WATCH until cancelled; never raises for API trouble."""
        failures = 0
        need_list, reason = True, "start"
        while True:
            try:
                if need_list:
                    metrics.INFORMER_RELISTS.labels(reason).inc()
                    await self.list()
                    need_list = False
                    log.info("pods listed", extra={"scope": self.namespace or "all namespaces",
                                                   "pods": len(self.store), "resource_version": self.resource_version})
                await self.watch()
                failures = 0
            except errors.Gone:
                log.info("watch history is gone (410): listing again", extra={"scope": self.namespace or "all"})
                need_list, reason = True, "gone"
            except errors.KubeError as exc:
                failures += 1
                delay = self.backoff.delay(failures)
                log.warning("pod list/watch failed; retrying", extra={"error": str(exc), "retry_in": round(delay, 2)})
                if need_list:
                    reason = "error"
                await self.clock.sleep(delay)
