"""Plain-dict pods for the controller's unit tests, decoded the way the informer decodes them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from controller import pods

NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
T0 = NOW.timestamp()


def stamp(seconds_ago: float) -> str:
    return (NOW - dt.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def raw(name: str, *, namespace: str = "ns", annotations: dict[str, str] | None = None,
        labels: dict[str, str] | None = None, owner: tuple[str, str] | None = ("ReplicaSet", "web-1"),
        age: float = 3600, phase: str = "Running", ip: str = "127.16.0.5", ready: bool = True,
        terminating: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name, "namespace": namespace, "uid": f"uid-{namespace}-{name}", "resourceVersion": "42",
        "creationTimestamp": stamp(age), "annotations": annotations or {}, "labels": labels or {},
    }
    if owner is not None:
        metadata["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Other", "name": "not-the-controller", "uid": "x"},
            {"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1], "uid": f"uid-{owner[1]}",
             "controller": True},
        ]
    if terminating:
        metadata["deletionTimestamp"] = stamp(0)
    return {
        "metadata": metadata,
        "spec": {"nodeName": "kwok-node-0", "containers": [{"name": "app", "image": "app:1"}]},
        "status": {"phase": phase, "podIP": ip,
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def pod(name: str = "web-1-abcde", **kwargs: Any) -> pods.Pod:
    return pods.from_json(raw(name, **kwargs))


def failing(name: str, *, since: float = 600, **kwargs: Any) -> pods.Pod:
    """A pod whose watchdog has been in error for ``since`` seconds."""
    notes = {"status.autocrane.io/app": f"error/{stamp(since)}/probe: http 500", **kwargs.pop("annotations", {})}
    return pod(name, annotations=notes, **kwargs)
