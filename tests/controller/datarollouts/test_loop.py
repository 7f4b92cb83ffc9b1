"""The rollout part of a pass with fake API, repository and pods: order of writes, the lag guard, outages."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import pytest

from autocrane import clock, manifests
from autocrane import metrics as core_metrics
from controller import plan, pods
from controller.apiserver import writer
from controller.datarollouts import loop as datarollouts
from controller.datarollouts import repository, resource
from tests.controller.podfactory import NOW, T0, raw


class FakeRepo:
    def __init__(self) -> None:
        self.down = False
        self.lkg = "a"

    async def manifest(self) -> dict[str, manifests.SourceManifest]:
        if self.down:
            raise repository.RepositoryError("GET /v1/manifest: no answer")
        versions = tuple(manifests.Version(v, c * 64, 1, NOW - dt.timedelta(days=3 - i))
                         for i, (v, c) in enumerate((("a", "1"), ("b", "2"))))
        return {"models": manifests.SourceManifest("models", versions, self.lkg)}


class FakeApi:
    def __init__(self) -> None:
        self.rollouts: list[dict[str, Any]] = []

    async def request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        assert method == "GET" and path.endswith("/datarollouts")
        return {"items": self.rollouts}


class FakeProber:
    concurrency = 4

    async def datadeployer_status(self, pod: pods.Pod, port: int) -> object | None:
        return {"sets": {"model": {"version": "a", "deployedAt": "2026-03-01T10:00:00Z"}}}


class FakeWriter(writer.Writer):
    """The real writer (its plan execution and order), with each write recorded instead of sent."""

    def __init__(self, api: FakeApi) -> None:
        super().__init__(api, identity="test")
        self.api: FakeApi = api
        self.writes: list[tuple[str, Any]] = []

    async def create_rollout(self, namespace: str, source: str) -> dict[str, Any]:
        created = resource.new_object(namespace, source)
        created["metadata"] |= {"resourceVersion": "1", "generation": 1}
        self.api.rollouts.append(created)
        self.writes.append(("create", source))
        return created

    async def write_rollout_status(self, status: plan.RolloutStatus) -> str:
        self.writes.append(("status", status.patch["status"]["phase"]))
        self.api.rollouts[0]["status"] = status.patch["status"]
        return "ok"

    async def write_data(self, pod: pods.Pod, changes: dict[str, str | None]) -> str:
        self.writes.append(("pod", pod.name))
        return "ok"

    async def event(self, *args: Any) -> bool:
        return True

    async def set_last_known_good(self, *args: Any) -> bool:
        return True


def _pods() -> list[pods.Pod]:
    return [pods.from_json(raw(f"web-{i}", annotations={"data.autocrane.io/model": "models"}, ip=f"127.16.0.{i}"))
            for i in (1, 2)]


def test_status_first_then_requests_once_and_nothing_while_the_repository_is_down() -> None:
    api, repo = FakeApi(), FakeRepo()
    fake_writer = FakeWriter(api)
    rollouts = datarollouts.DataRollouts(api, repo, FakeProber(), fake_writer, time=clock.ManualClock(T0))  # type: ignore[arg-type]
    snapshot = _pods()

    report = asyncio.run(rollouts.run_pass(snapshot, lambda: True))
    assert fake_writer.writes == [("create", "models"), ("status", "Progressing"), ("pod", "web-1"), ("pod", "web-2")]
    assert report.requests == 2 and report.status_writes == 1

    fake_writer.writes.clear()
    asyncio.run(rollouts.run_pass(snapshot, lambda: True))  # the informer has not seen our writes yet
    assert fake_writer.writes == []

    repo.down = True
    assert asyncio.run(rollouts.run_pass(snapshot, lambda: True)) == datarollouts.Report()
    assert fake_writer.writes == []


def test_a_standby_writes_nothing() -> None:
    api = FakeApi()
    fake_writer = FakeWriter(api)
    rollouts = datarollouts.DataRollouts(api, FakeRepo(), FakeProber(), fake_writer)  # type: ignore[arg-type]
    asyncio.run(rollouts.run_pass(_pods(), lambda: False))
    assert fake_writer.writes == []


class ScopedRepo(FakeRepo):
    """Keeps last known goods per namespace, as the repository does, and records the writes."""

    def __init__(self) -> None:
        super().__init__()
        self.lkg = "b"
        self.scoped: dict[str, str] = {}
        self.puts: list[tuple[str, str, str | None]] = []

    async def manifest(self) -> dict[str, manifests.SourceManifest]:
        found = (await super().manifest())["models"]
        return {"models": manifests.SourceManifest("models", found.versions, self.lkg, dict(self.scoped))}

    async def set_last_known_good(self, source: str, version: str, namespace: str | None = None) -> None:
        self.puts.append((source, version, namespace))
        if namespace is None:
            self.lkg = version
        else:
            self.scoped[namespace] = version


def test_two_namespaces_sharing_a_source_each_write_their_own_last_known_good_once() -> None:
    repo = ScopedRepo()
    api = FakeApi()
    for namespace, lkg in (("ns-a", "a"), ("ns-b", "b")):  # ns-a rolled b back, ns-b completed it
        obj = resource.new_object(namespace, "models")
        obj["metadata"] |= {"resourceVersion": "1", "generation": 1}
        obj["status"] = {"phase": "RolledBack" if lkg == "a" else "Succeeded", "lastKnownGood": lkg,
                         "held": ["b"] if lkg == "a" else []}
        api.rollouts.append(obj)

    class ScopedWriter(writer.Writer):
        """The real writer with the real repository call; the status writes are accepted unsent."""

        async def write_rollout_status(self, status: plan.RolloutStatus) -> str:
            return "ok"

        async def event(self, *args: Any) -> bool:
            return True

    snapshot = [pods.from_json(raw(f"web-{ns}", namespace=ns, annotations={"data.autocrane.io/model": "models"}))
                for ns in ("ns-a", "ns-b")]
    scoped_writer = ScopedWriter(api, identity="test", repository=repo)  # type: ignore[arg-type]
    rollouts = datarollouts.DataRollouts(api, repo, FakeProber(), scoped_writer,  # type: ignore[arg-type]
                                         time=clock.ManualClock(T0))
    for _ in range(4):
        asyncio.run(rollouts.run_pass(snapshot, lambda: True))
    assert repo.puts == [("models", "a", "ns-a")], "ns-a's own once; ns-b agrees with the source's: no write"
    assert repo.scoped == {"ns-a": "a"} and repo.lkg == "b"


def test_a_declaration_the_datadeployer_refuses_is_left_out_and_said_once(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeApi()
    fake_writer = FakeWriter(api)
    rollouts = datarollouts.DataRollouts(api, FakeRepo(), FakeProber(), fake_writer)  # type: ignore[arg-type]
    bad = pods.from_json(raw("bad", annotations={"data.autocrane.io/m": "../../etc", "data.autocrane.io/x": "models"}))
    with caplog.at_level(logging.WARNING, logger="controller.datarollouts"):
        for _ in range(3):
            asyncio.run(rollouts.run_pass([bad], lambda: True))
    said = [r for r in caplog.records if "left out of data rollouts" in r.getMessage()]
    assert len(said) == 1 and said[0].key == "data.autocrane.io/m"
    assert [w for w in fake_writer.writes if w[0] == "create"] == [("create", "models")]  # the valid one still rolls


def _phase(namespace: str, phase: str) -> float | None:
    return core_metrics.REGISTRY.get_sample_value("autocrane_controller_rollout_phase_info",
                                                  {"namespace": namespace, "source": "models", "phase": phase})


def test_a_rollout_no_longer_seen_leaves_the_metrics_with_its_last_phase() -> None:
    """Else a deleted rollout's gauges stay at their last values, and its alerts fire for good."""
    api = FakeApi()
    rollouts = datarollouts.DataRollouts(api, FakeRepo(), FakeProber(), FakeWriter(api),  # type: ignore[arg-type]
                                         time=clock.ManualClock(T0))
    asyncio.run(rollouts.run_pass(_pods(), lambda: True))
    namespace = _pods()[0].namespace
    assert _phase(namespace, "Progressing") == 1 and _phase(namespace, "Idle") == 0

    asyncio.run(rollouts.run_pass([], lambda: True))  # its pods (and the namespace with them) gone
    assert _phase(namespace, "Progressing") is None and _phase(namespace, "Idle") is None
