"""Staged app rollouts on the real control plane, with the real Deployment controller (docs/app-rollouts.md).

One namespace, one injector (its ``/hold`` registered as the chart registers it, with a URL) and one
controller for the whole module; each test has its own group of Deployments in it, on KWOK pods
whose watchdogs :class:`tests.cluster.controllerkit.Fleet` serves on the pods' IPs (the pods of
``BAD`` answer 500). Bakes are 1-3 s and the controller's pass 0.3 s. What happened when is read
from the controller's own log lines, written once the AppRollout status they describe is stored.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.cluster import approlloutkit as kit
from tests.cluster import harness, webhookkit
from tests.cluster.controllerkit import ControllerProcess, Fleet, free_port
from tests.cluster.harness import wait_until

pytestmark = pytest.mark.cluster
GOOD, BAD = kit.GOOD, kit.BAD


class World:
    """The module's namespace, watchdog fleet, injector and controller (restartable)."""

    def __init__(self, cluster: harness.Cluster, namespace: str, port: int, fleet: Fleet) -> None:
        self.cluster, self.namespace, self.port, self.fleet = cluster, namespace, port, fleet
        self.controllers: list[ControllerProcess] = []
        self.injector: webhookkit.Injector | None = None

    def start_controller(self) -> ControllerProcess:
        proc = ControllerProcess(self.cluster, self.namespace, identity=f"app-{len(self.controllers)}").start()
        self.controllers.append(proc)
        return proc

    @property
    def controller(self) -> ControllerProcess:
        return self.controllers[-1]

    def lines(self, message: str, **fields: Any) -> list[dict[str, Any]]:
        """Log lines of every controller so far with ``message`` and ``fields``, in time order."""
        found = [line for proc in self.controllers for line in proc.lines()
                 if line.get("message") == message and all(line.get(k) == v for k, v in fields.items())]
        return sorted(found, key=kit.when)

    def deployment(self, name: str, group: str, stage: int | None, **kwargs: Any) -> dict[str, Any]:
        return kit.deployment(name, group, stage, self.port, **kwargs)


