"""The chart's controller: restricted security, least-privilege RBAC that is enough, and the CRD."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from devcluster import build
from tests.cluster import approlloutkit, harness, helmkit
from tests.cluster.datakit import install_crd
from tests.cluster.harness import wait_until


def _render(*values: str) -> list[dict]:
    result = helmkit.helm("template", "ac", str(helmkit.CHART), "-n", "sys",
                   *[a for v in values for a in ("--set", v)])
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def _kinds(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and "controller" in d["metadata"]["name"]]


def test_the_controller_renders_restricted_with_least_privilege() -> None:
    docs = _render("dataRepository.enabled=false", "dataRepository.externalURL=http://repo")
    (deployment,) = _kinds(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert not security["allowPrivilegeEscalation"] and security["capabilities"] == {"drop": ["ALL"]}
    assert "--data-repository=http://repo" in container["args"] and "--lease-namespace=sys" in container["args"]
    (role,) = _kinds(docs, "ClusterRole")
    granted = {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    assert granted == {("", "pods", v) for v in ("get", "list", "watch", "patch")} | {
        ("", "pods/eviction", "create"), ("", "events", "create"),
        *{("autocrane.io", "datarollouts", v) for v in ("get", "list", "watch", "create")},
        ("autocrane.io", "datarollouts/status", "patch"),
        # staged app rollouts: paused (and the template on rollback) of Deployments, never their scale
        *{("apps", "deployments", v) for v in ("get", "list", "watch", "patch")},
        *{("apps", "replicasets", v) for v in ("list", "watch")},
        *{("autocrane.io", "approllouts", v) for v in ("get", "list", "watch", "create")},
        ("autocrane.io", "approllouts/status", "patch")}
    assert len(_kinds(docs, "ClusterRoleBinding")) == 1
    crds = {d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition"}
    assert crds == {"datarollouts.autocrane.io", "approllouts.autocrane.io"}
    assert "--no-app-rollouts" not in container["args"]


def test_without_app_rollouts_the_controller_gets_no_deployment_rights_and_the_webhook_no_hold() -> None:
    docs = _render("appRollouts.enabled=false")
    (role,) = _kinds(docs, "ClusterRole")
    assert not [r for r in role["rules"] if "apps" in r["apiGroups"] or "approllouts" in r["resources"]]
    (deployment,) = _kinds(docs, "Deployment")
    assert "--no-app-rollouts" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    (mwc,) = [d for d in docs if d["kind"] == "MutatingWebhookConfiguration"]
    assert [w["name"] for w in mwc["webhooks"]] == ["inject.autocrane.io"]


def test_watching_some_namespaces_binds_the_role_only_there() -> None:
    docs = _render("controller.namespaces={a,b}")
    assert _kinds(docs, "ClusterRoleBinding") == []
    bound = {d["metadata"].get("namespace") for d in _kinds(docs, "RoleBinding")
             if "lease" not in d["metadata"]["name"]}
    assert bound == {"a", "b"}
    (deployment,) = _kinds(docs, "Deployment")
    assert {"--namespace=a", "--namespace=b"} <= set(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    assert _kinds(_render("controller.enabled=false"), "Deployment") == []


@pytest.mark.cluster
def test_installed_the_controller_runs_under_psa_restricted_and_may_do_exactly_its_job(
    cluster: harness.Cluster, namespace: str
) -> None:
    cluster.core.patch_namespace(namespace, {"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted"}}})
    # The release does not install the CRD (see test_chart.py), and `kubectl auth can-i` asks about a
    # resource the API server does not serve under the literal name, in the core group: the answer on
    # datarollouts would be "no" for the wrong reason, so the CRD is made here rather than by whichever
    # test ran before.
    install_crd(cluster)
    install_crd(cluster, approlloutkit.CRD)
    release = "ac-ctl"
    try:
        installed = helmkit.helm("upgrade", "--install", release, str(helmkit.CHART), "-n", namespace, "--wait=false",
                          "--set", "webhook.replicas=1", "--set", "crds.install=false",  # see test_chart.py
                          kubeconfig=cluster.kubeconfig)
        assert installed.returncode == 0, installed.stderr

        def running() -> bool:
            pods = cluster.core.list_namespaced_pod(namespace, label_selector=(
                f"app.kubernetes.io/instance={release},app.kubernetes.io/component=controller")).items
            return len(pods) == 2 and all(p.status.phase == "Running" for p in pods)

        wait_until("the controller's 2 pods Running under PSA restricted", running)
        kubectl = build.bin_dir() / "kubectl"
        who = f"system:serviceaccount:{namespace}:{release}-controller"

        def can(verb: str, resource: str, where: str = namespace) -> bool:
            resource, _, sub = resource.partition(":")  # "pods:eviction" is the pods/eviction subresource
            done = subprocess.run([str(kubectl), "--kubeconfig", str(cluster.kubeconfig), "auth", "can-i", verb,
                                   resource, "-n", where, "--as", who, *(["--subresource", sub] if sub else [])],
                                  capture_output=True, text=True, timeout=30)
            return done.stdout.strip() == "yes"

        for verb, resource in (("patch", "pods"), ("watch", "pods"), ("create", "pods:eviction"),
                               ("create", "events"), ("create", "datarollouts.autocrane.io"),
                               ("patch", "datarollouts.autocrane.io:status"),
                               ("patch", "deployments.apps"), ("list", "replicasets.apps"),
                               ("create", "approllouts.autocrane.io"), ("patch", "approllouts.autocrane.io:status"),
                               ("update", f"leases.coordination.k8s.io/{release}-controller")):
            assert can(verb, resource), f"the controller needs {verb} {resource}"
        for verb, resource in (("delete", "pods"), ("get", "secrets"), ("patch", "datarollouts.autocrane.io"),
                               ("update", "leases.coordination.k8s.io/someone-else"), ("create", "pods"),
                               ("create", "leases.coordination.k8s.io"),
                               ("patch", "pods:status"), ("patch", "deployments.apps:scale"),
                               ("update", "deployments.apps"), ("patch", "replicasets.apps"),
                               ("patch", "approllouts.autocrane.io")):
            assert not can(verb, resource), f"the controller must not {verb} {resource}"
        assert not can("update", f"leases.coordination.k8s.io/{release}-controller", "default")
    finally:
        removed = helmkit.helm("uninstall", release, "-n", namespace, "--wait", kubeconfig=cluster.kubeconfig)
    assert removed.returncode == 0, removed.stderr
