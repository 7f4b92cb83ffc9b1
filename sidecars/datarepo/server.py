"""The data repository's HTTP API (Starlette).

======================================================  ==================================================
``GET /v1/manifest``                                    every source: ``{"sources": {name: manifest}}``
``GET /v1/sources/<source>``                            one source's manifest (versions oldest first)
``PUT /v1/sources/<source>/last-known-good``            body ``{"version": "<id>", "namespace": "<ns>"}`` (at most
                                                        4 KiB; ``namespace`` optional: the source's own); the controller
``GET /v1/archives/<sha256>.tar.gz``                    the archive; ``Range`` supported (resume)
``GET /livez``, ``/readyz``, ``/metrics``               health (``/readyz`` also lists each source's polls)
======================================================  ==================================================

Two bearer tokens (``Authorization: Bearer <token>``, compared in constant time), each optional:

- the **write token** guards the one write, ``PUT .../last-known-good`` (the controller's), and
  is read from its file at each write, so a rotated Secret is picked up;
- the **token** guards every ``/v1`` request, reads included (and writes, unless a write token
  is set). Pods' datadeployers cannot mount a Secret of the repository's namespace, so the
  chart leaves reads open and relies on the sha256 checks (docs/data-plane.md, "Threat model").

Health and metrics stay open for the kubelet and Prometheus. ``/readyz`` is 503 until every
source has a version; ``/livez`` is 503 while a poll is wedged (:mod:`sidecars.datarepo.polling`).
Archives are immutable and content-addressed, so they are served with a long ``Cache-Control``.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from autocrane import manifests, metrics, serving, untrusted
from sidecars.datarepo import polling, store

MAX_LKG_BODY = 4096
"""Largest ``PUT .../last-known-good`` body read: ``{"version": "<id>"}`` is under 200 bytes."""


def app(repo: store.Store, poller: polling.Poller, token: str | None = None,
        write_token: Callable[[], str] | None = None) -> Starlette:
    """``token`` guards every ``/v1`` request; ``write_token`` (called at each write) guards writes instead."""
    def matches(request: Request, expected: str) -> bool:
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {expected}".encode())

    def authorized(request: Request) -> bool:
        return not token or matches(request, token)

    def may_write(request: Request) -> bool:
        if write_token is None:
            return authorized(request)
        try:
            expected = write_token()
        except OSError:
            return False  # an unreadable token file refuses writes; it never opens them
        return bool(expected) and matches(request, expected)

    def denied() -> Response:
        return PlainTextResponse("missing or wrong bearer token", 401, headers={"WWW-Authenticate": "Bearer"})

    async def manifest(request: Request) -> Response:
        if not authorized(request):
            return denied()
        return JSONResponse({"sources": {name: m.to_json() for name, m in sorted(repo.all().items())}})

    async def source(request: Request) -> Response:
        if not authorized(request):
            return denied()
        name = request.path_params["source"]
        found = repo.manifest(name)
        if found is None:
            return PlainTextResponse(f"no source {untrusted.shown(name)}", 404)
        return JSONResponse(found.to_json())

    async def last_known_good(request: Request) -> Response:
        if not may_write(request):
            return denied()
        try:
            body = untrusted.json_value(await serving.read_body(request, MAX_LKG_BODY), what="body",
                                        max_bytes=MAX_LKG_BODY)
            version = manifests.check_version(body["version"])  # its error quotes the value cut short
            namespace = None if body.get("namespace") is None else manifests.check_namespace(body["namespace"])
        except serving.BodyTooLarge as error:
            return error.response()
        except (ValueError, KeyError, TypeError) as error:
            return PlainTextResponse(f'expected {{"version": "<id>", "namespace": "<ns>"}}: {error}', 400)  # cut
        try:
            updated = repo.set_last_known_good(request.path_params["source"], version, namespace)
        except KeyError as error:
            return PlainTextResponse(str(error.args[0]), 404)
        return JSONResponse(updated.to_json())

    async def archive(request: Request) -> Response:
        if not authorized(request):
            return denied()
        try:
            path = repo.archive(request.path_params["sha256"])
        except manifests.ManifestError:
            return PlainTextResponse("expected /v1/archives/<sha256>.tar.gz", 400)
        if not path.is_file():
            return PlainTextResponse("no such archive", 404)
        return FileResponse(path, media_type="application/gzip",
                            headers={"Cache-Control": "public, max-age=31536000, immutable"})

    async def readyz(request: Request) -> Response:
        body = poller.health()
        return JSONResponse(body, 200 if body["ready"] else 503)

    return Starlette(routes=[
        Route("/v1/manifest", manifest),
        Route("/v1/sources/{source:path}/last-known-good", last_known_good, methods=["PUT"]),
        Route("/v1/sources/{source:path}", source),
        Route("/v1/archives/{sha256}.tar.gz", archive),
        serving.livez_route(alive=poller.wedged),
        Route("/readyz", readyz),
        metrics.route(),
    ])
