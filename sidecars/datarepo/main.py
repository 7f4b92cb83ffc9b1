"""``autocrane datarepository``: poll sources into versioned archives and serve them over HTTP(S)."""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import ssl
from collections.abc import Callable
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
    p.add_argument("--token-file", type=Path,
                   help="require 'Authorization: Bearer <token>' on every /v1 request, reads included")
    p.add_argument("--write-token-file", type=Path,
                   help="require 'Authorization: Bearer <token>' on writes (PUT .../last-known-good) only; "
                        "read at each write, so a rotated token is used (reads stay open unless --token-file)")
    p.add_argument("--stale-after", type=float, default=polling.DEFAULT_STALE_AFTER, metavar="SECONDS",
                   help="a source without a successful poll this long is reported stale on /readyz and in "
                        "metrics; a poll running this long fails /livez (default %(default).0f)")
    p.add_argument("--tls-cert-file", type=Path, help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--tls-key-file", type=Path, help="the certificate's private key (PEM)")
    logs.add_arguments(p)
    return p


def _token(path: Path, flag: str) -> str:
    """The token in ``path``; raises ConfigError when it cannot be read or is empty (which would open the API)."""
    try:
        token = path.read_text().strip()
    except OSError as error:
        raise errors.ConfigError(f"{flag} {path}: {error.strerror or error}") from None
    if not token:
        raise errors.ConfigError(f"{flag} {path}: the file is empty")
    return token


def _current_token(path: Path) -> str:
    """The write token now; "" (every write refused) while its file is unreadable or empty."""
    try:
        return _token(path, "--write-token-file")
    except errors.ConfigError as error:
        log.error("refusing writes: %s", error)
        return ""


async def serve(repo: store.Store, poller: polling.Poller, host: str, port: int, token: str | None,
                context: ssl.SSLContext | None, write_token: Callable[[], str] | None = None) -> None:
    site = serving.Site("repository", server.app(repo, poller, token, write_token), host, port, ssl_context=context)
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
        token = _token(args.token_file, "--token-file") if args.token_file else None
        write_token = None
        if args.write_token_file:
            _token(args.write_token_file, "--write-token-file")
            write_token = functools.partial(_current_token, args.write_token_file)
    except errors.ConfigError as error:
        log.error("%s", error)
        return 2
    if args.stale_after <= 0:
        log.error("--stale-after must be > 0")
        return 2
    if bool(args.tls_cert_file) != bool(args.tls_key_file):
        log.error("--tls-cert-file and --tls-key-file go together")
        return 2
    context = None
    if args.tls_cert_file:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert_file, args.tls_key_file)
    if token is None and write_token is None:
        log.warning("neither --write-token-file nor --token-file: anyone who reaches the repository may set "
                    "last known good versions")
    repo = store.Store(args.data_dir)
    poller = polling.Poller(repo, configured, stale_after=args.stale_after)
    log.info("sources: %s", ", ".join(f"{s.name} ({type(s.kind).__name__.lower()}, every {s.every:g}s)"
                                      for s in configured) or "(none)")
    asyncio.run(serve(repo, poller, args.host, args.port, token, context, write_token))
    return 0
