"""``autocrane testworkload``: a demo app whose watchdog fails on demand and that shows its data version.

- ``GET /watchdog``: 200 ``ok``; 500 after ``POST /fail``, until ``POST /recover``.
- ``GET /data``: for each ``--data-path``, the data version it currently sees, read from the
  data set's symlink (``.versions/<name>/<version>-<random>``), e.g. ``{"/data/models": "v3"}``
  (null when the path is missing).
- ``POST /notify``: the datadeployer's after-swap hook; the last one received is shown by
  ``GET /data`` under ``notified``.
- ``GET /ping``: 200.

No authentication: it is a test fixture, not something to expose.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from autocrane import logs, serving, untrusted

MAX_NOTIFY_BYTES = 64 << 10
"""Largest notification body read (the datadeployer's is about 200 bytes)."""


def seen_version(path: Path) -> str | None:
    """The version behind a datadeployer symlink, or None when there is none."""
    try:
        target = os.readlink(path)
    except OSError:
        return None
    return Path(target).name.rsplit("-", 1)[0]


def app(data_paths: list[Path]) -> Starlette:
    state: dict[str, Any] = {"failing": False, "notified": None}

    async def watchdog(request: Request) -> Response:
        return PlainTextResponse("failing on purpose", 500) if state["failing"] else PlainTextResponse("ok")

    async def fail(request: Request) -> Response:
        state["failing"] = True
        return PlainTextResponse("will fail")

    async def recover(request: Request) -> Response:
        state["failing"] = False
        return PlainTextResponse("recovered")

    async def data(request: Request) -> Response:
        return JSONResponse({"versions": {str(p): seen_version(p) for p in data_paths}, "notified": state["notified"]})

    async def notify(request: Request) -> Response:
        try:
            state["notified"] = untrusted.json_value(await serving.read_body(request, MAX_NOTIFY_BYTES),
                                                     what="notification", max_bytes=MAX_NOTIFY_BYTES)
        except serving.BodyTooLarge as error:
            return error.response()
        except untrusted.UntrustedValueError as error:
            return PlainTextResponse(f"expected JSON: {error}", 400)
        return PlainTextResponse("ok")

    return Starlette(routes=[
        Route("/watchdog", watchdog), Route("/fail", fail, methods=["POST"]),
        Route("/recover", recover, methods=["POST"]), Route("/data", data),
        Route("/notify", notify, methods=["POST"]), serving.livez_route("/ping"),
    ])


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="autocrane testworkload",
                                description="A demo app: a watchdog failing on demand; the data version it sees.")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--data-path", type=Path, action="append", default=[],
                   help="a data set path to report in GET /data (repeatable)")
    logs.add_arguments(p)
    args = p.parse_args(argv)
    logs.setup_from_arguments(args)
    site = serving.Site("testworkload", app(args.data_path), args.host, args.port, limits=serving.IN_POD)
    asyncio.run(serving.run(serving.Serving([site], graceful_timeout=2)))
    return 0
