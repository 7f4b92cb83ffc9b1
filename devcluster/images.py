"""AutoCrane's container images, built here with buildah from the Dockerfiles as written: no registry, no Docker.

- ``autocrane`` (``localhost/autocrane:<hash>``), from ``Dockerfile.webhook``: the webhook and the
  controller.
- ``sidecar`` (``localhost/autocrane-sidecar:<hash>``), ``Dockerfile.sidecar`` target ``sidecar``:
  datadeployer, watchdoghealthz and testworkload, the core dependencies only.
- ``datarepository`` (``localhost/autocrane-datarepository:<hash>``), ``Dockerfile.sidecar`` target
  ``datarepository``: the data repository, with git and ssh.

- **The base** is made here from Debian packages (mmdebstrap: bookworm's ``python3`` and
  ``ca-certificates``, without docs, man pages or locales) and passed as the Dockerfiles' ``BASE``
  build argument; users with Docker keep the default, the public ``python:3.11-slim``.
- **Cached by content.** An image's tag is a hash of its Dockerfile and target, the build context
  (the repository minus ``.dockerignore``) and the base's recipe. :func:`ensure_images` builds only
  the images whose hash has no archive yet, so a warm call hashes files and runs nothing.
- **Outputs:** an OCI archive per image in ``~/.cache/autocrane/images`` (for ``ctr -n k8s.io images
  import``); buildah's storage beside it (``--root``/``--runroot``), never the system's.
- buildah's layer cache makes a rebuild after a change to the sources cheap (the dependencies
  are installed in a layer before the sources are copied); only the layers of the current
  images' builds are kept, so the storage does not grow with every change.
- Build steps that reach PyPI get the host's CA bundle bind-mounted (egress TLS may be intercepted);
  a bind mount is never committed into a layer.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from devcluster import build, hostpackages

REPO = Path(__file__).resolve().parents[1]

OS_PACKAGES = ("buildah", "runc", "mmdebstrap", "uidmap")

RECIPE_VERSION = "1"
"""Part of every hash: bump it when this module changes how an image is built."""

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

Progress = Callable[[str], None]

_STEP = re.compile(r"(\[\d+/\d+\] )?STEP \d+/\d+: ")
"""How buildah bud announces each instruction ("[2/4] STEP 3/9: COPY ..." in a multi-stage build)."""
_LAYER = re.compile(r"--> (?:Using cache )?([0-9a-f]{11,64})")
"""How it names the image of each step, made or taken from its layer cache."""


class ImageError(RuntimeError):
    """An image could not be built; the message says which step failed, with its output's tail."""


@dataclasses.dataclass(frozen=True, slots=True)
class Image:
    name: str
    ref: str
    """``localhost/autocrane-sidecar:<content hash>``: the name the archive carries."""
    archive: Path
    """An OCI archive, for ``ctr -n k8s.io images import``."""
    size: int
    """Bytes unpacked (the sum of its layers)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Spec:
    """One image: which Dockerfile and target make it."""

    name: str
    repository: str
    dockerfile: str
    target: str | None = None


SPECS = (
    Spec("autocrane", "localhost/autocrane", "Dockerfile.webhook"),
    Spec("sidecar", "localhost/autocrane-sidecar", "Dockerfile.sidecar", "sidecar"),
    Spec("datarepository", "localhost/autocrane-datarepository", "Dockerfile.sidecar", "datarepository"),
)

BASE_REPOSITORY = "localhost/autocrane-base"

MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
"""The base's apt sources (also what the Dockerfiles' ``apt-get install`` steps use)."""

BASE_MMDEBSTRAP = (
    "--variant=apt",  # Essential, plus apt: the datarepository image installs git with it
    "--include=python3,ca-certificates",
    # merged /usr from mmdebstrap itself: the usrmerge package would pull in perl (47 MB)
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    *(f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("man", "doc", "info", "locale", "lintian")),
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*',
    "bookworm",
)
BASE_CONFIG = (
    "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "--env", "LANG=C.UTF-8",
    "--cmd", "python3",
)


def images_dir() -> Path:
    return build.cache_dir() / "images"


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def base_ref() -> str:
    """The base image's ref; its tag is the hash of its recipe."""
    return f"{BASE_REPOSITORY}:{_digest(RECIPE_VERSION, *BASE_MMDEBSTRAP, *MIRRORS, *BASE_CONFIG)}"


