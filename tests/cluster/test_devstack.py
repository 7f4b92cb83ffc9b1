"""`make dev`'s stack: the control plane plus AutoCrane's programs and the sample workload."""

from __future__ import annotations

import os
import urllib.request

import pytest

from devcluster import controlplane, stack

pytestmark = pytest.mark.cluster


def test_the_dev_stack_injects_runs_and_watches_the_sample_and_cleans_up() -> None:
    if os.environ.get("AUTOCRANE_TEST_KUBECONFIG"):
        pytest.skip("starts its own local control plane; AUTOCRANE_TEST_KUBECONFIG selects an external cluster")
    registration = (f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/"
                    f"{stack.WEBHOOK_CONFIGURATION}")
    with controlplane.ControlPlane.start(controlplane.Options(nodes=1)) as plane:
        dev = stack.Stack(plane)
        try:
            dev.start()

            def sample_pods() -> list[dict]:
                listing = plane.get(f"/api/v1/namespaces/{stack.DEMO_NAMESPACE}/pods") or {}
                return [p for p in listing.get("items", []) if p["status"].get("phase") == "Running"]

            def watched(level: str, pod_ip: str | None = None) -> bool:
                pods = [p for p in sample_pods() if pod_ip in (None, p["status"]["podIP"])]
                return len(pods) == (1 if pod_ip else 3) and all(
                    (p["metadata"]["annotations"].get("status.autocrane.io/app") or "").startswith(level)
                    for p in pods)

            # The app runs on each pod's IP, and the controller probes it there.
            plane.wait("3 sample pods with an ok watchdog status", lambda: watched("info"), 90)
            for pod in sample_pods():
                assert "injector.autocrane.io/status" in pod["metadata"]["annotations"]
                assert [c["name"] for c in pod["spec"]["initContainers"]] == ["autocrane-datadeployer-init"]

            victim = sample_pods()[0]["status"]["podIP"]
            failing = urllib.request.Request(f"http://{victim}:{stack.APP_PORT}/fail", method="POST")
            urllib.request.urlopen(failing, timeout=5).close()
            plane.wait("the failing watchdog recorded as error", lambda: watched("error", victim), 60)
        finally:
            dev.stop()
        assert not dev.apps

        (webhook,) = [p for p in plane.processes if p.name == "autocrane-webhook"]
        webhook.popen.terminate()
        assert webhook.popen.wait(timeout=30) == 0, webhook.tail()
        assert plane.get(registration) is None
