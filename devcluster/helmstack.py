"""`make dev` as a user runs AutoCrane: the chart installed by helm from the images built here.

On a cluster with the real node (:mod:`devcluster.node`):

1. the three images (``devcluster.images``, already imported into the node's containerd) are the
   chart's images, ``pullPolicy: Never``;
2. ``helm upgrade --install autocrane charts/autocrane -n autocrane-system --create-namespace -f
   DIR/autocrane/values.yaml --wait``: the same chart, webhook registration (self-signed TLS) and
   data repository a user gets. The values file says only what this cluster needs: the images,
   the real node's placement, a source, and short rollout times so a change is seen in a minute;
3. the source ``models`` is the directory ``DIR/data/models`` on this machine, mounted read-only into
   the repository through a PersistentVolume: edit a file there and the repository makes a new
   version within seconds, which the controller rolls out in stages while the app keeps running;
4. the sample: namespace ``demo`` (``autocrane-inject=enabled``), a Deployment of 3
   ``autocrane testworkload`` pods reading data set ``model`` and declaring a watchdog, and a PDB.

``start`` returns once every sample pod is Ready with the data's first version live in it.
Everything lives in the cluster and goes with it: Ctrl-C stops the cluster, and the real node's
release removes every container, mount and file of it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from devcluster import build, controlplane, images, node, stack

RELEASE = "autocrane"
NAMESPACE = "autocrane-system"
SOURCE = "models"
SOURCE_VOLUME = "devcluster-sources"
REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "autocrane"
FIRST_DATA = {"greeting.txt": "hello from the data repository: version 1\n"}
BAKE_SECONDS = 15
POLL_SECONDS = 2


def image_values(built: dict[str, images.Image]) -> dict[str, Any]:
    """The chart's three image values for images built here (already in the node's containerd)."""
    def one(name: str) -> dict[str, str]:
        repository, _, tag = built[name].ref.rpartition(":")
        return {"repository": repository, "tag": tag, "pullPolicy": "Never"}

    return {"image": one("autocrane"), "sidecarImage": one("sidecar"), "dataRepositoryImage": one("datarepository")}


def values(built: dict[str, images.Image], source_claim: str = SOURCE_VOLUME) -> dict[str, Any]:
    """What this cluster needs beyond the chart's defaults (written to DIR/autocrane/values.yaml)."""
    on_node = node.placement()
    return {
        **image_values(built),
        "webhook": {**on_node},
        "controller": {**on_node, "interval": 2, "extraArgs": [
            f"--bake-seconds={BAKE_SECONDS}", "--progress-deadline=120", "--min-pod-age=30"]},
        "dataRepository": {
            **on_node,
            "persistence": {"size": "1Gi", "keepOnUninstall": False},
            "sources": [{"name": SOURCE, "every": POLL_SECONDS, "directory": {"path": f"/sources/{SOURCE}"}}],
            "extraVolumes": [{"name": SOURCE_VOLUME, "persistentVolumeClaim": {"claimName": source_claim,
                                                                                 "readOnly": True}}],
            "extraVolumeMounts": [{"name": SOURCE_VOLUME, "mountPath": "/sources", "readOnly": True}],
        },
    }


def source_volume(namespace: str, path: Path, name: str = SOURCE_VOLUME) -> tuple[dict[str, Any], dict[str, Any]]:
    """A PersistentVolume of ``path`` on the real node, read-only, and its claim ``name`` in ``namespace``."""
    affinity = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": [node.NODE_NAME]}]}]}}
    volume = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
              "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadOnlyMany"], "storageClassName": "",
                       "persistentVolumeReclaimPolicy": "Retain", "local": {"path": str(path)},
                       "claimRef": {"namespace": namespace, "name": name}, "nodeAffinity": affinity}}
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": namespace},
             "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "", "volumeName": name,
                      "resources": {"requests": {"storage": "1Gi"}}}}
    return volume, claim