# --- the build context and its hash ---------------------------------------------------------------

def ignore_patterns(text: str) -> list[re.Pattern[str]]:
    """The patterns of a ``.dockerignore``, as regular expressions over slash-separated paths.

    ``*`` and ``?`` stay within one path element, ``**`` spans any number of them, as in Docker.
    Exceptions (``!pattern``) are refused: what they re-include is subtle enough that this hash and
    buildah could disagree on it, and then an image would not be rebuilt when it should be.
    """
    patterns = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("!"):
            raise ImageError(f".dockerignore line {number}: exceptions ({line!r}) are not supported here")
        line = os.path.normpath(line.lstrip("/")).replace(os.sep, "/")
        patterns.append(re.compile(_translate(line)))
    return patterns


def _translate(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 1)) > i:
            body = pattern[i + 1:end]
            out.append("[" + ("^" + body[1:] if body.startswith("^") else body) + "]")
            i = end + 1
        elif pattern[i] == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def context_files(root: Path) -> list[str]:
    """Every file of the build context at ``root`` (slash-separated, sorted): ``.dockerignore`` applied."""
    ignore_file = root / ".dockerignore"
    patterns = ignore_patterns(ignore_file.read_text()) if ignore_file.exists() else []

    def ignored(relative: str) -> bool:
        return any(p.fullmatch(relative) for p in patterns)

    found = []
    for directory, dirnames, filenames in os.walk(root):
        base = os.path.relpath(directory, root)
        prefix = "" if base == "." else base.replace(os.sep, "/") + "/"
        dirnames[:] = sorted(d for d in dirnames if not ignored(prefix + d))  # an ignored directory takes its contents
        found += [prefix + f for f in filenames if not ignored(prefix + f)]
    return sorted(found)


def content_hash(spec: Spec, root: Path, base: str) -> str:
    """What ``spec``'s image is made of, hashed: Dockerfile, target, base and every context file."""
    digest = hashlib.sha256()
    for part in (RECIPE_VERSION, spec.dockerfile, spec.target or "", base):
        digest.update(part.encode() + b"\0")
    digest.update((root / spec.dockerfile).read_bytes() + b"\0")
    for relative in context_files(root):
        path = root / relative
        info = os.lstat(path)
        digest.update(f"{relative}\0{info.st_mode & 0o111 != 0}\0".encode("utf-8", "surrogateescape"))
        if os.path.islink(path):
            digest.update(b"link\0" + os.readlink(path).encode("utf-8", "surrogateescape"))
        elif os.path.isfile(path):
            with open(path, "rb") as data:
                digest.update(hashlib.file_digest(data, "sha256").digest())
    return digest.hexdigest()[:16]


# --- buildah ---------------------------------------------------------------------------------------

