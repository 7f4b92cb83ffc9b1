"""Polling sources for new content: git, HTTP(S) and a local directory (blocking I/O).

A poll returns None when nothing changed since ``previous`` (the origin recorded with the
source's last poll), or a :class:`Snapshot`: a tree on disk plus its origin. The caller packs
the tree; identical content never makes a new version, whatever the origin says.

- **git**: one shallow working copy per source; ``git fetch --depth 1 origin <ref>``, then a
  forced checkout of ``FETCH_HEAD`` and ``git clean``. Unchanged when the commit is the same.
  Credentials are passed in the environment (``GIT_CONFIG_*`` for an HTTP header,
  ``GIT_SSH_COMMAND`` for a key), never on the command line where ``ps`` would show them, and
  git never prompts. Whoever owns them, the working copy and a local source the configuration
  names are ``safe.directory`` entries (a volume written under another UID is not "dubious");
  and a UID without a passwd entry, which ssh refuses to run for, gets one for git
  through nss_wrapper when it is installed (the datarepository image has it).
- **http**: a conditional GET (``If-None-Match``/``If-Modified-Since``); 304 means unchanged,
  and so does a body with the same sha256 as last time (servers without validators).
  An archive is unpacked with the same checks as in the pods.
- **directory**: unchanged while a fingerprint of (path, size, mtime, mode, link target) of
  every entry stays the same; the fingerprint is taken again after packing, and a tree that
  changed meanwhile is not published (the next poll takes it).
"""

from __future__ import annotations

import base64
import ctypes.util
import dataclasses
import functools
import hashlib
import os
import pwd
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from autocrane import errors
from sidecars import archives
from sidecars.datarepo import config

GIT_TIMEOUT = 600


class SourceError(errors.AutocraneError):
    """A poll failed; the message says which step and why."""


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    tree: Path
    origin: dict[str, str]
    exclude: tuple[str, ...] = ()
    """Top-level names left out of the archive (``.git``)."""


def _read(path: Path | None) -> str | None:
    return None if path is None else path.read_text().strip()


