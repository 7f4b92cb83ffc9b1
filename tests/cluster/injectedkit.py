"""AutoCrane's own images on the real node: the data repository as a pod, apps that get injected.

- :func:`autocrane_images`: the refs of the images the node imported (``devcluster.images``).
- :class:`ArchiveServer`: a data source served from the host (the node's host address, which pods
  reach): one ``.tar.gz`` of a tree of :data:`FILES` files, swapped in one step, with an ETag.
- :class:`RepositoryPod`: ``autocrane datarepository`` from its image, polling that source, behind
  a Service, in a namespace that enforces Pod Security ``restricted``.
- :func:`app_container` and :func:`pod_template`: ``autocrane testworkload`` from the sidecar image,
  on the real node, ``restricted``, for the injector to add its containers to.
- :class:`Reader`: a reader inside the app container (``kubectl exec``) that checks every tree it
  sees is one whole version, until it has seen the one it waits for.
- :func:`unexpected_writes`: what a container wrote to its root filesystem (the snapshot's upper
  directory on the node) besides the mount points the runtime made.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import http.server
import io
import json
import os
import subprocess
import tarfile
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from kubernetes import client

from autocrane import keys, watchdogs
from devcluster import build, images, node
from tests.cluster import harness, nodekit
from tests.cluster.harness import wait_until
from tests.cluster.webhookkit import OPT_IN, RESTRICTED
from webhook import options

SOURCE = "greetings"
DATA_SET = "greet"
STORE = options.DEFAULT_STORE_LOCATION
LIVE = f"{STORE}/{DATA_SET}"
"""Where the app sees the data set: a symlink in its read-only mount of the data volume."""
FILES = 16
FILE_REPEAT = 1024
"""Each file holds its version's label this many times: a tree is big enough to take a moment."""
APP_PORT = 8080
REPOSITORY_PORT = 8080
SECURE = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True}


def autocrane_images() -> dict[str, str]:
    """``{"sidecar": ref, "datarepository": ref, "autocrane": ref}``: what the real node imported."""
    plane = harness.current_control_plane()
    assert plane is not None and plane.node is not None, "no real node in this session"
    return {image.name: image.ref for image in plane.node.images if isinstance(image, images.Image)}


def create_restricted_namespace(cluster: harness.Cluster, prefix: str, *, inject: bool) -> str:
    """A namespace enforcing Pod Security ``restricted`` (and opted in to injection when ``inject``)."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    cluster.create_namespace(name, labels={**RESTRICTED, **(OPT_IN if inject else {})})
    return name


def label_restricted(cluster: harness.Cluster, namespace: str) -> None:
    """Opt ``namespace`` in to injection and make it enforce ``restricted``."""
    cluster.core.patch_namespace(namespace, {"metadata": {"labels": {**OPT_IN, **RESTRICTED}}})


# --- the data source and the repository ---------------------------------------------------------

def tree_text(label: str) -> str:
    return f"{label}\n" * FILE_REPEAT


def tree_archive(label: str) -> bytes:
    """A ``.tar.gz`` of files ``part-00`` .. ``part-15``, each holding :func:`tree_text`."""
    body = tree_text(label).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for i in range(FILES):
            entry = tarfile.TarInfo(f"part-{i:02d}")
            entry.size, entry.mode = len(body), 0o644
            tar.addfile(entry, io.BytesIO(body))
    return out.getvalue()


class ArchiveServer:
    """``GET /tree.tar.gz`` on the host's address toward the node: the current archive, with an ETag."""

    def __init__(self, address: str) -> None:
        self.body = b""
        served = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = served.body
                etag = f'"{hashlib.sha256(body).hexdigest()}"'
                if not body:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((address, 0), Handler)
        self.url = f"http://{address}:{self.server.server_address[1]}/tree.tar.gz"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, label: str) -> str:
        """Serve the tree of ``label`` from now on; the archive's sha256 (the version's ``contentSha256``)."""
        self.body = tree_archive(label)
        return hashlib.sha256(self.body).hexdigest()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclasses.dataclass
