"""Build the local control plane's binaries from Go modules, once, into a cache outside the repo.

There is no Docker and no release download here, only the Go module proxy. So each binary is built
from source through a tiny *wrapper* Go module of our own:

- Kubernetes: ``k8s.io/kubernetes`` requires every staging module (``k8s.io/api``, ...) at
  ``v0.0.0`` and replaces them with ``./staging/...``; replaces of a dependency are ignored, so the
  wrapper must replace each staging module with its published ``v0.Y.Z`` itself. The list is read
  from the go.mod the module proxy serves, never hard-coded (it changes between minors).
- etcd: ``go.etcd.io/etcd/server/v3`` has replaces of its own too; a wrapper requiring it works.
- KWOK, helm: plain ``go install``-style builds through a wrapper as well, so every build is alike.
- The real node: kubelet and kube-proxy from ``k8s.io/kubernetes`` (their own recipe, ``node``), and
  CoreDNS through a main of ours (``gosrc/coredns``) that links only the plugins the node uses.
- cert-manager: its commands are nested modules the proxy cannot serve (their module paths are not
  their directories), so a main of ours (``gosrc/cert-manager``) runs the controller or cainjector
  from the published ``github.com/cert-manager/cert-manager`` (one binary, two roles).

A binary is rebuilt only when its stamp (the recipe, hashed) changes: a warm cache costs nothing.
``GOTOOLCHAIN=local`` keeps Go from downloading a toolchain; ``CGO_ENABLED=0`` gives static binaries.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

KUBERNETES_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.7.0"
HELM_VERSION = "v3.19.5"
COREDNS_VERSION = "v1.13.2"
"""The newest CoreDNS built against client-go v0.34, the minor of the cluster it serves."""
CERT_MANAGER_VERSION = "v1.19.5"
"""The newest cert-manager on client-go v0.34 whose module the proxy serves (v1.19.x supports
Kubernetes 1.31-1.34); its go.mod asks for Go 1.25."""

# A fixed build date keeps the Go build cache warm across rebuilds.
_BUILD_DATE = "2026-01-01T00:00:00Z"
GO_SOURCES = Path(__file__).parent / "gosrc"
"""Go programs of ours: CoreDNS's main with the plugins the node uses, the pause and toolbox images."""


def cache_dir() -> Path:
    """Where binaries and build trees live: ``$AUTOCRANE_CACHE`` or ``~/.cache/autocrane``."""
    root = os.environ.get("AUTOCRANE_CACHE") or Path.home() / ".cache" / "autocrane"
    return Path(root)


def bin_dir() -> Path:
    return cache_dir() / "bin"


@dataclasses.dataclass(frozen=True, slots=True)
class Recipe:
    """How to build a group of binaries from one wrapper module."""

    name: str
    """Name of the wrapper module's directory and of the stamp file."""
    module: str
    """The Go module that holds the commands."""
    version: str
    packages: tuple[str, ...]
    """Main packages to build; each yields a binary named after its last path element."""
    binaries: tuple[str, ...]
    ldflags: str = "-s -w"
    tags: str = ""
    replace_staging: bool = False
    """Replace every ``k8s.io/*`` staging module with its published ``v0.Y.Z`` (Kubernetes only)."""
    main_source: str = ""
    """A main package of ours, a directory under ``devcluster/gosrc``, built as the wrapper module's
    own package against ``module`` (``packages`` then names the wrapper, ``local/autocrane-NAME``)."""

    def stamp(self) -> str:
        fields = dataclasses.asdict(self)
        if self.main_source:
            fields["main_source"] = hashlib.sha256(self.main_go().encode()).hexdigest()
        else:
            # Hashed only when set: recipes without one keep the stamps (and caches) they had before.
            del fields["main_source"]
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    def main_go(self) -> str:
        return (GO_SOURCES / self.main_source / "main.go").read_text()


def _kubernetes_ldflags(version: str) -> str:
    major, minor = version.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        for key, value in (
            ("gitVersion", version),
            ("gitMajor", major),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
            ("buildDate", _BUILD_DATE),
        ):
            flags.append(f"-X {pkg}.{key}={value}")
    return " ".join(flags)


def _helm_ldflags() -> str:
    # Without the Kubernetes version helm assumes v1.20 for `helm template` and `lint`, as its
    # Makefile does from the client-go it builds with (the minor of our Kubernetes).
    minor = KUBERNETES_VERSION.split(".")[1]
    flags = ["-s", "-w", f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}"]
    for pkg in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
        flags += [f"-X {pkg}.k8sVersionMajor=1", f"-X {pkg}.k8sVersionMinor={minor}"]
    return " ".join(flags)


