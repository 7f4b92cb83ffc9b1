"""The Helm chart: it lints, matches the Python registration, and installs on a real API server."""

from __future__ import annotations

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.cluster import harness, helmkit
from tests.cluster.harness import wait_until
from webhook import registration

pytestmark = pytest.mark.cluster

def _render(*values: str, namespace: str = "autocrane-system", release: str = "autocrane") -> list[dict]:
    sets = [a for v in values for a in ("--set", v)]
    result = helmkit.helm("template", release, str(helmkit.CHART), "-n", namespace, *sets)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_the_chart_lints_strictly() -> None:
    result = helmkit.helm("lint", "--strict", str(helmkit.CHART))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("mode", ["self-signed", "cert-manager"])
def test_the_rendered_webhook_registration_is_the_one_webhook_registration_builds(mode: str) -> None:
    (rendered,) = [d for d in _render(f"tls.mode={mode}") if d["kind"] == "MutatingWebhookConfiguration"]
    expected = registration.mutating_webhook_configuration(
        namespace="autocrane-system", ca_bundle=None, service="autocrane-injector")
    assert rendered["metadata"]["name"] == expected["metadata"]["name"]
    assert rendered["webhooks"] == expected["webhooks"]
    injected = "cert-manager.io/inject-ca-from" in rendered["metadata"].get("annotations", {})
    assert injected == (mode == "cert-manager")


def test_secret_mode_requires_its_secret_and_ca_bundle() -> None:
    chart = str(helmkit.CHART)
    no_ca = helmkit.helm("template", "autocrane", chart, "--set", "tls.mode=secret", "--set", "tls.secretName=s")
    assert no_ca.returncode != 0
    assert "tls.caBundle (PEM) is required" in no_ca.stderr
    no_secret = helmkit.helm("template", "autocrane", chart, "--set", "tls.mode=secret", "--set", "tls.caBundle=PEM")
    assert no_secret.returncode != 0
    assert "tls.secretName is required" in no_secret.stderr
    both = _render("tls.mode=secret", "tls.secretName=s", "tls.caBundle=PEM")
    (mwc,) = [d for d in both if d["kind"] == "MutatingWebhookConfiguration"]
    assert mwc["webhooks"][0]["clientConfig"]["caBundle"] == "UEVN"  # base64 of "PEM"


def test_unknown_values_are_refused_by_the_schema() -> None:
    result = helmkit.helm("template", "autocrane", str(helmkit.CHART), "--set", "webhook.replica=3")
    assert result.returncode != 0
    assert "replica" in result.stderr


def test_helm_upgrade_install_runs_the_injector_in_a_restricted_namespace_and_uninstalls_cleanly(
    cluster: harness.Cluster, namespace: str
) -> None:
    cluster.core.patch_namespace(namespace, {"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted"}}})
    release = "ac-chart"
    # crds.install=false: the CRD is cluster-wide, kept on uninstall, and owned by the first release
    # that made it; Helm refuses to adopt it into another (test_platform.py installs it).
    install = ["upgrade", "--install", release, str(helmkit.CHART), "-n", namespace, "--wait=false",
               "--set", "crds.install=false"]
    try:
        first = helmkit.helm(*install, kubeconfig=cluster.kubeconfig)
        assert first.returncode == 0, first.stderr
        again = helmkit.helm(*install, kubeconfig=cluster.kubeconfig)  # upgrading in place is a no-op
        assert again.returncode == 0, again.stderr

        def running() -> bool:
            pods = cluster.core.list_namespaced_pod(
                namespace, label_selector=f"app.kubernetes.io/instance={release},app.kubernetes.io/component=injector"
            ).items
            return len(pods) == 2 and all(p.status.phase == "Running" for p in pods)

        # PodSecurity enforces on pods: had any container broken `restricted`, none would exist.
        wait_until("the injector's 2 pods Running under PSA restricted", running)
    finally:
        removed = helmkit.helm("uninstall", release, "-n", namespace, "--wait", kubeconfig=cluster.kubeconfig)
    assert removed.returncode == 0, removed.stderr
    with pytest.raises(ApiException) as gone:
        client.AdmissionregistrationV1Api(cluster.api).read_mutating_webhook_configuration(f"{release}-injector")
    assert gone.value.status == 404
