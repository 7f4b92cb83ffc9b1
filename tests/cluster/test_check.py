"""``autocrane check`` on a release installed by helm on the real node, good and broken four ways.

One release per module (as ``tests/cluster/test_platform.py`` installs it: the images built here,
the real node's placement, a directory source through a read-only PersistentVolume), and an
opted-in namespace for the dry-run injection. A good install gets a clean bill; then each fault of
issue 13 is made, named by ``autocrane check`` (exit 1, exactly the checks it breaks fail), and
repaired before the next:

1. the webhook's caBundle replaced by another CA's (patched in the MutatingWebhookConfiguration);
2. the controller scaled to 0 (its replicas release the Lease as they stop: no live leader);
3. the data repository scaled to 0 (its ``/readyz`` unreachable through the service proxy);
4. the webhook scaled to 0 (its Service without endpoints; the dry-run pod is refused).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from controller.commands import check
from devcluster import helmstack
from tests.cluster import approlloutkit, harness, helmkit
from tests.cluster.datakit import install_crd
from tests.cluster.harness import wait_until
from tests.webhook import tlstools
from webhook import checkinject

pytestmark = [pytest.mark.cluster, pytest.mark.realnode]

RELEASE = "ac-check"
MWC = f"{RELEASE}-injector"


class Install(helmkit.Release):
    """The release ``autocrane check`` is run against."""

    def check(self) -> tuple[int, dict[str, list[dict[str, Any]]]]:
        """Run ``autocrane check -o json``: (exit code, the results by check)."""
        code, text = self.run("-o", "json")
        by_check: dict[str, list[dict[str, Any]]] = {}
        for one in json.loads(text):
            by_check.setdefault(one["check"], []).append(one)
        return code, by_check

    def run(self, *extra: str) -> tuple[int, str]:
        """``autocrane check`` in this process: (exit code, what it printed)."""
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = check.main(["--kubeconfig", str(self.cluster.kubeconfig), "-n", self.namespace,
                               "--release", RELEASE, *extra])
        return code, out.getvalue()

    def scale(self, component: str, replicas: int) -> None:
        body = {"spec": {"replicas": replicas}}
        if component == "datarepository":  # a StatefulSet (its volume)
            self.cluster.apps.patch_namespaced_stateful_set_scale(f"{RELEASE}-{component}", self.namespace, body)
        else:
            self.cluster.apps.patch_namespaced_deployment_scale(f"{RELEASE}-{component}", self.namespace, body)

    def ready(self, component: str, count: int) -> None:
        def done() -> bool:
            pods = [p for p in self.cluster.core.list_namespaced_pod(self.namespace, label_selector=(
                f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}")).items
                if p.metadata.deletion_timestamp is None]
            return len(pods) == count and all(any(c.type == "Ready" and c.status == "True"
                                                  for c in p.status.conditions or []) for p in pods)

        wait_until(f"{count} {component} pods ready", done, timeout=90)


def failed(results: dict[str, list[dict[str, Any]]]) -> set[str]:
    return {name for name, found in results.items() if any(r["ok"] is False for r in found)}


def _tune(values: dict[str, Any]) -> None:
    values["crds"] = {"install": False}  # cluster-wide: made here as test_chart_controller.py does
    values["webhook"]["replicas"] = 1
    values["controller"]["replicas"] = 1


def _crds(release: Install) -> None:
    install_crd(release.cluster)
    install_crd(release.cluster, approlloutkit.CRD)


@pytest.fixture(scope="module")
def install(cluster: harness.Cluster) -> Iterator[Install]:
    with helmkit.platform_release(cluster, RELEASE, Install, _tune, _crds) as release:
        yield release


def _clean(install: Install) -> dict[str, list[dict[str, Any]]]:
    """Wait for a clean bill (the leader's first renewal, the repository's first poll) and return it."""
    def clean() -> dict[str, list[dict[str, Any]]] | None:
        code, results = install.check()
        return results if code == 0 else None

    return wait_until("autocrane check: a clean bill", clean, timeout=60, interval=1)


def test_a_good_install_gets_a_clean_bill(install: Install) -> None:
    results = _clean(install)
    assert failed(results) == set()
    for name in ("crd", "webhook", "cabundle", "endpoints", "leader", "repository", "namespaces", "injection"):
        assert name in results and all(r["ok"] is True for r in results[name]), (name, results.get(name))
    assert install.apps in results["namespaces"][0]["message"]


def test_check_inject_explains_with_the_installed_injectors_settings(install: Install, tmp_path: Path) -> None:
    """Not the defaults: the images (and everything else) the release's injector would inject."""
    pod = tmp_path / "pod.yaml"
    pod.write_text(json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "api", "annotations": {"data.autocrane.io/model": helmstack.SOURCE}},
        "spec": {"containers": [{"name": "api", "image": "shop/api:3"}]}}))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = checkinject.main([str(pod), "--release", RELEASE, "--release-namespace", install.namespace,
                                 "--kubeconfig", str(install.cluster.kubeconfig)])
    said = out.getvalue()
    assert code == 0, said
    assert said.startswith(f"injector settings: ConfigMap {install.namespace}/{RELEASE}-injector-config\n"), said
    assert install.images["sidecar"].ref in said.rpartition("; images ")[2].strip().split(", "), said

    # A pod read from the API server (one connection for the settings, the pod and its namespace): the
    # webhook injected it at creation, in the opted-in namespace. It is never scheduled (no such node).
    body = json.loads(pod.read_text())
    body["spec"]["nodeSelector"] = {"autocrane.io/no-such-node": "true"}
    install.cluster.core.create_namespaced_pod(install.apps, body)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = checkinject.main(["api", "-n", install.apps, "--release", RELEASE, "--release-namespace",
                                 install.namespace, "--kubeconfig", str(install.cluster.kubeconfig)])
    said = out.getvalue()
    assert code == 0, said
    assert said.startswith(f"injector settings: ConfigMap {install.namespace}/{RELEASE}-injector-config\n"), said
    assert f"namespace {install.apps}: opted in" in said and "injected already: " in said, said