def _kubernetes_recipe(name: str, commands: tuple[str, ...]) -> Recipe:
    return Recipe(
        name=name,
        module="k8s.io/kubernetes",
        version=KUBERNETES_VERSION,
        packages=tuple(f"k8s.io/kubernetes/cmd/{c}" for c in commands),
        binaries=commands,
        ldflags=_kubernetes_ldflags(KUBERNETES_VERSION),
        tags="selinux,notest",
        replace_staging=True,
    )


def recipes() -> list[Recipe]:
    k8s_cmds = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
    # The real node's binaries are a recipe of their own, so that adding them left the stamp of
    # `kubernetes` (and every cache built with it) as it was; the Go build cache is shared, so
    # they compile only what kube-apiserver and friends did not already.
    node_cmds = ("kubelet", "kube-proxy")
    return [
        Recipe(
            name="etcd",
            module="go.etcd.io/etcd/server/v3",
            version=ETCD_VERSION,
            packages=("go.etcd.io/etcd/server/v3",),
            binaries=("etcd",),
        ),
        Recipe(
            name="kwok",
            module="sigs.k8s.io/kwok",
            version=KWOK_VERSION,
            packages=("sigs.k8s.io/kwok/cmd/kwok",),
            binaries=("kwok",),
        ),
        Recipe(
            name="helm",
            module="helm.sh/helm/v3",
            version=HELM_VERSION,
            packages=("helm.sh/helm/v3/cmd/helm",),
            binaries=("helm",),
            ldflags=_helm_ldflags(),
        ),
        _kubernetes_recipe("kubernetes", k8s_cmds),
        _kubernetes_recipe("node", node_cmds),
        Recipe(
            name="coredns",
            module="github.com/coredns/coredns",
            version=COREDNS_VERSION,
            packages=("local/autocrane-coredns",),
            binaries=("coredns",),
            main_source="coredns",
        ),
        # Only the cert-manager tests use it (tests/cluster/test_chart_certmanager.py); a cluster
        # start never builds it.
        Recipe(
            name="cert-manager",
            module="github.com/cert-manager/cert-manager",
            version=CERT_MANAGER_VERSION,
            packages=("local/autocrane-cert-manager",),
            binaries=("cert-manager",),
            main_source="cert-manager",
        ),
    ]


def _go_env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(GOTOOLCHAIN="local", CGO_ENABLED="0", GOFLAGS="-mod=mod -buildvcs=false")
    # Two cores and a few GiB per link: run compiles in parallel but never two links at once.
    env.setdefault("GOMAXPROCS", str(os.cpu_count() or 2))
    env["GOWORK"] = "off"
    env["PWD"] = str(work)
    return env


def _log(message: str) -> None:
    print(f"[autocrane build {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _run(args: list[str], work: Path) -> str:
    _log("$ " + " ".join(args))
    proc = subprocess.run(args, cwd=work, env=_go_env(work), text=True, capture_output=True)
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(args[:3])} failed in {work}:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


class BuildError(RuntimeError):
    pass


