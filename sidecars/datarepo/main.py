"""``autocrane datarepository``: poll sources into versioned archives and serve them over HTTP(S)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import ssl
from pathlib import Path

from autocrane import errors, logs, serving
from sidecars.datarepo import config, polling, server, store

log = logging.getLogger("sidecars.datarepo")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="autocrane datarepository",
        description="Poll git, HTTP and directory sources into immutable, content-addressed versions "
                    "and serve manifests and archives (see docs/data-plane.md).")
    p.add_argument("--config", type=Path, required=True, help="YAML file listing the sources")
    p.add_argument("--data-dir", type=Path, required=True, help="where archives, manifests and work trees live")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--token-file", type=Path, help="require 'Authorization: Bearer <token>' on /v1 requests")
    p.add_argument("--tls-cert-file", type=Path, help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--tls-key-file", type=Path, help="the certificate's private key (PEM)")
    logs.add_arguments(p)
    return p


async def serve(repo: store.Store, poller: polling.Poller, host: str, port: int, token: str | None,
                context: ssl.SSLContext | None) -> None:
    site = serving.Site("repository", server.app(repo, poller, token), host, port, ssl_context=context)
    poller.start()
    try:
        await serving.run(serving.Serving([site]))
    finally:
        await asyncio.to_thread(poller.stop)


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    logs.setup_from_arguments(args)
    try:
        configured = config.load(args.config)
    except errors.ConfigError as error:
        log.error("%s", error)
        return 2
    if bool(args.tls_cert_file) != bool(args.tls_key_file):
        log.error("--tls-cert-file and --tls-key-file go together")
        return 2
    context = None
    if args.tls_cert_file:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert_file, args.tls_key_file)
    token = args.token_file.read_text().strip() if args.token_file else None
    repo = store.Store(args.data_dir)
    poller = polling.Poller(repo, configured)
    log.info("sources: %s", ", ".join(f"{s.name} ({type(s.kind).__name__.lower()}, every {s.every:g}s)"
                                      for s in configured) or "(none)")
    asyncio.run(serve(repo, poller, args.host, args.port, token, context))
    return 0