def test_a_wrong_ca_bundle_is_named(install: Install) -> None:
    admission = client.AdmissionregistrationV1Api(install.cluster.api)
    config = admission.read_mutating_webhook_configuration(MWC)
    index = next(i for i, w in enumerate(config.webhooks) if w.name == "inject.autocrane.io")
    original = config.webhooks[index].client_config.ca_bundle
    wrong = base64.b64encode(tlstools.new_ca("not-the-webhooks-ca").cert_pem).decode()
    path = f"/webhooks/{index}/clientConfig/caBundle"

    def named_while_still_wrong() -> tuple[int, dict[str, list[dict[str, Any]]]] | None:
        """A check of the wrong bundle, or None when a webhook replica merged its CA back meanwhile (each
        does every minute, so the fault heals by itself) and the check may have seen the healed one."""
        admission.patch_mutating_webhook_configuration(MWC, [{"op": "replace", "path": path, "value": wrong}])
        code, results = install.check()
        after = admission.read_mutating_webhook_configuration(MWC).webhooks[index].client_config.ca_bundle
        return (code, results) if after == wrong else None

    try:
        code, results = wait_until("a check of the wrong caBundle", named_while_still_wrong, timeout=120, interval=1)
        assert code == 1
        assert {"cabundle"} <= failed(results) <= {"cabundle", "injection"}
        assert "does not hold the webhook's CA" in results["cabundle"][0]["message"]
    finally:
        admission.patch_mutating_webhook_configuration(MWC, [{"op": "replace", "path": path, "value": original}])
    _clean(install)


def test_a_controller_scaled_to_0_leaves_no_live_leader(install: Install) -> None:
    install.scale("controller", 0)

    def named() -> dict[str, list[dict[str, Any]]] | None:
        code, results = install.check()
        return results if code == 1 else None

    results = wait_until("autocrane check names the missing leader", named, timeout=45, interval=1)
    assert failed(results) == {"leader"}
    install.scale("controller", 1)
    install.ready("controller", 1)
    _clean(install)


def test_an_unreachable_repository_is_named(install: Install) -> None:
    install.scale("datarepository", 0)
    install.ready("datarepository", 0)
    code, results = install.check()
    assert code == 1 and failed(results) == {"repository"}
    assert "cannot be reached" in results["repository"][0]["message"]
    install.scale("datarepository", 1)
    install.ready("datarepository", 1)
    _clean(install)


def test_a_webhook_service_without_endpoints_is_named(install: Install) -> None:
    install.scale("injector", 0)
    install.ready("injector", 0)

    # The API server routes to the webhook by its own view of the Service's endpoints, a moment behind the
    # EndpointSlices: the dry run may still be answered by the pod that was stopping. Wait for both faults.
    def named() -> dict[str, list[dict[str, Any]]] | None:
        code, results = install.check()
        return results if code == 1 and failed(results) == {"endpoints", "injection"} else None

    results = wait_until("autocrane check names the webhook without endpoints and the dry run refused", named,
                         timeout=30, interval=1)
    assert "no endpoints" in results["injection"][0]["message"] or "refused" in results["injection"][0]["message"]
    assert "no ready endpoints" in results["endpoints"][0]["message"]
    code, text = install.run()
    assert code == 1 and "[FAIL] endpoints" in text and "fix: " in text