def git_environment(spec: config.Git, work: Path) -> dict[str, str]:
    """The environment of every git command of a source whose working directory is ``work``."""
    env = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"}
    env["GIT_CONFIG_GLOBAL"] = str(_trust(work, _local_repository(spec.url)))
    header = None
    if spec.token_file:
        header = f"Authorization: Bearer {_read(spec.token_file)}"
    elif spec.username_file and spec.password_file:
        pair = f"{_read(spec.username_file)}:{_read(spec.password_file)}".encode()
        header = f"Authorization: Basic {base64.b64encode(pair).decode()}"
    if header:
        env |= {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader", "GIT_CONFIG_VALUE_0": header}
    env |= _passwd_entry(work)
    if spec.ssh_key_file:
        hosts = f"-o UserKnownHostsFile={spec.known_hosts_file}" if spec.known_hosts_file else \
            "-o StrictHostKeyChecking=accept-new"
        env["GIT_SSH_COMMAND"] = f"ssh -i {spec.ssh_key_file} -o IdentitiesOnly=yes {hosts}"
    return env


def _local_repository(url: str) -> str | None:
    """The path of a source on this machine's file system (``file://`` or an absolute path), else None."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        return os.path.realpath(urllib.parse.unquote(parts.path))
    return os.path.realpath(url) if url.startswith("/") else None


def _trust(work: Path, local: str | None) -> Path:
    """A global git config with the ``safe.directory`` entries of this source; its path.

    Git refuses repositories another UID owns. The working copy is ours whoever wrote it last (a
    volume kept across a change of ``runAsUser``), and a local source is one the configuration
    names. A global file because git clears command-line settings (``GIT_CONFIG_COUNT``) for the
    ``upload-pack`` it runs in a local source.
    """
    trusted = [os.path.realpath(work / "checkout")]
    if local is not None:
        trusted += [local, f"{local}/.git"]
    quoted = ('"' + path.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"' for path in trusted)
    work.mkdir(parents=True, exist_ok=True)
    path = work / "gitconfig"
    path.write_text("[safe]\n" + "".join(f"\tdirectory = {value}\n" for value in quoted))
    return path


@functools.cache
def _nss_wrapper() -> str | None:
    return ctypes.util.find_library("nss_wrapper")


def _passwd_entry(work: Path) -> dict[str, str]:
    """For a UID without a passwd entry, one that git and ssh see (through nss_wrapper), homed in ``work``.

    ssh exits with "No user exists for uid" otherwise; a pod may run as any UID (``runAsUser``,
    OpenShift's per-namespace UIDs) and, with a read-only root file system, /etc/passwd cannot
    be edited as git-sync's ``--add-user`` does. Without nss_wrapper nothing is added.
    """
    uid, gid = os.getuid(), os.getgid()
    try:
        pwd.getpwuid(uid)
        return {}
    except KeyError:
        pass
    library = _nss_wrapper()
    if library is None:
        return {}
    work.mkdir(parents=True, exist_ok=True)
    (work / "passwd").write_text(f"autocrane:x:{uid}:{gid}:AutoCrane:{work}:/usr/sbin/nologin\n")
    (work / "group").write_text(f"autocrane:x:{gid}:\n")
    return {"LD_PRELOAD": library, "NSS_WRAPPER_PASSWD": str(work / "passwd"),
            "NSS_WRAPPER_GROUP": str(work / "group"), "HOME": str(work)}


def _git(work: Path, env: dict[str, str], *args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=work, env={**os.environ, **env}, capture_output=True,
                              text=True, timeout=GIT_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SourceError(f"git {args[0]}: {error}") from None
    if done.returncode != 0:
        raise SourceError(f"git {args[0]} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout.strip()


def poll_git(spec: config.Git, work: Path, previous: dict[str, str]) -> Snapshot | None:
    env = git_environment(spec, work)
    tree = work / "checkout"
    if not (tree / ".git").is_dir():
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        _git(tree, env, "init", "--quiet")
    for lock in (tree / ".git").glob("*.lock"):  # left by a git killed mid-fetch
        lock.unlink(missing_ok=True)
    _git(tree, env, "fetch", "--quiet", "--depth", "1", "--no-tags", spec.url, spec.ref)
    commit = _git(tree, env, "rev-parse", "FETCH_HEAD^{commit}")
    origin = {"commit": commit, "ref": spec.ref, "url": _without_credentials(spec.url)}
    if previous.get("commit") == commit:
        return None
    _git(tree, env, "-c", "advice.detachedHead=false", "checkout", "--quiet", "--force", "FETCH_HEAD")
    _git(tree, env, "clean", "-qffdx")
    return Snapshot(tree, origin, exclude=(".git",))


def _without_credentials(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('@', 1)[-1]}" if rest else url


def poll_http(spec: config.Http, work: Path, previous: dict[str, str], timeout: float = 60.0) -> Snapshot | None:
    request = urllib.request.Request(spec.url)
    if previous.get("etag"):
        request.add_header("If-None-Match", previous["etag"])
    if previous.get("lastModified"):
        request.add_header("If-Modified-Since", previous["lastModified"])
    if spec.token_file:
        request.add_header("Authorization", f"Bearer {_read(spec.token_file)}")
    work.mkdir(parents=True, exist_ok=True)
    body = work / "download"
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(body, "wb") as out:
            while chunk := response.read(archives.CHUNK):
                out.write(chunk)
                digest.update(chunk)
            origin = {"url": spec.url, "etag": response.headers.get("ETag") or "",
                      "lastModified": response.headers.get("Last-Modified") or "", "contentSha256": digest.hexdigest()}
    except urllib.error.HTTPError as error:
        error.close()  # it holds the answer's connection
        if error.code == 304:
            return None
        raise SourceError(f"GET {spec.url}: HTTP {error.code}") from None
    except (OSError, ValueError) as error:
        raise SourceError(f"GET {spec.url}: {error}") from None
    if previous.get("contentSha256") == origin["contentSha256"]:
        return None
    tree = work / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    if spec.format == "file":
        tree.mkdir()
        os.replace(body, tree / spec.filename)
        return Snapshot(tree, origin)
    try:
        with open(body, "rb") as data:
            archives.extract(data, tree, mode="r|*")
    except archives.ArchiveError as error:
        raise SourceError(f"{spec.url}: {error}") from None
    finally:
        body.unlink(missing_ok=True)
    return Snapshot(tree, origin)


def fingerprint(root: Path) -> str:
    digest = hashlib.sha256()
    for directory, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = os.path.join(directory, name)
            info = os.lstat(path)
            target = os.readlink(path) if os.path.islink(path) else ""
            digest.update(f"{os.path.relpath(path, root)}\0{info.st_size}\0{info.st_mtime_ns}\0"
                          f"{info.st_mode}\0{target}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def poll_directory(spec: config.Directory, previous: dict[str, str]) -> Snapshot | None:
    if not spec.path.is_dir():
        raise SourceError(f"directory {spec.path} does not exist")
    mark = fingerprint(spec.path)
    if previous.get("fingerprint") == mark:
        return None
    return Snapshot(spec.path, {"path": str(spec.path), "fingerprint": mark})


def poll(source: config.Source, work: Path, previous: dict[str, str]) -> Snapshot | None:
    kind = source.kind
    if isinstance(kind, config.Git):
        return poll_git(kind, work, previous)
    if isinstance(kind, config.Http):
        return poll_http(kind, work, previous)
    return poll_directory(kind, previous)