class RepositoryPod:
    """``autocrane datarepository`` on the real node, one http source (:data:`SOURCE`) polled every 0.2 s."""

    cluster: harness.Cluster
    namespace: str
    source: ArchiveServer
    ip: str = ""

    @property
    def url(self) -> str:
        """What pods use: the Service's DNS name."""
        return f"http://datarepo.{self.namespace}.svc:{REPOSITORY_PORT}"

    def start(self) -> RepositoryPod:
        """Run it and wait until it is Ready, which it is only once its source has a version: publish a
        first tree on the source before."""
        if not self.source.body:
            raise ValueError("the source serves nothing yet: the repository would never be Ready")
        config = {"sources": [{"name": SOURCE, "every": 0.2, "http": {"url": self.source.url}}]}
        self.cluster.core.create_namespaced_config_map(self.namespace, {
            "metadata": {"name": "datarepo"}, "data": {"sources.yaml": json.dumps(config)}})
        container = {
            "name": "datarepository", "image": autocrane_images()["datarepository"], "imagePullPolicy": "Never",
            "args": ["datarepository", "--config", "/config/sources.yaml", "--data-dir", "/var/lib/datarepo",
                     "--port", str(REPOSITORY_PORT)],
            "ports": [{"containerPort": REPOSITORY_PORT}],
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": REPOSITORY_PORT}, "periodSeconds": 1},
            "securityContext": SECURE,
            "volumeMounts": [{"name": "state", "mountPath": "/var/lib/datarepo"},
                             {"name": "config", "mountPath": "/config"}, {"name": "tmp", "mountPath": "/tmp"}]}
        self.cluster.core.create_namespaced_pod(self.namespace, {
            "metadata": {"name": "datarepo", "labels": {"app": "datarepo"}},
            "spec": {**pod_spec([container]), "volumes": [
                {"name": "state", "emptyDir": {}}, {"name": "config", "configMap": {"name": "datarepo"}},
                {"name": "tmp", "emptyDir": {}}]}})
        self.cluster.core.create_namespaced_service(self.namespace, {
            "metadata": {"name": "datarepo"},
            "spec": {"selector": {"app": "datarepo"}, "ports": [{"port": REPOSITORY_PORT}]}})
        (pod,) = nodekit.ready_pods(self.cluster, self.namespace, "datarepo", 1)
        self.ip = pod.status.pod_ip
        return self

    def manifest(self) -> dict[str, Any]:
        response = http_get(f"http://{self.ip}:{REPOSITORY_PORT}/v1/sources/{SOURCE}")
        return dict(json.loads(response)) if response else {}

    def publish(self, label: str) -> dict[str, Any]:
        """Serve a new tree; the repository's version of it once it is packed."""
        return self.packed(self.source.publish(label), label)

    def packed(self, content: str, label: str) -> dict[str, Any]:
        """The repository's version of the archive whose sha256 is ``content``, once it is packed."""
        def found() -> dict[str, Any] | None:
            return next((v for v in self.manifest().get("versions", [])
                         if v.get("origin", {}).get("contentSha256") == content), None)

        return wait_until(f"the repository to pack {label}", found, timeout=30)


def http_get(url: str, timeout: float = 5.0, method: str = "GET") -> bytes | None:
    """The body of a 200 answer, without proxies (pod IPs are this machine's); None otherwise."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, method=method), timeout=timeout) as response:
            return bytes(response.read()) if response.status == 200 else None
    except OSError:
        return None


def http_post(url: str) -> bytes | None:
    return http_get(url, method="POST")


def request_value(version: dict[str, Any]) -> str:
    """``request.data.autocrane.io/<set>`` as the controller writes it."""
    return json.dumps({"version": version["version"], "sha256": version["sha256"]})


# --- the app -------------------------------------------------------------------------------------

def pod_spec(containers: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A spec for the real node passing Pod Security ``restricted`` (the image's UID, 65532)."""
    return {**node.placement(), "terminationGracePeriodSeconds": 2, "enableServiceLinks": False,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": containers, **extra}


def app_container(*, data: bool = True, command: list[str] | None = None) -> dict[str, Any]:
    """``autocrane testworkload`` from the sidecar image (or ``command`` in it), read-only root."""
    container: dict[str, Any] = {"name": "app", "image": autocrane_images()["sidecar"], "imagePullPolicy": "Never",
                                 "securityContext": SECURE}
    if command is not None:
        container["command"] = command
        return container
    container["args"] = ["testworkload", "--port", str(APP_PORT), *(["--data-path", LIVE] if data else [])]
    container["ports"] = [{"containerPort": APP_PORT}]
    container["readinessProbe"] = {"httpGet": {"path": "/ping", "port": APP_PORT}, "periodSeconds": 1}
    return container


def data_annotations(version: dict[str, Any] | None) -> dict[str, str]:
    """The data set declared, and ``version`` requested (written at admission, as the controller would)."""
    found = {keys.DATA_PREFIX + DATA_SET: SOURCE}
    if version is not None:
        found[keys.REQUEST_DATA_PREFIX + DATA_SET] = request_value(version)
    return found


def deployment(name: str, replicas: int, pod_annotations: dict[str, str], *, data: bool = True) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels, "annotations": pod_annotations},
                                  "spec": pod_spec([app_container(data=data)])}}}


