"""Staged app rollouts on the real control plane, with the real Deployment controller (docs/app-rollouts.md).

One namespace, one injector (its ``/hold`` registered as the chart registers it, with a URL) and one
controller for the whole module; each test has its own group of Deployments in it, on KWOK pods
whose watchdogs :class:`tests.cluster.controllerkit.Fleet` serves on the pods' IPs (the pods of
``BAD`` answer 500). Bakes are 1-3 s and the controller's pass 0.3 s. What happened when is read
from the controller's own log lines, written once the AppRollout status they describe is stored.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from autocrane import approllouts, kube, watchdogs
from controller import plan, pods
from controller.apiserver import writer
from controller.approllouts import loop
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
    kit.wait_runs(cluster, ns, "bad-canary", GOOD, "the canary back on the last known good")
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
    kit.wait_runs(cluster, ns, "lone", GOOD, "the lone Deployment back on the last known good")
    assert kit.pod_images(cluster, ns, "lone") == [GOOD, GOOD]
    # A good release afterwards rolls out and becomes the last known good.
    kit.set_image(cluster, ns, "lone", "registry.invalid/app:3")
    kit.wait_runs(cluster, ns, "lone", "registry.invalid/app:3", "the next release rolled out")
    done = kit.wait_phase(cluster, ns, "lone", "Healthy")
    assert done["deployments"]["lone"]["lastKnownGood"]["hash"] == kit.live_hash(cluster, ns, "lone")


def _cli(world: World, *args: str) -> str:
    done = subprocess.run([str(Path(sys.executable).parent / "autocrane"), "rollout", *args, "-n", world.namespace,
                           "--kubeconfig", str(world.cluster.kubeconfig)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_v3_during_v2s_bake_rolls_back_to_v1_without_old_replica_sets_and_promote_abort_retry_from_the_cli(
        world: World, logs_on_failure: None) -> None:
    cluster, ns = world.cluster, world.namespace
    body = world.deployment("cli", "cli", None)
    body["spec"]["revisionHistoryLimit"] = 0  # old ReplicaSets are deleted: a rollback needs our own copy
    kit.create_group(cluster, ns, "cli", body, bakeSeconds=600, progressDeadlineSeconds=60)
    v2, v3 = "registry.invalid/app:2", "registry.invalid/app:flaky"
    kit.set_image(cluster, ns, "cli", v2)
    kit.wait_phase(cluster, ns, "cli", "Baking", stage=0)
    wait_until("v1's ReplicaSet deleted", lambda: set(kit.replica_set_images(cluster, ns, "cli")) == {v2})
    # v3 arrives while v2 bakes and fails: the rollback target stays v1 (v2 never passed its gate).
    world.fleet.failing_images.add(v3)
    kit.set_image(cluster, ns, "cli", v3)
    kit.wait_phase(cluster, ns, "cli", "RolledBack", reason="Watchdog")
    kit.wait_runs(cluster, ns, "cli", GOOD, "back on v1")

    # retry: the rejected v3, re-applied (held), rolls out again once its watchdog is fixed.
    assert kit.set_image(cluster, ns, "cli", v3).spec.paused is True
    world.fleet.failing_images.discard(v3)
    assert "retried" in _cli(world, "retry", "cli")
    kit.wait_phase(cluster, ns, "cli", "Baking", stage=0)
    # promote: pass the 600 s bake now; v3 becomes the last known good.
    assert "promoted" in _cli(world, "promote", "cli")
    done = kit.wait_phase(cluster, ns, "cli", "Healthy")
    assert kit.runs(cluster, ns, "cli", v3)
    assert done["deployments"]["cli"]["lastKnownGood"]["hash"] == kit.live_hash(cluster, ns, "cli")
    # abort: roll the baking release back now, to v3.
    kit.set_image(cluster, ns, "cli", "registry.invalid/app:5")
    kit.wait_phase(cluster, ns, "cli", "Baking", stage=0)
    assert "aborted" in _cli(world, "abort", "cli")
    kit.wait_phase(cluster, ns, "cli", "RolledBack", reason="Abort")
    kit.wait_runs(cluster, ns, "cli", v3, "back on v3")
    status_text = subprocess.run([str(Path(sys.executable).parent / "autocrane"), "status", "-n", ns, "--kubeconfig",
                                  str(cluster.kubeconfig)], capture_output=True, text=True, timeout=60).stdout
    assert f"group {ns}/cli: RolledBack" in status_text and "autocrane rollout retry cli" in status_text


def test_old_revision_pods_failing_too_hold_the_stage_without_rollback_until_the_environment_heals(
        world: World, logs_on_failure: None) -> None:
    cluster, ns = world.cluster, world.namespace
    old, new = "registry.invalid/app:env-1", "registry.invalid/app:env-2"
    kit.create_group(cluster, ns, "env", world.deployment("env-canary", "env", 0, image=old),
                     world.deployment("env-zone", "env", 1, image=old), bakeSeconds=1, progressDeadlineSeconds=60)
    world.fleet.failing_images.update({old, new})  # the environment fails: every pod, old and new
    for name in ("env-canary", "env-zone"):
        kit.set_image(cluster, ns, name, new)
    stuck = kit.wait_phase(cluster, ns, "env", "Stuck", reason="BaselineFailing")
    assert "held without rollback" in stuck["message"]
    assert kit.image_of(cluster.apps.read_namespaced_deployment("env-canary", ns)) == new
    assert not world.lines("deployment written", verb="restore", deployment=f"{ns}/env-canary")
    assert kit.deployment_events(cluster, ns, "env-canary", "BaselineFailing")
    world.fleet.failing_images.difference_update({old, new})  # healed: the stage goes on
    wait_until("both stages on the new template", lambda: all(
        kit.runs(cluster, ns, n, new) for n in ("env-canary", "env-zone")), timeout=60)
    kit.wait_phase(cluster, ns, "env", "Healthy")


def test_the_rejected_template_reapplied_during_the_rollback_is_refused_and_after_it_is_held(
        world: World, logs_on_failure: None) -> None:
    """``minReadySeconds: 5`` (set after the adoption, so that one is quick) makes the restored pod
    count available only 5 s after it is ready: the rollback rolls out for at least that long, so
    the re-apply lands in it on purpose, not by luck of timing."""
    cluster, ns = world.cluster, world.namespace
    kit.create_group(cluster, ns, "during", world.deployment("during", "during", None), bakeSeconds=60,
                     progressDeadlineSeconds=60)
    slow = cluster.apps.patch_namespaced_deployment("during", ns, {"spec": {"minReadySeconds": 5}})
    assert slow.spec.paused is not True, "the template is unchanged: nothing to hold"
    world.fleet.failing_images.add(BAD)
    kit.set_image(cluster, ns, "during", BAD)
    kit.wait_phase(cluster, ns, "during", "RolledBack", reason="Watchdog")
    wait_until("the restore written", lambda: kit.image_of(cluster.apps.read_namespaced_deployment(
        "during", ns)) == GOOD)

    # During the rollback: refused, so the rollback is not paused half-way with the rejected pod running.
    with pytest.raises(client.exceptions.ApiException) as refused:
        kit.set_image(cluster, ns, "during", BAD)
    assert refused.value.status == 409, refused.value.body
    assert "was rejected and the rollback" in refused.value.body and "is still rolling out" in refused.value.body
    kept = cluster.apps.read_namespaced_deployment("during", ns)
    assert kit.image_of(kept) == GOOD and kept.spec.paused is not True, "the refused apply changed nothing"

    # After it: the same apply is accepted and held, the pods stay on the last known good.
    kit.wait_runs(cluster, ns, "during", GOOD, "the rollback rolled out", timeout=30)
    readmitted = kit.set_image(cluster, ns, "during", BAD)
    assert kit.image_of(readmitted) == BAD and readmitted.spec.paused is True
    assert kit.status(cluster, ns, "during")["phase"] == "RolledBack"
    assert kit.replica_set_images(cluster, ns, "during")[BAD] == 0
    assert kit.pod_images(cluster, ns, "during") == [GOOD]


class _Crashed(Exception):
    """The controller process died here."""


class _DiesBeforeTheDeploymentWrites(writer.Writer):
    """The controller's writer, dying after a pass's AppRollout statuses, before its Deployment writes and Events."""

    async def execute(self, todo: plan.Plan, leading: Callable[[], bool]) -> plan.Written:
        if todo.app_actions or todo.app_events:
            raise _Crashed(", ".join(f"{a.verb} {a.deployment.key}" for a in todo.app_actions))
        return await super().execute(todo, leading)


def _a_pass_that_dies_before_the_deployment_writes(world: World) -> str:
    """One app-rollout pass of the controller's own loop, on the namespace as it is, whose process dies
    once the statuses are written; what it was about to write."""
    async def run() -> str:
        api = await kube.Kube.connect(world.cluster.kubeconfig)
        try:
            listed = await api.request("GET", f"/api/v1/namespaces/{world.namespace}/pods")
            snapshot = [pods.from_json(raw) for raw in listed["items"]]
            apps = loop.AppRollouts(api, _DiesBeforeTheDeploymentWrites(api, identity="crashed"),
                                    namespaces=[world.namespace])
            with pytest.raises(_Crashed) as crashed:
                await apps.run_pass(snapshot, {}, lambda: True)
            return str(crashed.value)
        finally:
            await api.close()

    return asyncio.run(run())


def test_a_controller_restarted_mid_rollback_restores_once_and_ends_rolled_back(
        world: World, logs_on_failure: None) -> None:
    """The controller decided a rollback and wrote it to the AppRollout status, then died before the
    restore. To get there on purpose: a tolerance (``maxErrorPods: 1``) keeps the running controller
    from rolling the failing release back while it records the pod's error watchdog; the controller
    is stopped, the tolerance removed, and one pass of the controller's own loop
    (:class:`controller.approllouts.loop.AppRollouts`, with the real writer) decides the rollback on
    the pods as the controller left them and writes its status, then dies at its first Deployment
    write (the restore) and Event. The Deployment is still on the rejected template, unpaused, its
    pod running. A new controller must restore the last known good template exactly once, with one
    ``RevisionRejected`` Event, and end RolledBack with the rejected hash recorded. (A crash *after*
    the restore leaves nothing to do but the Deployment controller's rollout.)"""
    cluster, ns = world.cluster, world.namespace
    v2 = "registry.invalid/app:crash-2"
    kit.create_group(cluster, ns, "crash", world.deployment("crash", "crash", None), bakeSeconds=600,
                     progressDeadlineSeconds=60, maxErrorPods=1)
    world.fleet.failing_images.add(v2)
    kit.set_image(cluster, ns, "crash", v2)
    kit.wait_phase(cluster, ns, "crash", "Baking", stage=0)
    wait_until("the v2 pod's watchdog recorded in error", lambda: cluster.core.list_namespaced_pod(
        ns, label_selector=f"app=crash,{watchdogs.HEALTH_LABEL}=error").items)
    world.controller.stop()
    client.CustomObjectsApi(cluster.api).patch_namespaced_custom_object(
        approllouts.API_GROUP, approllouts.VERSION, ns, approllouts.PLURAL, "crash", {"spec": {"maxErrorPods": 0}})

    about_to = _a_pass_that_dies_before_the_deployment_writes(world)
    assert f"restore {ns}/crash" in about_to
    rejected = kit.live_hash(cluster, ns, "crash")
    crashed = kit.status(cluster, ns, "crash")
    assert crashed["phase"] == "RolledBack" and crashed["reason"] == "Watchdog"
    assert crashed["deployments"]["crash"]["rejected"] == [rejected]
    stranded = cluster.apps.read_namespaced_deployment("crash", ns)
    assert kit.image_of(stranded) == v2 and stranded.spec.paused is not True
    assert kit.pod_images(cluster, ns, "crash") == [v2]
    assert not kit.deployment_events(cluster, ns, "crash", "RevisionRejected")

    restarted = world.start_controller()
    kit.wait_runs(cluster, ns, "crash", GOOD, "the restarted controller restored the last known good", timeout=30)
    done = kit.wait_phase(cluster, ns, "crash", "RolledBack", reason="Watchdog")
    record = done["deployments"]["crash"]
    assert record["lastKnownGood"]["hash"] == kit.live_hash(cluster, ns, "crash") != rejected
    assert record["rejected"] == [rejected]
    assert cluster.apps.read_namespaced_deployment("crash", ns).spec.paused is not True
    restores = [line for line in restarted.lines() if line.get("message") == "deployment written"
                and line.get("verb") == "restore" and line.get("deployment") == f"{ns}/crash"]
    assert len(restores) == 1, restores
    events = kit.deployment_events(cluster, ns, "crash", "RevisionRejected")
    assert len(events) == 1 and "restoring the last known good" in events[0].message, [e.message for e in events]
    assert kit.pod_images(cluster, ns, "crash") == [GOOD]


def test_a_held_deployment_whose_group_label_is_removed_keeps_its_pause_and_resumes_by_hand(
        world: World, logs_on_failure: None) -> None:
    """docs/app-rollouts.md: removing the label takes the Deployment out of AutoCrane's hands, held or not."""
    cluster, ns = world.cluster, world.namespace
    v2 = "registry.invalid/app:2"
    kit.create_group(cluster, ns, "left", world.deployment("left-canary", "left", 0),
                     world.deployment("left-zone", "left", 1), bakeSeconds=600, progressDeadlineSeconds=60)
    for name in ("left-canary", "left-zone"):
        assert kit.set_image(cluster, ns, name, v2).spec.paused is True
    kit.wait_phase(cluster, ns, "left", "Baking", stage=0)  # a 600 s bake: stage 1 stays held meanwhile

    label = approllouts.GROUP_LABEL.replace("/", "~1")
    unlabelled = cluster.apps.patch_namespaced_deployment(
        "left-zone", ns, [{"op": "remove", "path": f"/metadata/labels/{label}"}])
    assert approllouts.GROUP_LABEL not in (unlabelled.metadata.labels or {})
    assert unlabelled.spec.paused is True, "the pause stays as it was"
    assert v2 not in kit.replica_set_images(cluster, ns, "left-zone"), "not one pod of the held template started"

    resumed = cluster.apps.patch_namespaced_deployment("left-zone", ns, {"spec": {"paused": False}})
    assert not resumed.spec.paused, "kubectl rollout resume: the webhook no longer holds it"
    kit.wait_runs(cluster, ns, "left-zone", v2, "the resumed Deployment rolled out")
    status = kit.status(cluster, ns, "left")
    assert status["phase"] == "Baking" and status["stage"] == 0, "the rest of the group goes on as it was"
    written = [line for line in world.lines("deployment written") if line["deployment"] == f"{ns}/left-zone"]
    assert written == [], "the controller never wrote the Deployment it no longer owns"


def test_with_the_webhook_down_updates_pass_and_the_controller_holds_the_later_stages(
        world: World, logs_on_failure: None) -> None:
    """failurePolicy Ignore (last in the module: it stops the injector)."""
    cluster, ns = world.cluster, world.namespace
    v2 = "registry.invalid/app:2"
    kit.create_group(cluster, ns, "down", world.deployment("down-canary", "down", 0),
                     world.deployment("down-zone", "down", 1), bakeSeconds=2, progressDeadlineSeconds=60)
    assert world.injector is not None
    world.injector.stop()
    for name in ("down-canary", "down-zone"):
        assert kit.set_image(cluster, ns, name, v2).spec.paused is not True, "admitted unheld: the webhook is down"
    wait_until("the controller pauses the later stage", lambda: world.lines(
        "deployment written", verb="hold", deployment=f"{ns}/down-zone"))
    wait_until("both stages on the new template, one after the other", lambda: all(
        kit.runs(cluster, ns, n, v2) for n in ("down-canary", "down-zone")), timeout=60)
    released = [line["stage"] for line in world.lines("stage released", group="down")]
    assert released == [0, 1]