class Buildah:
    """``buildah`` on storage of our own under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def command(self, *args: str) -> list[str]:
        return ["buildah", "--root", str(self.directory / "root"), "--runroot", str(self.directory / "run"),
                "--storage-driver", "overlay", *args]

    def run(self, *args: str, timeout: float = 600) -> str:
        try:
            done = subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ImageError(f"buildah {args[0]} did not finish within {timeout:.0f}s") from None
        if done.returncode != 0:
            raise ImageError(f"buildah {' '.join(args[:2])} failed ({done.returncode}):\n{_tail(done.stderr)}")
        return done.stdout.strip()

    def exists(self, ref: str) -> bool:
        done = subprocess.run(self.command("inspect", "--type", "image", ref), capture_output=True, timeout=60)
        return done.returncode == 0

    def size(self, ref: str) -> int:
        """Bytes unpacked: local storage keeps uncompressed layers, whose sizes the manifest lists."""
        manifest = json.loads(json.loads(self.run("inspect", "--type", "image", ref))["Manifest"])
        return sum(int(layer["size"]) for layer in manifest["layers"])

    def stream(self, args: Sequence[str], log: Path, progress: Progress, label: str, timeout: float) -> set[str]:
        """Run ``buildah bud``: its output to ``log``, each step to ``progress``; the IDs of its steps' images."""
        tail: collections.deque[str] = collections.deque(maxlen=40)
        layers: set[str] = set()
        deadline = time.monotonic() + timeout
        with open(log, "w") as out, subprocess.Popen(self.command(*args), stdout=subprocess.PIPE,
                                                     stderr=subprocess.STDOUT, text=True) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                tail.append(line)
                if _STEP.match(line):
                    progress(f"{label}: {line.strip()[:150]}")
                elif match := _LAYER.fullmatch(line.strip()):
                    layers.add(match.group(1))
                if time.monotonic() > deadline:
                    proc.kill()
                    raise ImageError(f"{label}: buildah did not finish within {timeout:.0f}s (log: {log})")
            if proc.wait() != 0:
                raise ImageError(f"{label}: buildah {args[0]} failed ({proc.returncode}); log {log}:\n{''.join(tail)}")
        return layers

    def prune(self, keep: set[str]) -> None:
        """Remove every untagged image whose ID does not start with one in ``keep`` (nor has children)."""
        for _ in range(10):  # a parent goes once its children have
            removed = False
            for line in self.run("images", "--all", "--noheading", "--no-trunc", "--format",
                                 "{{.ID}} {{.Name}}").splitlines():
                image_id, name = line.split()
                image_id = image_id.removeprefix("sha256:")
                if name != "<none>" or any(image_id.startswith(k) for k in keep):
                    continue
                done = subprocess.run(self.command("rmi", image_id), capture_output=True, timeout=120)
                removed |= done.returncode == 0
            if not removed:
                return


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _log(message: str) -> None:
    print(f"[autocrane images {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- building ----------------------------------------------------------------------------------------

def ensure_base(buildah: Buildah, work: Path, progress: Progress, *, force: bool = False) -> str:
    """The base image in buildah's storage, made from Debian packages unless already there."""
    ref = base_ref()
    if not force and buildah.exists(ref):
        return ref
    progress(f"base {ref}: mmdebstrap of Debian bookworm with python3 (about a minute)")
    started = time.monotonic()
    rootfs = work / "base-rootfs.tar"
    # SUITE TARGET -: the sources.list lines come from stdin, and the base keeps all three.
    command = ["mmdebstrap", "--quiet", *BASE_MMDEBSTRAP, str(rootfs), "-"]
    try:
        done = subprocess.run(command, input="\n".join(MIRRORS) + "\n", capture_output=True, text=True, timeout=1200)
    except subprocess.TimeoutExpired:
        raise ImageError("mmdebstrap did not finish within 20 minutes") from None
    if done.returncode != 0:
        raise ImageError(f"mmdebstrap failed ({done.returncode}):\n{_tail(done.stderr)}")
    container = buildah.run("from", "--pull=never", "scratch")
    try:
        buildah.run("add", container, str(rootfs), "/")
        buildah.run("config", *BASE_CONFIG, "--label", f"io.autocrane.recipe={ref.rpartition(':')[2]}", container)
        buildah.run("commit", "--quiet", "--rm", container, ref)
    except ImageError:
        subprocess.run(buildah.command("rm", container), capture_output=True, timeout=60)
        raise
    finally:
        rootfs.unlink(missing_ok=True)
    progress(f"base {ref}: made in {time.monotonic() - started:.0f}s ({buildah.size(ref) / 1e6:.0f} MB)")
    return ref


def _record(spec: Spec, tag: str) -> tuple[Path, Path]:
    stem = images_dir() / f"{spec.name}-{tag}"
    return stem.with_suffix(".oci.tar"), stem.with_suffix(".json")


def _layer_cache(specs: Sequence[tuple[Spec, str]]) -> set[str]:
    """The images the builds of the current images made or reused: the layer cache worth keeping."""
    keep: set[str] = set()
    for spec, tag in specs:
        record = _record(spec, tag)[1]
        if record.exists():
            keep.update(json.loads(record.read_text()).get("layers", []))
    return keep


def cached(spec: Spec, tag: str) -> Image | None:
    archive, record = _record(spec, tag)
    if not (archive.exists() and record.exists()):
        return None
    facts = json.loads(record.read_text())
    return Image(spec.name, facts["ref"], archive, int(facts["size"]))


def build_image(buildah: Buildah, spec: Spec, tag: str, base: str, work: Path, progress: Progress) -> Image:
    """``buildah bud`` of the Dockerfile as written, then its OCI archive."""
    ref = f"{spec.repository}:{tag}"
    started = time.monotonic()
    args = ["bud", "--pull=never", "--network", "host", "--layers", "--build-arg", f"BASE={base}",
            "--file", str(REPO / spec.dockerfile), "--tag", ref]
    if spec.target:
        args += ["--target", spec.target]
    if HOST_CA_BUNDLE.exists():  # read by Debian's pip and apt in RUN steps; never committed
        args += ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
    target = f" --target {spec.target}" if spec.target else ""
    progress(f"{spec.name}: building {ref} from {spec.dockerfile}{target}")
    layers = buildah.stream([*args, str(REPO)], images_dir() / f"{spec.name}.log", progress, spec.name, timeout=1800)
    built = time.monotonic() - started
    archive, record = _record(spec, tag)
    partial = work / archive.name
    buildah.run("push", "--quiet", ref, f"oci-archive:{partial}:{ref}")
    os.replace(partial, archive)
    size = buildah.size(ref)
    record.write_text(json.dumps({"ref": ref, "size": size, "build_seconds": round(built, 1),
                                  "layers": sorted(layers)}) + "\n")
    progress(f"{spec.name}: {ref} built in {built:.0f}s, archived in {time.monotonic() - started - built:.0f}s; "
             f"{size / 1e6:.0f} MB unpacked, {archive.stat().st_size / 1e6:.0f} MB archive")
    return Image(spec.name, ref, archive, size)


def _forget_older(buildah: Buildah, spec: Spec, tag: str) -> None:
    """Remove the archives and images of ``spec`` other than ``tag``: the cache keeps one of each."""
    for old in images_dir().glob(f"{spec.name}-*"):
        if old.name.split(".", 1)[0] != f"{spec.name}-{tag}" and old.suffix in (".tar", ".json"):
            old.unlink(missing_ok=True)
    names = buildah.run("images", "--noheading", "--format", "{{.Name}}:{{.Tag}}").split()
    for name in names:
        if name.startswith(spec.repository + ":") and name != f"{spec.repository}:{tag}":
            subprocess.run(buildah.command("rmi", name), capture_output=True, timeout=120)


@contextlib.contextmanager
def _exclusive(progress: Progress) -> Iterator[None]:
    """One build at a time on this machine: a second caller waits, then finds the images cached."""
    images_dir().mkdir(parents=True, exist_ok=True)
    with open(images_dir() / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress("another process is building the images; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_images(*, progress: Progress = _log, force: bool = False) -> list[Image]:
    """Every image of :data:`SPECS`, built when missing or stale; cached ones cost a hash of the context."""
    with _exclusive(progress):
        base = base_ref()
        wanted = [(spec, content_hash(spec, REPO, base)) for spec in SPECS]
        found = {spec.name: None if force else cached(spec, tag) for spec, tag in wanted}
        if all(found.values()):
            return [image for image in found.values() if image is not None]
        hostpackages.ensure(OS_PACKAGES, why="building AutoCrane's images")
        buildah = Buildah(images_dir() / "buildah")
        images = []
        with tempfile.TemporaryDirectory(dir=images_dir(), prefix="work-") as work:
            ensure_base(buildah, Path(work), progress, force=force)
            for spec, tag in wanted:
                image = found[spec.name] or build_image(buildah, spec, tag, base, Path(work), progress)
                _forget_older(buildah, spec, tag)
                images.append(image)
        # Storage stays bounded: older images' layers go, the current builds' layer cache stays.
        buildah.prune(_layer_cache(wanted))
        return images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devcluster images",
        description="Build AutoCrane's images with buildah (no registry, no Docker) from Dockerfile.webhook and "
        f"Dockerfile.sidecar on a base made from Debian packages; cached by content in {images_dir()}.")
    parser.add_argument("--force", action="store_true", help="rebuild the base and every image even when cached")
    ns = parser.parse_args(argv)
    started = time.monotonic()
    try:
        images = ensure_images(force=ns.force)
    except (ImageError, hostpackages.MissingPackages) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for image in images:
        print(f"{image.name}\t{image.ref}\t{image.size / 1e6:.0f} MB\t{image.archive}")
    _log(f"done in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