def _run_with_progress(args: list[str], work: Path, label: str) -> None:
    """Run ``go build -v``, which names each package as it compiles, and report a running count."""
    _log("$ " + " ".join(args))
    proc = subprocess.Popen(args, cwd=work, env=_go_env(work), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    tail: collections.deque[str] = collections.deque(maxlen=60)
    count, last_report = 0, time.monotonic()
    for line in proc.stdout:
        count += 1
        tail.append(line)
        if time.monotonic() - last_report >= 30:
            _log(f"{label}: {count} packages compiled so far (latest: {line.strip()})")
            last_report = time.monotonic()
    if proc.wait() != 0:
        raise BuildError(f"go build of {label} failed in {work}:\n{''.join(tail)}")
    _log(f"{label}: {count} packages compiled, linked")


def staging_modules(gomod_text: str) -> list[str]:
    """The ``k8s.io/*`` modules that a go.mod replaces with ``./staging/...`` paths."""
    return sorted(set(re.findall(r"^\s*(k8s\.io/\S+)\s+=>\s+\./staging/", gomod_text, re.MULTILINE)))


def _write_wrapper(recipe: Recipe, work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    gomod = work / "go.mod"
    if gomod.exists():
        gomod.unlink()
    # godebug keeps GODEBUG defaults equal to the upstream build of these versions.
    gomod.write_text(f"module local/autocrane-{recipe.name}\n\ngo 1.24.0\n\ngodebug default=go1.24\n")
    if recipe.replace_staging:
        info = json.loads(_run(["go", "mod", "download", "-json", f"{recipe.module}@{recipe.version}"], work))
        staging = staging_modules(Path(info["GoMod"]).read_text())
        if not staging:
            raise BuildError(f"no staging replaces found in the go.mod of {recipe.module}@{recipe.version}")
        published = "v0." + recipe.version.lstrip("v").split(".", 1)[1]
        edits = [f"-replace={m}={m}@{published}" for m in staging]
        _run(["go", "mod", "edit", *edits], work)
        _log(f"replaced {len(staging)} staging modules with {published}")
    if recipe.main_source:
        # `go get` would load the module's own main and fetch what all of its imports need;
        # tidy fetches only what our main imports.
        (work / "main.go").write_text(recipe.main_go())
        _run(["go", "mod", "edit", f"-require={recipe.module}@{recipe.version}"], work)
        _run(["go", "mod", "tidy"], work)
    else:
        _run(["go", "get", f"{recipe.module}@{recipe.version}"], work)


def module_dir(recipe: Recipe) -> Path:
    """The directory of ``recipe.module`` at its version in the module cache (downloaded if missing)."""
    work = cache_dir() / "build" / recipe.name
    work.mkdir(parents=True, exist_ok=True)
    info = json.loads(_run(["go", "mod", "download", "-json", f"{recipe.module}@{recipe.version}"], work))
    return Path(info["Dir"])


def recipe_named(name: str) -> Recipe:
    (found,) = [r for r in recipes() if r.name == name]
    return found


def build(recipe: Recipe, *, force: bool = False) -> list[Path]:
    """Build one recipe's binaries into :func:`bin_dir` unless the cache already has them."""
    out = bin_dir()
    stamp_file = out / f".{recipe.name}.stamp"
    targets = [out / b for b in recipe.binaries]
    cached = stamp_file.exists() and stamp_file.read_text() == recipe.stamp() and all(t.exists() for t in targets)
    if cached and not force:
        _log(f"{recipe.name} {recipe.version}: cached")
        return targets
    started = time.monotonic()
    _log(f"{recipe.name} {recipe.version}: building {', '.join(recipe.binaries)} (cold builds take minutes)")
    work = cache_dir() / "build" / recipe.name
    _write_wrapper(recipe, work)
    staging_out = cache_dir() / "build" / f"{recipe.name}-out"
    shutil.rmtree(staging_out, ignore_errors=True)
    staging_out.mkdir(parents=True)
    args = ["go", "build", "-v", "-trimpath", "-ldflags", recipe.ldflags, "-o", str(staging_out) + "/"]
    if recipe.tags:
        args += ["-tags", recipe.tags]
    _run_with_progress(args + list(recipe.packages), work, recipe.name)
    out.mkdir(parents=True, exist_ok=True)
    for package, binary in zip(recipe.packages, recipe.binaries, strict=True):
        built = staging_out / package.rsplit("/", 1)[-1]
        if not built.exists():  # a module-root package is named after the module's last element
            candidates = list(staging_out.iterdir())
            built = candidates[0] if len(candidates) == 1 else built
        os.replace(built, out / binary)
    shutil.rmtree(staging_out, ignore_errors=True)
    stamp_file.write_text(recipe.stamp())
    _log(f"{recipe.name}: built in {time.monotonic() - started:.0f}s")
    return targets


def build_program(source: str, out: Path) -> Path:
    """Build our Go program ``gosrc/SOURCE`` (standard library only) into the static binary ``out``."""
    work = cache_dir() / "build" / f"program-{source}"
    work.mkdir(parents=True, exist_ok=True)
    (work / "go.mod").write_text(f"module local/devcluster-{source}\n\ngo 1.24.0\n")
    (work / "main.go").write_text((GO_SOURCES / source / "main.go").read_text())
    out.parent.mkdir(parents=True, exist_ok=True)
    _run(["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out), "."], work)
    return out


@functools.cache
def go_version() -> str:
    """The local Go toolchain's version (``go1.26.8``), part of the hash of what it builds."""
    proc = subprocess.run(["go", "env", "GOVERSION"], env=_go_env(Path.cwd()), capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"go env GOVERSION failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def ensure_binaries(*, only: list[str] | None = None, force: bool = False) -> dict[str, Path]:
    """Build whatever is missing and return every binary's path by name."""
    paths: dict[str, Path] = {}
    for recipe in recipes():
        if only and recipe.name not in only:
            continue
        for path in build(recipe, force=force):
            paths[path.name] = path
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devcluster build",
        description="Build etcd, Kubernetes, KWOK, helm, the real node's kubelet and kube-proxy, CoreDNS and "
        "cert-manager from Go modules into the cache "
        f"({bin_dir()}); cached binaries are never rebuilt.",
    )
    parser.add_argument("--only", action="append", choices=[r.name for r in recipes()], help="build only these")
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    ns = parser.parse_args(argv)
    started = time.monotonic()
    try:
        paths = ensure_binaries(only=ns.only, force=ns.force)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, path in sorted(paths.items()):
        print(f"{name}\t{path}")
    _log(f"done in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
