"""Test kit for staged app rollouts on the real control plane: groups of Deployments and what to read of them.

The Deployments run on KWOK nodes (their pods are Running and Ready with loopback IPs), the real
kube-controller-manager rolls them out, and :class:`tests.cluster.controllerkit.Fleet` serves their
watchdogs on the pods' IPs (failing the pods of a bad image). The injector (``/hold``) and the
controller run as real processes.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from autocrane import approllouts
from tests.cluster import datakit, harness
from tests.cluster.harness import wait_until

CRD = datakit.CRD.parent / "approllouts.autocrane.io.yaml"
GOOD, BAD = "registry.invalid/app:1", "registry.invalid/app:bad"


def install_crd(cluster: harness.Cluster) -> None:
    datakit.install_crd(cluster, CRD)


def template(name: str, image: str, port: int) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": name}, "annotations": {"probe.autocrane.io/app": f"POD_IP:{port}/watchdog"}},
            "spec": {"containers": [{"name": "app", "image": image}]}}


def deployment(name: str, group: str, stage: int | None, port: int, image: str = GOOD,
               replicas: int = 1) -> dict[str, Any]:
    labels = {approllouts.GROUP_LABEL: group}
    if stage is not None:
        labels[approllouts.STAGE_LABEL] = str(stage)
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": template(name, image, port)}}


def create_group(cluster: harness.Cluster, namespace: str, group: str, *deployments: dict[str, Any],
                 **spec: Any) -> None:
    """The group's AppRollout with ``spec`` (short bakes), then its Deployments; waits until each is adopted."""
    client.CustomObjectsApi(cluster.api).create_namespaced_custom_object(
        approllouts.API_GROUP, approllouts.VERSION, namespace, approllouts.PLURAL,
        {"apiVersion": approllouts.API_VERSION, "kind": approllouts.KIND, "metadata": {"name": group}, "spec": spec})
    for body in deployments:
        cluster.apps.create_namespaced_deployment(namespace, body)
    names = [d["metadata"]["name"] for d in deployments]

    def adopted() -> bool:
        records = status(cluster, namespace, group).get("deployments") or {}
        return all((records.get(n) or {}).get("lastKnownGood") for n in names)

    wait_until(f"group {group} adopted", adopted, timeout=60)


def rollout(cluster: harness.Cluster, namespace: str, group: str) -> dict[str, Any]:
    try:
        found: dict[str, Any] = client.CustomObjectsApi(cluster.api).get_namespaced_custom_object(
            approllouts.API_GROUP, approllouts.VERSION, namespace, approllouts.PLURAL, group)
    except ApiException:
        return {}
    return found


def status(cluster: harness.Cluster, namespace: str, group: str) -> dict[str, Any]:
    return dict(rollout(cluster, namespace, group).get("status") or {})


def set_image(cluster: harness.Cluster, namespace: str, name: str, image: str) -> Any:
    """What a user's apply of a new image does; returns the Deployment as admitted."""
    return cluster.apps.patch_namespaced_deployment(
        name, namespace, {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}})


def image_of(found: Any) -> str:
    return str(found.spec.template.spec.containers[0].image)


def runs(cluster: harness.Cluster, namespace: str, name: str, image: str) -> bool:
    """The Deployment's template is ``image``, it is not paused, and it has fully rolled out."""
    d = cluster.apps.read_namespaced_deployment(name, namespace)
    s = d.status
    return (image_of(d) == image and not d.spec.paused and (s.observed_generation or 0) >= d.metadata.generation
            and (s.updated_replicas or 0) == d.spec.replicas == (s.available_replicas or 0) == (s.replicas or 0))


def wait_runs(cluster: harness.Cluster, namespace: str, name: str, image: str, what: str,
              timeout: float = 60) -> None:
    """Wait until :func:`runs`; past the deadline, fail with the Deployment's state and its group's status."""
    try:
        wait_until(what, lambda: runs(cluster, namespace, name, image), timeout=timeout)
    except AssertionError as exc:
        d = cluster.apps.read_namespaced_deployment(name, namespace)
        s, group = d.status, d.metadata.labels.get("rollout.autocrane.io/group", "")
        last = status(cluster, namespace, group)
        raise AssertionError(
            f"{exc}; {name}: image {image_of(d)} paused {d.spec.paused} generation {d.metadata.generation} "
            f"observed {s.observed_generation} replicas {d.spec.replicas}/{s.replicas} updated {s.updated_replicas} "
            f"available {s.available_replicas}; ReplicaSets {replica_set_images(cluster, namespace, name)}; "
            f"group {group}: phase {last.get('phase')} stage {last.get('stage')} reason {last.get('reason')}: "
            f"{last.get('message')}; its record {(last.get('deployments') or {}).get(name)}") from None


def replica_set_images(cluster: harness.Cluster, namespace: str, name: str) -> dict[str, int]:
    """Image -> replicas of every ReplicaSet the Deployment ``name`` owns (ever created and not deleted)."""
    found: dict[str, int] = {}
    for rs in cluster.apps.list_namespaced_replica_set(namespace).items:
        if any(ref.kind == "Deployment" and ref.name == name for ref in rs.metadata.owner_references or ()):
            found[str(rs.spec.template.spec.containers[0].image)] = rs.spec.replicas or 0
    return found


def pod_images(cluster: harness.Cluster, namespace: str, app: str) -> list[str]:
    pods = cluster.core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return [str(p.spec.containers[0].image) for p in pods if p.metadata.deletion_timestamp is None]


def deployment_events(cluster: harness.Cluster, namespace: str, name: str, reason: str) -> list[Any]:
    events = cluster.core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=Deployment").items
    return [e for e in events if e.reason == reason]


def when(line: dict[str, Any]) -> float:
    """The wall-clock time of a JSON log line."""
    return dt.datetime.fromisoformat(str(line["time"]).replace("Z", "+00:00")).timestamp()


def live_hash(cluster: harness.Cluster, namespace: str, name: str) -> str:
    """The template hash of the Deployment as stored (with the API server's defaults)."""
    d = cluster.apps.read_namespaced_deployment(name, namespace)
    return approllouts.template_hash(cluster.api.sanitize_for_serialization(d.spec.template))


def wait_phase(cluster: harness.Cluster, namespace: str, group: str, phase: str, timeout: float = 60,
               **fields: Any) -> dict[str, Any]:
    def reached() -> dict[str, Any]:
        found = status(cluster, namespace, group)
        ok = found.get("phase") == phase and all(found.get(k) == v for k, v in fields.items())
        return found if ok else {}

    try:
        return wait_until(f"group {group} {phase} {fields or ''}", reached, timeout=timeout)
    except AssertionError as exc:
        last = status(cluster, namespace, group)
        raise AssertionError(f"{exc}; last status: phase {last.get('phase')} stage {last.get('stage')} "
                             f"reason {last.get('reason')}: {last.get('message')}") from None
