"""`make dev`'s stack: the control plane plus AutoCrane's programs and the sample workload."""

from __future__ import annotations

import os

import pytest

from autocrane.devcluster import controlplane, stack

pytestmark = pytest.mark.cluster


def test_the_dev_stack_serves_injected_sample_pods_and_unregisters_on_stop() -> None:
    if os.environ.get("AUTOCRANE_TEST_KUBECONFIG"):
        pytest.skip("starts its own local control plane; AUTOCRANE_TEST_KUBECONFIG selects an external cluster")
    registration = (f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/"
                    f"{stack.WEBHOOK_CONFIGURATION}")
    with controlplane.ControlPlane.start(controlplane.Options(nodes=1)) as plane:
        dev = stack.Stack(plane)
        dev.start()

        def injected_running_pods() -> list[dict]:
            listing = plane.get(f"/api/v1/namespaces/{stack.DEMO_NAMESPACE}/pods") or {}
            pods = [p for p in listing.get("items", []) if p["status"].get("phase") == "Running"]
            return pods if len(pods) == 3 else []

        controlplane.wait_for("3 sample pods Running", lambda: bool(injected_running_pods()), 60,
                              check=plane.check_alive)
        for pod in injected_running_pods():
            assert "injector.autocrane.io/status" in pod["metadata"]["annotations"]
            assert [c["name"] for c in pod["spec"]["initContainers"]] == ["autocrane-datadeployer-init"]

        (webhook,) = [p for p in plane.processes if p.name == "autocrane-webhook"]
        webhook.popen.terminate()
        assert webhook.popen.wait(timeout=30) == 0, webhook.tail()
        assert plane.get(registration) is None
