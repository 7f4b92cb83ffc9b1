"""The controller's client of the data repository: read the manifest, set the last known good.

``GET /v1/manifest`` each pass that has pods with data sets (one small JSON document), and
``PUT /v1/sources/<source>/last-known-good`` with the rollout's namespace when a rollout
completes (called by :mod:`controller.apiserver.writer`, the only writer): the repository keeps
one last known good per namespace, so two namespaces sharing a source never overwrite each
other's. With a token file, requests carry ``Authorization: Bearer <token>``, read from the file
at each request so a rotated token is used.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import aiohttp

from autocrane import errors, manifests


class RepositoryError(errors.AutocraneError):
    """The data repository could not be reached or answered something unusable."""


class Repository:
    """Use as ``async with Repository(url) as repo``."""

    def __init__(self, url: str, *, token_file: Path | None = None, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token_file = token_file
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Repository:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout), trust_env=True,
                                              headers={"User-Agent": "autocrane-controller"})
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    def _headers(self) -> dict[str, str]:
        if self.token_file is None:
            return {}
        return {"Authorization": f"Bearer {self.token_file.read_text().strip()}"}

    async def _call(self, method: str, path: str, body: object = None) -> bytes:
        if self._session is None:
            raise RuntimeError("use Repository as an async context manager")
        try:
            async with self._session.request(method, self.url + path, json=body, headers=self._headers()) as answer:
                data = await answer.read()
                if answer.status != 200:
                    raise RepositoryError(f"{method} {path}: {answer.status}: {data[:200].decode(errors='replace')}")
                return data
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise RepositoryError(f"{method} {path}: no answer: {type(exc).__name__}: {exc}") from None

    async def manifest(self) -> dict[str, manifests.SourceManifest]:
        try:
            return manifests.parse_manifest(await self._call("GET", "/v1/manifest"))
        except manifests.ManifestError as exc:
            raise RepositoryError(f"unusable manifest: {exc}") from None

    async def set_last_known_good(self, source: str, version: str, namespace: str | None = None) -> None:
        body = {"version": version} | ({"namespace": namespace} if namespace else {})
        await self._call("PUT", f"/v1/sources/{urllib.parse.quote(source)}/last-known-good", body)