@pytest.fixture(scope="module")
def world(cluster: harness.Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if not cluster.local:
        pytest.skip("pods are served on loopback pod IPs only on the local KWOK control plane")
    kit.install_crd(cluster)
    namespace = f"approllouts-{uuid.uuid4().hex[:6]}"
    cluster.create_namespace(namespace)
    port = free_port()
    with Fleet(cluster, namespace, port) as fleet, \
            webhookkit.registered(cluster, tmp_path_factory.mktemp("injector")) as injector:
        found = World(cluster, namespace, port, fleet)
        found.injector = injector
        found.start_controller()
        try:
            yield found
        except BaseException:
            print(f"--- controller log tail ---\n{found.controller.tail()}")
            raise
        finally:
            for proc in found.controllers:
                proc.stop()
    cluster.delete_namespace(namespace)


@pytest.fixture
def logs_on_failure(world: World, request: pytest.FixtureRequest) -> Iterator[None]:
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed != failed:
        print(f"--- controller log tail ---\n{world.controller.tail(80)}")
        if world.injector is not None:
            print(f"--- injector log tail ---\n{world.injector.log.read_text()[-3000:]}")


def test_three_stages_roll_forward_each_after_the_previous_baked_held_through_applies_and_a_restart(
        world: World, logs_on_failure: None) -> None:
    cluster, ns = world.cluster, world.namespace
    stages = {"fwd-canary": 0, "fwd-zone-a": 1, "fwd-zone-b": 2}
    kit.create_group(cluster, ns, "fwd", *(world.deployment(n, "fwd", s) for n, s in stages.items()),
                     bakeSeconds=3, progressDeadlineSeconds=60)
    for name in stages:
        admitted = kit.set_image(cluster, ns, name, "registry.invalid/app:2")
        assert admitted.spec.paused is True, f"{name}: the webhook pauses a new template in the same request"
    # An apply that leaves `paused` out, and one that sets it false, do not release a held stage.
    assert _replace_without_paused(cluster, ns, "fwd-zone-b").spec.paused is True
    assert cluster.apps.patch_namespaced_deployment("fwd-zone-b", ns, {"spec": {"paused": False}}).spec.paused is True

    # While stage 0 bakes, no later stage has a ReplicaSet (so not a pod) of the new template.
    kit.wait_phase(cluster, ns, "fwd", "Baking", stage=0)
    for later in ("fwd-zone-a", "fwd-zone-b"):
        assert "registry.invalid/app:2" not in kit.replica_set_images(cluster, ns, later)
    # Restart the controller in the middle of stage 1's bake: the new one goes on from the status.
    before = kit.wait_phase(cluster, ns, "fwd", "Baking", stage=1)
    world.controller.stop()
    assert kit.status(cluster, ns, "fwd")["rolledOutAt"] == before["rolledOutAt"]
    world.start_controller()

    wait_until("every stage on the new template", lambda: all(
        kit.runs(cluster, ns, n, "registry.invalid/app:2") for n in stages), timeout=90)
    done = kit.wait_phase(cluster, ns, "fwd", "Healthy")
    for name in stages:
        assert done["deployments"][name]["lastKnownGood"]["hash"] == kit.live_hash(cluster, ns, name)
    released = world.lines("stage released")
    baked = world.lines("stage baked")
    assert [line["stage"] for line in released] == [0, 1, 2], "each stage released exactly once, in order"
    assert [line["stage"] for line in baked] == [0, 1, 2]
    for stage in (1, 2):
        assert kit.when(released[stage]) >= kit.when(baked[stage - 1]), f"stage {stage} began before the bake"
    rolled = world.lines("stage rolled out")
    assert [line["stage"] for line in rolled] == [0, 1, 2], "the restart kept stage 1's bake clock"
    assert baked[1].get("seconds") is not None
    # The new controller took over stage 1 without releasing it again and released stage 2.
    assert [line["stage"] for line in world.controllers[-1].lines() if line.get("message") == "stage released"] == [2]
    _figure(world, "bake end -> next release", [
        kit.when(next(w for w in world.lines("deployment written", verb="release")
                      if w["deployment"] == f"{ns}/{name}")) - (math.floor(kit.when(rolled[stage - 1])) + 3)
        for name, stage in (("fwd-zone-a", 1), ("fwd-zone-b", 2))])


def _replace_without_paused(cluster: harness.Cluster, ns: str, name: str) -> Any:
    """``kubectl replace`` of the Deployment with ``spec.paused`` left out (again on a 409: the
    Deployment controller writes its status meanwhile)."""
    for _ in range(10):
        body = cluster.apps.read_namespaced_deployment(name, ns)
        body.spec.paused = None
        try:
            return cluster.apps.replace_namespaced_deployment(name, ns, body)
        except client.exceptions.ApiException as exc:
            if exc.status != 409:
                raise
    raise AssertionError(f"{name}: replaced under our feet 10 times")


def _figure(world: World, what: str, seconds: list[float]) -> None:
    print(f"measured {what}: " + ", ".join(f"{s:.2f}s" for s in seconds))


def test_a_failing_stage_0_rolls_back_stage_1_never_starts_a_new_pod_and_scaling_a_held_stage_works(
        world: World, logs_on_failure: None) -> None:
    cluster, ns = world.cluster, world.namespace
    kit.create_group(cluster, ns, "bad", world.deployment("bad-canary", "bad", 0),
                     world.deployment("bad-zone", "bad", 1), bakeSeconds=2, progressDeadlineSeconds=60)
    world.fleet.failing_images.add(BAD)
    for name in ("bad-canary", "bad-zone"):
        kit.set_image(cluster, ns, name, BAD)

    failed = kit.wait_phase(cluster, ns, "bad", "RolledBack", reason="Watchdog")
    assert "watchdog 'app'" in failed["message"]
    wait_until("the canary back on the last known good", lambda: kit.runs(cluster, ns, "bad-canary", GOOD))
    assert set(kit.pod_images(cluster, ns, "bad-canary")) == {GOOD}
    rejected = kit.deployment_events(cluster, ns, "bad-canary", "RevisionRejected")
    assert rejected and "watchdog 'app'" in rejected[0].message
    # Stage 1 keeps the rejected template (as applied), paused, and never had a pod of it.
    zone = cluster.apps.read_namespaced_deployment("bad-zone", ns)
    assert kit.image_of(zone) == BAD and zone.spec.paused is True
    assert BAD not in kit.replica_set_images(cluster, ns, "bad-zone")
    assert set(kit.pod_images(cluster, ns, "bad-zone")) == {GOOD}
    # HPA scales through the scale subresource, which the webhook never sees: a held stage scales.
    client.AppsV1Api(cluster.api).patch_namespaced_deployment_scale("bad-zone", ns, {"spec": {"replicas": 2}})
    wait_until("the held stage scaled to 2 on the last known good", lambda: kit.pod_images(
        cluster, ns, "bad-zone") == [GOOD, GOOD])
    zone = cluster.apps.read_namespaced_deployment("bad-zone", ns)
    assert zone.spec.paused is True and BAD not in kit.replica_set_images(cluster, ns, "bad-zone")

    # The rejected template re-applied after the rollback (a GitOps sync): accepted, kept paused.
    readmitted = kit.set_image(cluster, ns, "bad-canary", BAD)
    assert kit.image_of(readmitted) == BAD and readmitted.spec.paused is True
    assert kit.status(cluster, ns, "bad")["phase"] == "RolledBack"
    assert BAD not in {i for i, n in kit.replica_set_images(cluster, ns, "bad-canary").items() if n}
    restore = world.lines("deployment written", verb="restore", deployment=f"{ns}/bad-canary")
    first = min(t for name, t in world.fleet.first_failure.items() if name.startswith("bad-canary"))
    _figure(world, "error watchdog -> rollback written", [kit.when(restore[0]) - first])


def test_a_lone_deployment_rolls_itself_back(world: World, logs_on_failure: None) -> None:
    cluster, ns = world.cluster, world.namespace
    kit.create_group(cluster, ns, "lone", world.deployment("lone", "lone", None, replicas=2), bakeSeconds=1,
                     progressDeadlineSeconds=60)
    world.fleet.failing_images.add(BAD)
    admitted = kit.set_image(cluster, ns, "lone", BAD)
    assert admitted.spec.paused is True
    kit.wait_phase(cluster, ns, "lone", "RolledBack", reason="Watchdog")
    wait_until("the lone Deployment back on the last known good", lambda: kit.runs(cluster, ns, "lone", GOOD))
    assert kit.pod_images(cluster, ns, "lone") == [GOOD, GOOD]
    # A good release afterwards rolls out and becomes the last known good.
    kit.set_image(cluster, ns, "lone", "registry.invalid/app:3")
    wait_until("the next release rolled out", lambda: kit.runs(cluster, ns, "lone", "registry.invalid/app:3"))
    done = kit.wait_phase(cluster, ns, "lone", "Healthy")
    assert done["deployments"]["lone"]["lastKnownGood"]["hash"] == kit.live_hash(cluster, ns, "lone")
