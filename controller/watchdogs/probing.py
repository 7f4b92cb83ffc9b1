"""Probing ``probe.autocrane.io/<name>: POD_IP:<port>/<path>`` watchdog URLs over HTTP.

Parsing (:func:`target`) is pure. The only host a probe may reach is the pod's own IP, written
as the literal ``POD_IP`` (or that IP itself): anyone who can annotate a pod could otherwise make
the controller, which runs with cluster-wide network reach, call any address (SSRF). A refused
annotation becomes a ``refused`` result, which the controller records as a ``warning`` status
and a Warning Event on the pod. For the same reason the prober never follows redirects and
ignores proxy environment variables.

Results: ``ok`` for a 2xx answer; ``error`` for any other HTTP status (the watchdog answered
and said no); ``unknown`` when there is no answer (connection refused, timeout, no pod IP yet,
pod not Running): no data is not a verdict, so it never changes a status.

:class:`Prober` sends at most ``concurrency`` requests at once, each bounded by ``timeout``
seconds in total, over one keep-alive pool.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
from collections.abc import Awaitable, Callable, Iterable

import aiohttp

from autocrane import inpod, untrusted, watchdogs
from controller import pods
from controller.apiserver import fanout
from controller.watchdogs import health

Probe = Callable[[pods.Pod], Awaitable[dict[str, health.ProbeResult]]]
PLACEHOLDER = "POD_IP"
FORM = "POD_IP:<port>/<path>"
_TARGET = re.compile(r"(?:http://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^:/\[\]]+):(?P<port>[0-9]{1,5})"
                     r"(?P<path>/[A-Za-z0-9._~/-]*(?:\?[A-Za-z0-9._~=&%-]*)?)?")  # fullmatch
_MAX_BODY = 200
"""Bytes of an error answer's body kept in the status message."""
MAX_STATUS_BYTES = 256 << 10
"""Largest datadeployer ``GET /status`` answer read (about 400 bytes per data set)."""


def _refused(message: str) -> health.ProbeResult:
    return health.ProbeResult("refused", message)


def target(value: str, pod_ip: str) -> str | health.ProbeResult:
    """The URL to GET for a probe annotation value, or a ``refused`` result saying why not."""
    match = _TARGET.fullmatch(value.strip())
    if not match:
        return _refused(f"{value[:80]!r} is not {FORM}")
    host, port, path = match["host"].strip("[]"), int(match["port"]), match["path"] or "/"
    if not 0 < port < 65536:
        return _refused(f"{value[:80]!r}: port {port} is not between 1 and 65535")
    if host != PLACEHOLDER:
        try:
            same = bool(pod_ip) and ipaddress.ip_address(host) == ipaddress.ip_address(pod_ip)
        except ValueError:
            same = False
        if not same:
            return _refused(f"host {host[:64]!r} is not the pod's own IP; only {FORM} may be probed")
    if not pod_ip:
        return health.ProbeResult("unknown", "the pod has no IP yet")
    shown = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    return f"http://{shown}:{port}{path}"


async def _read(content: aiohttp.StreamReader, limit: int) -> bytes | None:
    """The whole body if it is at most ``limit`` bytes, else None (``read(n)`` returns one chunk only)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await content.read(limit + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return None
    return b"".join(chunks)


def decode_json(data: bytes, what: str = "answer") -> object | None:
    """A peer's JSON answer, or None when it is not JSON or nested deeper than ``untrusted.MAX_DEPTH``."""
    try:
        value: object = untrusted.json_value(data, what=what, max_bytes=len(data))
    except untrusted.UntrustedValueError:
        return None
    return value