def service(name: str, port: int = APP_PORT) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"selector": {"app": name}, "ports": [{"port": port}]}}


def container_statuses(pod: Any) -> dict[str, Any]:
    """Every container's status by name, init containers included."""
    return {s.name: s for s in (pod.status.init_container_statuses or []) + (pod.status.container_statuses or [])}


def post_status(cluster: harness.Cluster, namespace: str, pod: str, level: watchdogs.Level, message: str) -> None:
    """What ``autocrane watchdog post`` and the controller write: a status annotation, through the API."""
    value = watchdogs.format_status(watchdogs.Status(level, dt.datetime.now(dt.UTC), message))
    patch = {"metadata": {"annotations": {watchdogs.status_key("app"): value}}}
    cluster.core.patch_namespaced_pod(pod, namespace, patch)


def endpoints(cluster: harness.Cluster, namespace: str, service_name: str) -> dict[str, bool]:
    """The Service's endpoints by pod name: ``ready`` as its EndpointSlices say."""
    slices = client.DiscoveryV1Api(cluster.api).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service_name}").items
    return {e.target_ref.name: bool(e.conditions.ready) for s in slices for e in s.endpoints or []
            if e.target_ref is not None}


# --- inside the pod ------------------------------------------------------------------------------

READER = r"""
import json, os, sys, time
link, files, repeat, until, after, seconds = sys.argv[1:7]
files, repeat, after, seconds = int(files), int(repeat), int(after), float(seconds)
expected = [f"part-{i:02d}" for i in range(files)]
sequence, problems, seen, observations = [], [], 0, 0
print("reading", flush=True)
started = time.monotonic()
deadline = started + seconds
while time.monotonic() < deadline and seen < after:
    observations += 1
    try:
        tree = os.path.realpath(link)  # resolved once: one tree per observation, as a careful app reads
        names = sorted(os.listdir(tree))
        contents = {open(os.path.join(tree, name)).read() for name in names}
    except OSError as error:
        problems.append(f"{type(error).__name__}: {error}")
        continue
    label = next(iter(contents)).split("\n", 1)[0] if contents else ""
    if names != expected or contents != {f"{label}\n" * repeat}:
        problems.append(f"{tree}: files {names}, {len(contents)} different contents")
        continue
    if not sequence or sequence[-1][0] != label:
        sequence.append([label, 0])
    sequence[-1][1] += 1
    seen += label == until
print(json.dumps({"sequence": sequence, "problems": problems[:20], "problemCount": len(problems),
                  "perSecond": round(observations / (time.monotonic() - started))}), flush=True)
"""