def helm(*args: str, kubeconfig: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    binary = build.ensure_binaries(only=["helm"])["helm"]
    return subprocess.run([str(binary), *args, "--kubeconfig", str(kubeconfig)], capture_output=True, text=True,
                          timeout=timeout)


class HelmStack:
    """AutoCrane installed by helm into a running :class:`controlplane.ControlPlane` with a real node."""

    def __init__(self, plane: controlplane.ControlPlane) -> None:
        assert plane.node is not None, "the helm stack runs on the real node"
        self.plane = plane
        self.directory = plane.directory / "autocrane"
        self.directory.mkdir(exist_ok=True)
        self.data = plane.directory / "data"
        """The sources the repository reads: DIR/data/<source>/, editable on this machine."""
        self.values_file = self.directory / "values.yaml"
        self.sample_image = ""
        self.ready_seconds = 0.0

    def start(self) -> None:
        started = time.monotonic()
        # The images the node imported at its start (a second ensure_images() could find them evicted
        # by another checkout's build meanwhile, and build them again for nothing).
        assert self.plane.node is not None
        built = {i.name: i for i in self.plane.node.images if isinstance(i, images.Image)} or {
            i.name: i for i in images.ensure_images()}
        self.sample_image = built["sidecar"].ref
        self._write_data()
        self._source_volume()
        self.values_file.write_text(json.dumps(values(built), indent=2) + "\n")  # JSON is YAML
        _progress(f"helm upgrade --install {RELEASE} charts/autocrane -n {NAMESPACE} -f {self.values_file}")
        installed = helm("upgrade", "--install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
                         "-f", str(self.values_file), "--wait", "--timeout", "5m", kubeconfig=self.plane.kubeconfig)
        if installed.returncode != 0:
            raise controlplane.ControlPlaneError(f"helm upgrade --install failed: {installed.stderr.strip()}\n"
                                                 f"pods: {self._pods_summary(NAMESPACE)}")
        _progress("the chart is installed; deploying the sample app")
        stack.deploy_sample(self.plane, image=self.sample_image, placement=node.placement())
        self.plane.wait("3 sample pods Ready, each with the data's first version live", self._sample_has_data, 300)
        self.ready_seconds = time.monotonic() - started

    def stop(self) -> None:
        """Nothing of its own to stop: the release and the sample go with the cluster."""

    def _write_data(self) -> None:
        source = self.data / SOURCE
        source.mkdir(parents=True, exist_ok=True)
        for name, text in FIRST_DATA.items():
            (source / name).write_text(text)

    def _source_volume(self) -> None:
        """DIR/data as a read-only PersistentVolume on the real node, claimed in the release namespace."""
        self.plane.create("/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
        volume, claim = source_volume(NAMESPACE, self.data)
        self.plane.create("/api/v1/persistentvolumes", volume)
        self.plane.create(f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims", claim)

    def sample_pods(self) -> list[dict[str, Any]]:
        listing = self.plane.get(f"/api/v1/namespaces/{stack.DEMO_NAMESPACE}/pods?labelSelector=app%3Dsample") or {}
        return [p for p in listing.get("items", []) if not p["metadata"].get("deletionTimestamp")]

    def _sample_has_data(self) -> bool:
        ready = [p for p in self.sample_pods() if any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in p.get("status", {}).get("conditions", []))]
        return len(ready) == 3 and all(
            (p["metadata"].get("annotations") or {}).get("status.data.autocrane.io/model") for p in ready)

    def _pods_summary(self, namespace: str) -> str:
        listing = self.plane.get(f"/api/v1/namespaces/{namespace}/pods") or {}
        return ", ".join(f"{p['metadata']['name']} {p['status'].get('phase')}" for p in listing.get("items", []))

    def summary(self) -> str:
        kubectl = build.bin_dir() / "kubectl"
        autocrane = stack.autocrane_command()
        source = self.data / SOURCE
        pods = self.sample_pods()
        ip = pods[0]["status"].get("podIP", "POD_IP") if pods else "POD_IP"
        version = json.loads((pods[0]["metadata"].get("annotations") or {}).get(
            "status.data.autocrane.io/model") or "{}").get("version") if pods else None
        return (
            f"AutoCrane: helm release {RELEASE!r} in namespace {NAMESPACE} from charts/autocrane, values in "
            f"{self.values_file}\n"
            f"  (the webhook, the controller and the data repository run on the real node; ready "
            f"{self.ready_seconds:.0f}s after the cluster)\n"
            f"sample: Deployment {stack.DEMO_NAMESPACE}/sample, 3 pods reading data set 'model' from source "
            f"{SOURCE!r}, now on version {version}\n"
            f"  its data is the directory {source} on this machine\n\n"
            f"Try (export KUBECONFIG={self.plane.kubeconfig}):\n"
            f"  change the data:      echo 'hello again' > {source}/greeting.txt\n"
            f"                        (a new version within {POLL_SECONDS}s, rolled out to 1 pod, then 25%, then all, "
            f"{BAKE_SECONDS}s apart, while the app keeps serving)\n"
            f"  watch it roll out:    {kubectl} get datarollouts -n {stack.DEMO_NAMESPACE} -w\n"
            f"                        {autocrane} status -n {stack.DEMO_NAMESPACE}\n"
            f"  what a pod sees:      curl http://{ip}:{stack.APP_PORT}/data\n"
            f"  fail a watchdog:      curl -X POST http://{ip}:{stack.APP_PORT}/fail\n"
            f"                        {kubectl} get pods -n {stack.DEMO_NAMESPACE} -L status.autocrane.io/health\n"
            f"                        (error within seconds; evicted within the PDB after a minute, and replaced)\n"
            f"  check the install:    {build.bin_dir() / 'helm'} test {RELEASE} -n {NAMESPACE} "
            f"--kubeconfig {self.plane.kubeconfig}")


def _progress(message: str) -> None:
    print(f"[make dev {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