class Prober:
    """HTTP GETs with bounded concurrency; use as ``async with Prober(...) as prober``."""

    def __init__(self, *, concurrency: int = 64, timeout: float = 5.0) -> None:
        self.concurrency = concurrency
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(concurrency)
        self.durations: list[float] = []
        """Seconds per HTTP probe since the last :meth:`take_durations` (for metrics)."""

    async def __aenter__(self) -> Prober:
        connector = aiohttp.TCPConnector(limit=self.concurrency, ttl_dns_cache=None, use_dns_cache=False)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout),
            trust_env=False, cookie_jar=aiohttp.DummyCookieJar(), headers={"User-Agent": "autocrane-controller"})
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use Prober as an async context manager")
        return self._session

    def take_durations(self) -> list[float]:
        taken, self.durations = self.durations, []
        return taken

    async def get(self, url: str) -> health.ProbeResult:
        """GET ``url`` once and classify the answer."""
        session = self._open()
        async with self._slots:
            started = time.monotonic()
            try:
                async with session.get(url, allow_redirects=False) as response:
                    if 200 <= response.status < 300:
                        return health.ProbeResult("ok")
                    body = (await response.content.read(_MAX_BODY)).decode("utf-8", "replace")
                    text = " ".join(body.split())
                    return health.ProbeResult("error", f"http {response.status}" + (f": {text}" if text else ""))
            except TimeoutError:
                return health.ProbeResult("unknown", f"no answer within {self.timeout:g}s")
            except (aiohttp.ClientError, OSError) as exc:
                return health.ProbeResult("unknown", f"unreachable: {type(exc).__name__}")
            finally:
                self.durations.append(time.monotonic() - started)

    async def get_json(self, url: str, limit: int = MAX_STATUS_BYTES) -> object | None:
        """GET ``url`` and decode a 200 answer as JSON; None for anything else.

        The answer comes from whatever runs in the pod: it is read up to ``limit`` bytes and decoded
        by :func:`decode_json` (nesting bounded), so no answer can raise out of here.
        """
        session = self._open()
        async with self._slots:
            try:
                async with session.get(url, allow_redirects=False) as response:
                    if response.status != 200:
                        return None
                    data = await _read(response.content, limit)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
                return None
        return None if data is None else decode_json(data, url)

    async def datadeployer_status(self, pod: pods.Pod, port: int) -> object | None:
        """The pod's datadeployer ``GET /status`` (on its own IP only), or None when it does not answer."""
        if not pod.probeable:
            return None
        shown = f"[{pod.pod_ip}]" if ":" in pod.pod_ip else pod.pod_ip
        return await self.get_json(f"http://{shown}:{port}{inpod.STATUS_PATH}")

    async def probe_pod(self, pod: pods.Pod) -> dict[str, health.ProbeResult]:
        """Every probe annotation of ``pod``, by watchdog name."""
        results: dict[str, health.ProbeResult] = {}
        urls: dict[str, str] = {}
        for name, value in pod.probes().items():
            try:
                watchdogs.check_name(name)
            except watchdogs.WatchdogError as exc:
                results[name] = _refused(str(exc))
                continue
            where = target(value, pod.pod_ip)
            if isinstance(where, str):
                urls[name] = where
            else:
                results[name] = where
        if not pod.probeable:
            unknown = health.ProbeResult("unknown", f"pod is {'terminating' if pod.terminating else pod.phase}")
            return {name: unknown for name in pod.probes()} | {
                name: r for name, r in results.items() if r.outcome == "refused"}
        answers = await asyncio.gather(*(self.get(url) for url in urls.values()))
        results.update(zip(urls, answers, strict=True))
        return results

    async def probe_all(self, snapshot: Iterable[pods.Pod], probe: Probe | None = None
                        ) -> dict[str, dict[str, health.ProbeResult]]:
        """Results by pod uid for every pod that has probe annotations.

        ``concurrency`` workers take the pods one after another (:func:`fanout.bounded_map`), each
        through ``probe`` (default :meth:`probe_pod`; the pass loop wraps it to isolate faults).
        """
        chosen = [pod for pod in snapshot if pod.probes()]
        answers = await fanout.bounded_map(probe or self.probe_pod, chosen, self.concurrency)
        return {pod.uid: answer for pod, answer in zip(chosen, answers, strict=True)}
