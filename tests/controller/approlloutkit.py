"""A small world of Deployments, ReplicaSets and pods for the app-rollout decision's tests.

Everything is built as raw JSON and decoded by the same functions the controller uses
(:mod:`controller.approllouts.objects`, :func:`controller.pods.from_json`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from autocrane import approllouts
from controller import pods
from controller.approllouts import decision, objects

T0 = 1_800_000_000.0
OK = "info/2027-01-15T08:00:00Z/probe: ok"
FAIL = "error/2027-01-15T08:00:00Z/probe: http 500: down"


def template(image: str, **annotations: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": {"app": "web"}}
    meta["annotations"] = {"probe.autocrane.io/app": "POD_IP:8080/watchdog", **annotations}
    return {"metadata": meta, "spec": {"containers": [{"name": "app", "image": image}]}}


def deployment(name: str, image: str, *, stage: int = 0, replicas: int = 2, updated: int | None = None,
               available: int | None = None, status_replicas: int | None = None, generation: int = 2,
               observed: int | None = None, paused: bool = False, release: str | None = None,
               deadline_exceeded: bool = False, tmpl: dict[str, Any] | None = None) -> objects.Deployment:
    raw: dict[str, Any] = {
        "metadata": {"namespace": "shop", "name": name, "uid": f"uid-{name}", "resourceVersion": "7",
                     "generation": generation,
                     "labels": {approllouts.GROUP_LABEL: "web", approllouts.STAGE_LABEL: str(stage)},
                     "annotations": {approllouts.RELEASE_ANNOTATION: release} if release else {}},
        "spec": {"replicas": replicas, "paused": paused, "template": tmpl or template(image)},
        "status": {"observedGeneration": generation if observed is None else observed,
                   "replicas": replicas if status_replicas is None else status_replicas,
                   "updatedReplicas": replicas if updated is None else updated,
                   "availableReplicas": replicas if available is None else available,
                   "conditions": [{"type": "Progressing", "status": "False",
                                   "reason": "ProgressDeadlineExceeded"}] if deadline_exceeded else []},
    }
    found = objects.deployment_from_json(raw)
    assert found is not None
    return found


def replica_set(d: objects.Deployment, image: str, tmpl: dict[str, Any] | None = None) -> objects.ReplicaSet:
    body = tmpl or template(image)
    labelled = {**body, "metadata": {**body["metadata"],
                                     "labels": {**body["metadata"]["labels"], "pod-template-hash": "abc123"}}}
    raw = {"metadata": {"namespace": "shop", "name": f"{d.name}-{approllouts.template_hash(body)[:6]}",
                        "ownerReferences": [{"kind": "Deployment", "name": d.name, "uid": d.uid, "controller": True}]},
           "spec": {"template": labelled}}
    found = objects.replica_set_from_json(raw)
    assert found is not None
    return found


def pod(rs: objects.ReplicaSet, index: int, status: str | None = OK, **extra: str) -> pods.Pod:
    annotations = {"probe.autocrane.io/app": "POD_IP:8080/watchdog", **extra}
    if status is not None:
        annotations["status.autocrane.io/app"] = status
    return pods.from_json({
        "metadata": {"namespace": "shop", "name": f"{rs.name}-{index}", "uid": f"{rs.name}-{index}",
                     "resourceVersion": "1", "creationTimestamp": "2027-01-15T07:00:00Z", "annotations": annotations,
                     "ownerReferences": [{"kind": "ReplicaSet", "name": rs.name, "uid": f"uid-{rs.name}",
                                          "controller": True}]},
        "spec": {"nodeName": "n"}, "status": {"phase": "Running", "podIP": f"10.0.0.{index}"}})


@dataclasses.dataclass
class World:
    """The observed group plus the state carried from step to step (like the cluster would)."""

    spec: approllouts.Spec = dataclasses.field(default_factory=approllouts.Spec)
    status: approllouts.Status = dataclasses.field(default_factory=approllouts.Status)
    deployments: list[objects.Deployment] = dataclasses.field(default_factory=list)
    replica_sets: list[objects.ReplicaSet] = dataclasses.field(default_factory=list)
    pods: list[pods.Pod] = dataclasses.field(default_factory=list)
    unanswered: frozenset[str] = frozenset()

    def step(self, now: float) -> decision.Step:
        """One pass; the status goes through its JSON encoding, as it does through the API server."""
        seen = decision.Observed(tuple(self.deployments), tuple(self.replica_sets), tuple(self.pods), self.unanswered)
        result = decision.step(self.spec, self.status, seen, now)
        self.status = approllouts.status_from_json(approllouts.status_to_json(result.status))
        return result

    def put(self, d: objects.Deployment) -> None:
        self.deployments = [x for x in self.deployments if x.name != d.name] + [d]


def verbs(result: decision.Step) -> list[tuple[str, str]]:
    return [(a.verb, a.deployment.name) for a in result.actions]
