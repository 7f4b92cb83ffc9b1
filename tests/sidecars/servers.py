"""Real HTTP servers on 127.0.0.1 for the sidecar tests: an ASGI app under uvicorn, and a
hand-rolled data repository whose misbehaviour (dropped connections, lies) the test controls."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from autocrane import manifests


@contextlib.contextmanager
def serve_asgi(app: Any) -> Iterator[str]:
    """Serve ``app`` on a free 127.0.0.1 port in a thread; yield its base URL.

    The socket listens before uvicorn starts, so nothing waits: connections made meanwhile queue
    in its backlog until uvicorn accepts them.
    """
    sock = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@dataclass
class FakeRepository:
    """Serves ``/v1/sources/<name>`` and ``/v1/archives/<sha>.tar.gz`` from memory, with Range."""

    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    archives: dict[str, bytes] = field(default_factory=dict)
    drop_after: int | None = None
    """Close the connection after this many body bytes, once."""
    ignore_range: bool = False
    """Answer every archive request with 200 and the whole body, like a server without Range."""
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    """(path, Range header) of every request."""

    def add(self, source: str, version: str, data: bytes, *, sha256: str | None = None, size: int | None = None,
            lkg: bool = False) -> manifests.DataRequest:
        """Publish ``data`` as ``version``; ``sha256``/``size`` let the manifest lie about it."""
        real = hashlib.sha256(data).hexdigest()
        claimed = sha256 or real
        self.archives[claimed] = data
        entry = {"version": version, "sha256": claimed, "size": len(data) if size is None else size,
                 "created": "2026-01-02T03:04:05Z", "origin": {}}
        manifest = self.sources.setdefault(source, {"source": source, "lastKnownGood": None, "versions": []})
        manifest["versions"].append(entry)
        if lkg:
            manifest["lastKnownGood"] = version
        return manifests.DataRequest(version, claimed)

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        repo = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                repo.requests.append((self.path, self.headers.get("Range")))
                if match := re.fullmatch(r"/v1/sources/(.+)", self.path):
                    body = json.dumps(repo.sources.get(match[1])).encode()
                    self._send(200 if match[1] in repo.sources else 404, body, {})
                elif (match := re.fullmatch(r"/v1/archives/([0-9a-f]{64})\.tar\.gz", self.path)) and \
                        match[1] in repo.archives:
                    self._archive(repo.archives[match[1]])
                else:
                    self._send(404, b"not found", {})

            def _archive(self, data: bytes) -> None:
                start = 0
                if (spec := self.headers.get("Range")) and not repo.ignore_range:
                    start = int(spec.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                        return
                    headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
                    status = 206
                else:
                    headers, status = {}, 200
                body = data[start:]
                if repo.drop_after is not None:
                    cut, repo.drop_after = repo.drop_after, None
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self._send(status, body, headers)

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