class Reader:
    """The data set read in a loop inside the app container until ``until`` was seen ``after`` times."""

    def __init__(self, cluster: harness.Cluster, namespace: str, pod: str, until: str, *, after: int = 300,
                 seconds: float = 90.0) -> None:
        self.process = subprocess.Popen(
            [str(build.bin_dir() / "kubectl"), f"--kubeconfig={cluster.kubeconfig}", "exec", "-n", namespace, pod,
             "-c", "app", "--", "python3", "-c", READER, LIVE, str(FILES), str(FILE_REPEAT), until, str(after),
             str(seconds)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        first = self.process.stdout.readline()
        assert first == "reading\n", f"the reader did not start: {first!r} {self.process.stderr.read()}"

    def result(self, timeout: float = 120.0) -> dict[str, Any]:
        out, err = self.process.communicate(timeout=timeout)
        assert self.process.returncode == 0, f"the reader exited {self.process.returncode}: {err}"
        return dict(json.loads(out.strip().splitlines()[-1]))


def exec_in(cluster: harness.Cluster, namespace: str, pod: str, container: str, *command: str,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    return nodekit.kubectl(cluster, "exec", "-n", namespace, pod, "-c", container, "--", *command, check=check)


def downward_api_written_at(cluster: harness.Cluster, namespace: str, pod: str, container: str) -> float:
    """When the kubelet last wrote the pod's downward-API volume: the mtime of its ``..data`` symlink."""
    script = "import os; print(os.lstat('/etc/autocrane/podinfo/..data').st_mtime_ns)"
    return int(exec_in(cluster, namespace, pod, container, "python3", "-c", script).stdout) / 1e9


# --- what a container wrote ----------------------------------------------------------------------

def _ctr(*args: str) -> str:
    plane = harness.current_control_plane()
    assert plane is not None and plane.node is not None
    result = subprocess.run(["ctr", "--address", str(plane.node.claim.containerd_socket), "--namespace", "k8s.io",
                             *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"ctr {' '.join(args)}: {result.stderr}"
    return result.stdout


@dataclasses.dataclass(frozen=True)
class RootFilesystem:
    """One container's root filesystem, as containerd has it."""

    read_only: bool
    """The OCI spec's ``root.readonly``."""
    upper: Path
    """The overlay's upper directory: everything written to the root filesystem lands here."""
    lowers: tuple[Path, ...]
    """The image's layers, top first."""
    mount_points: tuple[str, ...]
    """Where the runtime mounted volumes and its own files (``/etc/hosts``, the service account...)."""


def root_filesystem(container_id: str) -> RootFilesystem:
    info = json.loads(_ctr("containers", "info", container_id.removeprefix("containerd://")))
    mount = _ctr("snapshots", "--snapshotter", info["Snapshotter"], "mounts", "/unused", info["SnapshotKey"])
    options = dict(o.split("=", 1) for o in mount.split(" -o ", 1)[1].split()[0].split(",") if "=" in o)
    return RootFilesystem(read_only=bool(info["Spec"]["root"].get("readonly")), upper=Path(options["upperdir"]),
                          lowers=tuple(Path(p) for p in options["lowerdir"].split(":")),
                          mount_points=tuple(m["destination"] for m in info["Spec"]["mounts"]))


def _resolve(path: str, lowers: tuple[Path, ...]) -> str:
    """``path`` with the image's symlinks followed (``/var/run`` -> ``/run``), as runc creates mount points."""
    parts: list[str] = []
    pending = list(PurePosixPath(path).parts[1:])
    for _ in range(64):
        if not pending:
            break
        part = pending.pop(0)
        here = "/" + "/".join([*parts, part])
        layer = next((lower for lower in lowers if os.path.lexists(f"{lower}{here}")), None)
        target = os.readlink(f"{layer}{here}") if layer and os.path.islink(f"{layer}{here}") else None
        if target is None:
            parts.append(part)
        elif target.startswith("/"):
            parts, pending = [], [*PurePosixPath(target).parts[1:], *pending]
        else:
            pending = [*PurePosixPath(target).parts, *pending]
    return os.path.normpath("/" + "/".join(parts))


def _walk(upper: Path) -> Iterator[tuple[str, os.stat_result]]:
    for directory, dirnames, filenames in os.walk(upper):
        for name in dirnames + filenames:
            path = Path(directory) / name
            yield "/" + str(path.relative_to(upper)), path.lstat()


def unexpected_writes(container_id: str) -> list[str]:
    """What the container wrote to its root filesystem, besides the mount points the runtime made.

    runc creates a missing mount point (an empty directory or file, and its parents) in the root
    filesystem before it makes it read-only; anything else in the upper directory was written by
    the container's programs: a file, a changed file copied up, a deletion's whiteout.
    """
    root = root_filesystem(container_id)
    points = {_resolve(p, root.lowers) for p in root.mount_points}
    allowed = points | {str(parent) for p in points for parent in PurePosixPath(p).parents}
    found = []
    for path, info in _walk(root.upper):
        if path not in allowed:
            found.append(f"{path} ({'directory' if os.path.isdir(root.upper / path[1:]) else 'written'})")
        elif path in points and not os.path.isdir(root.upper / path[1:]) and info.st_size:
            found.append(f"{path} ({info.st_size} bytes under the mount point)")
    return found
