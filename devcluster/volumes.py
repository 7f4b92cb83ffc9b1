"""Persistent volumes for the local cluster: a default StorageClass and a small provisioner for it.

A real cluster has a default StorageClass backed by a provisioner (kind ships rancher's
local-path-provisioner); the chart's data repository claims a volume from it. Here the class is
:data:`STORAGE_CLASS` (``WaitForFirstConsumer``, reclaim ``Delete``) and the provisioner is a thread
of the cluster's own process, so nothing runs in a pod and no image is needed:

- a claim of the class that the scheduler has given a node (``volume.kubernetes.io/selected-node``)
  gets a ``local`` PersistentVolume of a new directory ``DIR/volumes/<pv>``, pinned to that node
  and bound to the claim (``claimRef``); the kubelet bind-mounts it into the pod and applies its
  ``fsGroup``. A KWOK node mounts nothing: its pods get a directory nobody reads.
- a volume of ours whose claim was deleted (``Released``) is deleted, with its directory.

The kube-controller-manager and the scheduler do the rest as in any cluster (the claim waits for
a consumer, the pod waits for its claim to be bound). Volumes are gone with the cluster directory.
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devcluster.controlplane import ControlPlane

STORAGE_CLASS = "devcluster-local"
PROVISIONER = "devcluster.autocrane.io/local"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"

log = logging.getLogger(__name__)


def storage_class() -> dict[str, Any]:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer"}


def volume_for(claim: dict[str, Any], node: str, path: Path) -> dict[str, Any]:
    """The PersistentVolume that satisfies ``claim`` on ``node``, at ``path``."""
    meta, spec = claim["metadata"], claim["spec"]
    return {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": f"pvc-{meta['uid']}", "annotations": {PROVISIONED_BY: PROVISIONER},
                     "labels": {"devcluster.autocrane.io/claim-namespace": meta["namespace"]}},
        "spec": {
            "capacity": {"storage": spec.get("resources", {}).get("requests", {}).get("storage", "1Gi")},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": STORAGE_CLASS,
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": meta["namespace"],
                         "name": meta["name"], "uid": meta["uid"]},
            "local": {"path": str(path)},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
        },
    }


class Provisioner:
    """Provisions and deletes :data:`STORAGE_CLASS` volumes for ``plane`` (see the module docstring)."""

    def __init__(self, plane: ControlPlane, interval: float = 0.5) -> None:
        self.plane = plane
        self.root = plane.directory / "volumes"
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.root.mkdir(exist_ok=True)
        self.plane.create("/apis/storage.k8s.io/v1/storageclasses", storage_class())
        self._thread = threading.Thread(target=self._run, name="volume-provisioner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.step()
            except Exception as exc:  # the API server going away at stop, a claim deleted meanwhile
                log.debug("volume provisioner pass failed: %s", exc)

    def step(self) -> None:
        claims = (self.plane.get("/api/v1/persistentvolumeclaims") or {}).get("items", [])
        for claim in claims:
            meta = claim["metadata"]
            node = (meta.get("annotations") or {}).get(SELECTED_NODE)
            if claim.get("status", {}).get("phase") != "Pending" or not node or claim["spec"].get(
                    "storageClassName") != STORAGE_CLASS or claim["spec"].get("volumeName"):
                continue
            path = self.root / f"pvc-{meta['uid']}"
            path.mkdir(exist_ok=True)
            volume = volume_for(claim, node, path)
            if self.plane.get(f"/api/v1/persistentvolumes/{volume['metadata']['name']}") is None:
                self.plane.create("/api/v1/persistentvolumes", volume)
        volumes = (self.plane.get("/api/v1/persistentvolumes") or {}).get("items", [])
        for volume in volumes:
            ours = (volume["metadata"].get("annotations") or {}).get(PROVISIONED_BY) == PROVISIONER
            if ours and volume.get("status", {}).get("phase") in ("Released", "Failed"):
                shutil.rmtree(volume["spec"]["local"]["path"], ignore_errors=True)
                self.plane.delete(f"/api/v1/persistentvolumes/{volume['metadata']['name']}")
