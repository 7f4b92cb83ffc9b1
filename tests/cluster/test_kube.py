"""The one client on the real API server: what each refusal is typed as, and a watch read line by line."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from autocrane import errors, kube
from tests.cluster import harness
from tests.cluster.controllerkit import deployment, free_port, ready_pods
from tests.cluster.harness import wait_until

pytestmark = pytest.mark.cluster
T = TypeVar("T")


def _run(cluster: harness.Cluster, use: Callable[[kube.Kube], Awaitable[T]]) -> T:
    async def scenario() -> T:
        client = await kube.Kube.connect(cluster.kubeconfig)
        try:
            return await use(client)
        finally:
            await client.close()

    return asyncio.run(scenario())


def _configmap(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def test_refusals_come_back_as_their_own_error_types(cluster: harness.Cluster, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"

    async def use(client: kube.Kube) -> None:
        with pytest.raises(errors.NotFound):
            await client.request("GET", f"{path}/missing")
        created = await client.request("POST", path, body=_configmap("one", a="1"))
        with pytest.raises(errors.AlreadyExists):
            await client.request("POST", path, body=_configmap("one"))
        stale = {**created, "data": {"a": "2"}}
        await client.request("PUT", f"{path}/one", body=stale)
        with pytest.raises(errors.Conflict) as conflict:
            await client.request("PUT", f"{path}/one", body=stale)  # the resourceVersion it carries is old now
        assert conflict.value.status == 409 and "modified" in conflict.value.message
        with pytest.raises(errors.Invalid):
            await client.request("PATCH", f"{path}/one", body=[{"op": "test", "path": "/data/a", "value": "1"}],
                                 content_type=kube.JSON_PATCH)
        with pytest.raises(errors.Invalid):
            await client.request("POST", path, body=_configmap("Not_A_Name"))

    _run(cluster, use)


def test_a_watch_yields_events_as_they_happen(cluster: harness.Cluster, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"

    async def use(client: kube.Kube) -> list[tuple[str, str]]:
        listed = await client.request("GET", path)
        version = listed["metadata"]["resourceVersion"]
        await client.request("POST", path, body=_configmap("watched"))
        await client.request("DELETE", f"{path}/watched")
        seen = []
        async for event in client.watch(path, {"resourceVersion": version, "timeoutSeconds": 5}, 5):
            seen.append((event["type"], event["object"]["metadata"]["name"]))
            if event["type"] == "DELETED":
                break
        return seen

    assert _run(cluster, use) == [("ADDED", "watched"), ("DELETED", "watched")]


def test_evicting_a_pod_two_budgets_select_is_typed_for_what_it_is(cluster: harness.Cluster, namespace: str) -> None:
    cluster.apps.create_namespaced_deployment(namespace, deployment("twice", 2, free_port()))
    pod = ready_pods(cluster, namespace, "twice", 2)[0].metadata.name
    for name in ("one", "two"):
        cluster.policy.create_namespaced_pod_disruption_budget(namespace, {
            "metadata": {"name": name}, "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "twice"}}}})
    wait_until("both budgets observed", lambda: all(
        (b := cluster.policy.read_namespaced_pod_disruption_budget(n, namespace)).status
        and b.status.observed_generation == b.metadata.generation for n in ("one", "two")))
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": namespace}}

    async def use(client: kube.Kube) -> errors.KubeError:
        with pytest.raises(errors.MultiplePodDisruptionBudgets) as refused:
            await client.request("POST", f"/api/v1/namespaces/{namespace}/pods/{pod}/eviction",
                                 query={"dryRun": "All"}, body=eviction)
        return refused.value

    refused = _run(cluster, use)
    assert refused.status == 500 and "more than one PodDisruptionBudget" in refused.message
