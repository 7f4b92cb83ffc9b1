"""The injector's containers run as rendered: no drift between the webhook's flags and the programs' CLIs.

``webhook.inject`` renders a pod; the pod is created on the real API server (so it is a pod the
API server accepts, defaults included) and each injected container of the stored pod is run the
way the kubelet would run it: its ``command`` as given (``autocrane`` is this checkout's CLI), its
downward-API environment, with only the volume paths remapped to temporary directories. An init
container must exit 0; a sidecar must stay up and answer 200 on every HTTP probe the injector gave
it (startupProbe, readinessProbe) at the pod's IP and the probe's port, and on ``/livez`` at each
declared container port.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from autocrane import keys
from tests.cluster import harness, podkit
from tests.cluster.harness import wait_until
from tests.cluster.podkit import DATA_SET, DECLARE, REQUEST_KEY, answers, http_get, request_value
from webhook import containers, inject, options
from webhook import settings as injector_settings

pytestmark = pytest.mark.cluster


def _runnable(container: dict[str, Any], remap: dict[str, str]) -> list[str]:
    """The container's command with ``autocrane`` as this checkout's CLI and volume paths remapped."""
    command = list(container["command"]) + list(container.get("args") or [])
    assert command[0] == "autocrane", command
    return [*podkit.AUTOCRANE, *(remap.get(arg, arg) for arg in command[1:])]


def _env(container: dict[str, Any], pod: dict[str, Any]) -> dict[str, str]:
    """The downward-API environment variables, resolved from the stored pod like the kubelet does."""
    fields = {"metadata.name": pod["metadata"]["name"], "metadata.namespace": pod["metadata"]["namespace"],
              "status.podIP": pod["status"]["podIP"]}
    env = {}
    for var in container.get("env") or []:
        path = var["valueFrom"]["fieldRef"]["fieldPath"]
        assert path in fields, f"{container['name']}: env {var['name']} from unexpected field {path}"
        env[var["name"]] = fields[path]
    return env


def _endpoints(container: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(what, path, port) to check: every HTTP probe the injector gave it, and /livez on each declared port."""
    found = []
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        if probe := container.get(kind):
            assert "httpGet" in probe, f"{container['name']}: {kind} is not an HTTP probe"
            found.append((kind, probe["httpGet"]["path"], int(probe["httpGet"]["port"])))
    for declared in container.get("ports") or []:
        found.append((f"port {declared['name']}", "/livez", int(declared["containerPort"])))
    return found


@pytest.mark.parametrize("native", [False, True], ids=["classic", "native"])
def test_the_injected_containers_run_as_rendered_and_answer_their_probes(
    cluster: harness.Cluster, namespace: str, tmp_path: Path, processes: podkit.Processes,
    repository: podkit.Repository, native: bool,
) -> None:
    v1 = repository.publish("hello v1")
    settings = injector_settings.load(overrides={
        "data_repository_url": repository.url, "native_sidecar": native,
        "watchdoghealthz_port": podkit.free_port(), "datadeployer_status_port": podkit.free_port()})
    rendered = inject.inject({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "injected", "annotations": {
            **DECLARE, REQUEST_KEY: request_value(v1), keys.MIN_READY_SECONDS: "1",
            "example.com/tricky": podkit.TRICKY}},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
    }, settings)
    assert rendered.skipped_reason is None, rendered
    cluster.core.create_namespaced_pod(namespace, rendered.pod)

    def running() -> dict[str, Any] | None:
        pod = cluster.core.read_namespaced_pod("injected", namespace)
        return cluster.api.sanitize_for_serialization(pod) if pod.status.phase == "Running" and \
            pod.status.pod_ip else None

    pod: dict[str, Any] = wait_until("the injected pod Running with an IP", running)
    ip = pod["status"]["podIP"]
    kubelet = podkit.Kubelet(cluster, namespace, "injected", tmp_path / "podinfo")
    kubelet.sync()
    root = tmp_path / "data"
    root.mkdir()
    remap = {containers.ANNOTATIONS_FILE: str(kubelet.annotations_file),
             options.DEFAULT_STORE_LOCATION: str(root)}

    ours = [c for c in (pod["spec"].get("initContainers") or []) + pod["spec"]["containers"]
            if c["name"] in containers.CONTAINER_NAMES]
    names = [c["name"] for c in ours]
    if native:
        assert names == [containers.DATADEPLOYER, containers.WATCHDOGHEALTHZ], names
    else:
        assert names == [containers.DATADEPLOYER_INIT, containers.DATADEPLOYER, containers.WATCHDOGHEALTHZ], names

    for container in ours:
        name, command, env = container["name"], _runnable(container, remap), _env(container, pod)
        is_init = container in (pod["spec"].get("initContainers") or [])
        if is_init and container.get("restartPolicy") != "Always":
            code, output = processes.run(name, command=command, env=env, timeout=60)
            assert code == 0, f"{name} {command}:\n{output}"
            assert (root / DATA_SET / "hello.txt").read_text() == "hello v1"
            continue
        proc = processes.start(name, command=command, env=env)
        endpoints = _endpoints(container)
        assert endpoints, f"{name} has neither a probe nor a port"
        for what, path, port in endpoints:
            url = f"http://{ip}:{port}{path}"
            wait_until(f"{name}'s {what}: GET {path} on the pod's IP",
                       lambda url=url, proc=proc: answers(url, 200, proc), timeout=30)

    # The data set arrived through whichever container did the first sync, and is acknowledged.
    assert (root / DATA_SET / "hello.txt").read_text() == "hello v1"
    status = http_get(f"http://{ip}:{settings.datadeployer_status_port}/status")
    assert status is not None and status.json()["sets"][DATA_SET]["version"] == v1["version"]
