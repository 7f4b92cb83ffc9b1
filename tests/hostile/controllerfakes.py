"""A whole controller pass without a cluster: the real loop, Writer, DataRollouts, decoders and
eviction plan, over an API server, prober and data repository that answer from memory.

- :class:`Api` stands in for ``autocrane.kube.Kube``: it records every write (pod
  patches, evictions, Events, DataRollout creation and status patches) and serves the
  DataRollouts it holds.
- :class:`Prober` is the real :class:`controller.watchdogs.probing.Prober` (URL checks, probe fan-out,
  ``/status`` URLs) with the network replaced: a watchdog answers 500 on the pods listed in
  ``failing``, 200 elsewhere, and a datadeployer's ``/status`` answers the bytes in ``bodies``
  (by pod IP), decoded by :func:`controller.watchdogs.probing.decode_json` as a real answer would be.
- :func:`controller` wires them with pods decoded by the informer's own path.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable
from typing import Any

from autocrane import clock, kube
from controller import passes
from controller.apiserver import informer, writer
from controller.datarollouts import decision as datarollout
from controller.datarollouts import loop as datarollouts
from controller.datarollouts import resource
from controller.evictions import decision as eviction
from controller.watchdogs import health, probing
from tests.controller.datarollouts.test_loop import FakeRepo
from tests.controller.podfactory import raw, stamp

GOOD_STATUS = json.dumps({"sets": {"model": {"version": "a", "deployedAt": "2026-03-01T10:00:00Z"}}}).encode()
POLICY = eviction.Policy(observations=1, min_error_seconds=60, min_pod_age=0)
VICTIM_IP = "127.16.0.5"
"""The failing neighbour's IP: its watchdog answers 500."""


class Api:
    """Records writes; serves DataRollouts. Paths and bodies are the ones the real client would send."""

    def __init__(self) -> None:
        self.rollouts: dict[str, dict[str, Any]] = {}
        self.writes: list[tuple[str, str, Any]] = []

    async def request(self, method: str, path: str, *, body: Any = None, **_: Any) -> dict[str, Any]:
        if method == "GET" and path.endswith("/datarollouts"):
            namespace = re.search(r"/namespaces/([^/]+)/", path)
            return {"items": [copy.deepcopy(r) for r in self.rollouts.values()
                              if namespace is None or r["metadata"]["namespace"] == namespace[1]]}
        self.writes.append((method, path, copy.deepcopy(body)))
        if method == "POST" and path.endswith("/datarollouts"):
            created = copy.deepcopy(body)
            created["metadata"] |= {"resourceVersion": "1", "generation": 1}
            self.rollouts[f"{created['metadata']['namespace']}/{created['metadata']['name']}"] = created
            return copy.deepcopy(created)
        if method == "PATCH" and path.endswith("/status") and "/datarollouts/" in path:
            namespace, name = re.findall(r"/namespaces/([^/]+)/datarollouts/([^/]+)/status", path)[0]
            self.rollouts[f"{namespace}/{name}"]["status"] = body["status"]
        return {}

    def pod_patches(self, name: str) -> list[dict[str, Any]]:
        return [body for method, path, body in self.writes if method == "PATCH" and path.endswith(f"/pods/{name}")]

    def evicted(self) -> list[str]:
        return [path.split("/")[-2] for method, path, _ in self.writes if path.endswith("/eviction")]


class Prober(probing.Prober):
    def __init__(self, failing: Iterable[str] = (VICTIM_IP,), bodies: dict[str, bytes] | None = None) -> None:
        super().__init__(concurrency=4, timeout=1)
        self.failing = set(failing)
        self.bodies = bodies or {}

    async def get(self, url: str) -> health.ProbeResult:
        host = url.split("//", 1)[1].split(":", 1)[0]
        return health.ProbeResult("error", "http 500") if host in self.failing else health.ProbeResult("ok")

    async def get_json(self, url: str, limit: int = probing.MAX_STATUS_BYTES) -> object | None:
        host = url.split("//", 1)[1].rsplit(":", 1)[0]
        return probing.decode_json(self.bodies.get(host, GOOD_STATUS)[:limit], url)


def informer_of(raw_pods: Iterable[dict[str, Any]]) -> informer.PodInformer:
    store = informer.PodInformer(api=None)  # type: ignore[arg-type]
    for obj in raw_pods:
        store.apply({"type": "ADDED", "object": obj})
    store.synced.set()
    return store


def controller(raw_pods: Iterable[dict[str, Any]], prober: Prober, api: kube.Api, *,
               repo: FakeRepo | None = None, time: clock.Clock = clock.SYSTEM) -> passes.Controller:
    repo = repo or FakeRepo()
    api_writer = writer.Writer(api, identity="test", repository=repo, time=time)
    rollouts = datarollouts.DataRollouts(api, repo, prober, api_writer, policy=datarollout.Policy(bake_seconds=60),
                                         time=time)
    return passes.Controller([informer_of(raw_pods)], prober, api_writer, POLICY, rollouts=rollouts, time=time)


def neighbours() -> list[dict[str, Any]]:
    """The pods beside a hostile one: a failing pod (owner ``web-1``, with three healthy siblings, so no
    circuit breaker holds it) that must be evicted, and a data pod in namespace ``data`` whose rollout
    must take its first step."""
    since = f"error/{stamp(600)}/probe: http 500"
    failing = raw("victim", ip=VICTIM_IP, annotations={"probe.autocrane.io/app": "POD_IP:8080/watchdog",
                                                       "status.autocrane.io/app": since})
    siblings = [raw(f"web-{i}", ip=f"127.16.0.{10 + i}", annotations={"probe.autocrane.io/app": "POD_IP:8080/w"})
                for i in range(3)]
    reader = raw("reader", namespace="data", owner=("ReplicaSet", "reader-1"), ip="127.16.1.1",
                 annotations={"data.autocrane.io/model": "models"})
    return [failing, *siblings, reader]


def hostile(annotations: dict[str, str], name: str = "hostile", namespace: str = "ns") -> dict[str, Any]:
    """A pod of its own workload carrying ``annotations``, on IP 127.16.9.9."""
    return raw(name, namespace=namespace, owner=("ReplicaSet", f"{name}-rs"), ip="127.16.9.9",
               annotations=annotations)


def requested_in(api: Api, pod: str) -> list[str]:
    """The data versions requested on ``pod`` by the pass."""
    return [json.loads(value)["version"] for body in api.pod_patches(pod)
            for key, value in (body["metadata"].get("annotations") or {}).items()
            if key.startswith("request.data.autocrane.io/") and value]


def rollout_of(api: Api, namespace: str, source: str = "models") -> resource.Rollout | None:
    found = api.rollouts.get(f"{namespace}/{resource.object_name(source)}")
    return None if found is None else resource.from_json(found)
