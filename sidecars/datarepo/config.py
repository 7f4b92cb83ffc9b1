"""The data repository's configuration file (YAML), validated into frozen records.

::

    sources:
      - name: models                 # what pods write in data.autocrane.io/<set>: <source>
        every: 60                    # seconds between polls (default 60)
        keep: 10                     # versions kept besides the last known good (default 10)
        git:
          url: https://git.example.com/ml/models.git
          ref: main                  # branch, tag or commit (default HEAD)
          tokenFile: /etc/creds/token          # optional: "Authorization: Bearer <token>"
          usernameFile: /etc/creds/username    # optional, with passwordFile: basic auth
          passwordFile: /etc/creds/password
          sshKeyFile: /etc/creds/id_ed25519    # optional, for ssh:// URLs
          knownHostsFile: /etc/creds/known_hosts
      - name: words
        http:
          url: https://example.com/words.tar.gz   # polled with If-None-Match / If-Modified-Since
          format: archive            # archive (.tar, .tar.gz...: its tree) or file (one file); default by suffix
          filename: words.txt        # format file: the file's name in the tree (default: the URL's basename)
          tokenFile: /etc/creds/http-token
      - name: local
        directory:
          path: /mnt/shared/local

Credentials are read from their files at every poll, so rotated secrets are picked up.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from pathlib import Path
from typing import Any

import yaml

from autocrane import errors, manifests

KINDS = ("git", "http", "directory")


@dataclasses.dataclass(frozen=True, slots=True)
class Git:
    url: str
    ref: str = "HEAD"
    token_file: Path | None = None
    username_file: Path | None = None
    password_file: Path | None = None
    ssh_key_file: Path | None = None
    known_hosts_file: Path | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Http:
    url: str
    format: str = "archive"
    filename: str = ""
    token_file: Path | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Directory:
    path: Path


@dataclasses.dataclass(frozen=True, slots=True)
class Source:
    name: str
    kind: Git | Http | Directory
    every: float = 60.0
    """Seconds between polls."""
    keep: int = 10
    """Newest versions kept; the last known good is kept as well."""


def _field(body: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    value = body.get(key, default)
    if value is None and default is None:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        expected = "a number" if isinstance(kind, tuple) else kind.__name__
        raise errors.ConfigError(f"{where}.{key}: expected {expected}, got {value!r}")
    return value


def _path(body: dict[str, Any], key: str, where: str) -> Path | None:
    value = _field(body, key, where, str)
    return None if value is None else Path(value)


def _kind(name: str, body: Any, where: str) -> Git | Http | Directory:
    if not isinstance(body, dict):
        raise errors.ConfigError(f"{where}: expected a mapping")
    known = {"git": {"url", "ref", "tokenFile", "usernameFile", "passwordFile", "sshKeyFile", "knownHostsFile"},
             "http": {"url", "format", "filename", "tokenFile"}, "directory": {"path"}}[name]
    if unknown := set(body) - known:
        raise errors.ConfigError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    if name == "directory":
        path = _field(body, "path", where, str, "")
        if not path:  # Path("") is the working directory: never package that by accident
            raise errors.ConfigError(f"{where}.path is required")
        return Directory(Path(path))
    url = _field(body, "url", where, str, "")
    if not url:
        raise errors.ConfigError(f"{where}.url is required")
    if name == "git":
        if bool(body.get("usernameFile")) != bool(body.get("passwordFile")):
            raise errors.ConfigError(f"{where}: usernameFile and passwordFile go together")
        return Git(url, _field(body, "ref", where, str, "HEAD"), _path(body, "tokenFile", where),
                   _path(body, "usernameFile", where), _path(body, "passwordFile", where),
                   _path(body, "sshKeyFile", where), _path(body, "knownHostsFile", where))
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise errors.ConfigError(f"{where}.url: expected an http(s) URL, got {url!r}")
    is_archive = url.split("?")[0].endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"))
    fmt = _field(body, "format", where, str, "archive" if is_archive else "file")
    if fmt not in ("archive", "file"):
        raise errors.ConfigError(f"{where}.format: expected archive or file, got {fmt!r}")
    filename = _field(body, "filename", where, str, "") or urllib.parse.unquote(
        urllib.parse.urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]) or "data"
    if "/" in filename or filename in (".", ".."):
        raise errors.ConfigError(f"{where}.filename: expected a plain file name, got {filename!r}")
    return Http(url, fmt, filename, _path(body, "tokenFile", where))


def parse(document: Any) -> list[Source]:
    """Validate a parsed YAML document; errors name the offending key."""
    if not isinstance(document, dict) or not isinstance(document.get("sources"), list):
        raise errors.ConfigError("config: expected a mapping with a 'sources' list")
    sources: list[Source] = []
    for index, body in enumerate(document["sources"]):
        where = f"sources[{index}]"
        if not isinstance(body, dict):
            raise errors.ConfigError(f"{where}: expected a mapping")
        try:
            name = manifests.check_source(body.get("name"), f"{where}.name")
        except manifests.ManifestError as error:
            raise errors.ConfigError(str(error)) from None
        kinds = [k for k in KINDS if k in body]
        if len(kinds) != 1:
            raise errors.ConfigError(f"{where} ({name}): expected exactly one of {', '.join(KINDS)}")
        if unknown := set(body) - {"name", "every", "keep", *KINDS}:
            raise errors.ConfigError(f"{where} ({name}): unknown keys {sorted(unknown)}")
        every = _field(body, "every", where, (int, float), 60)
        keep = _field(body, "keep", where, int, 10)
        if every <= 0 or keep < 1:
            raise errors.ConfigError(f"{where} ({name}): every must be > 0 and keep >= 1")
        if name in {s.name for s in sources}:
            raise errors.ConfigError(f"{where}: source {name!r} is defined twice")
        sources.append(Source(name, _kind(kinds[0], body[kinds[0]], f"{where}.{kinds[0]}"), float(every), keep))
    return sources


def load(path: Path) -> list[Source]:
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise errors.ConfigError(f"{path}: {error}") from None
    return parse(document)
