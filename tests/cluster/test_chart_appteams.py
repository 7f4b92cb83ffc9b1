"""The chart's ClusterRoles for app teams: aggregated into view/edit/admin, and one to bind in a namespace.

Checked with ``kubectl auth can-i`` on the real API server, whose clusterrole-aggregation controller
(in kube-controller-manager) folds the aggregated rules into the built-in roles.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
import yaml
from kubernetes import client

from devcluster import build
from tests.cluster import approlloutkit, harness, helmkit
from tests.cluster.datakit import install_crd
from tests.cluster.harness import wait_until

RELEASE = "ac-teams"
ROLLOUTS = "datarollouts.autocrane.io"
APP_ROLLOUTS = "approllouts.autocrane.io"


def _roles() -> list[dict[str, object]]:
    result = helmkit.helm("template", RELEASE, str(helmkit.CHART), "--show-only", "templates/rbac-appteams.yaml")
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_the_roles_are_rendered_only_when_asked_for() -> None:
    names = {r["metadata"]["name"] for r in _roles()}
    assert names == {f"{RELEASE}-view", f"{RELEASE}-edit", f"{RELEASE}-app-team"}
    off = helmkit.helm("template", RELEASE, str(helmkit.CHART), "--set", "rbac.appTeams=false")
    assert off.returncode == 0 and "app-team" not in off.stdout


@pytest.fixture()
def installed_roles(cluster: harness.Cluster) -> Iterator[None]:
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    roles = _roles()
    for role in roles:
        rbac.create_cluster_role(role)
    try:
        yield
    finally:
        for role in roles:
            rbac.delete_cluster_role(role["metadata"]["name"])


@pytest.mark.cluster
def test_editors_drive_rollouts_viewers_read_them_and_the_app_team_role_does_both_in_its_namespace(
    cluster: harness.Cluster, namespace: str, installed_roles: None
) -> None:
    install_crd(cluster)  # can-i on an unserved resource answers for the wrong reason (test_chart_controller.py)
    approlloutkit.install_crd(cluster)
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    for user, role in (("alice", "edit"), ("bob", "view"), ("carol", f"{RELEASE}-app-team")):
        rbac.create_namespaced_role_binding(namespace, {
            "metadata": {"name": user}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                                    "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})
    kubectl = build.bin_dir() / "kubectl"

    def can(user: str, verb: str, resource: str, where: str = namespace) -> bool:
        resource, _, sub = resource.partition(":")
        done = subprocess.run([str(kubectl), "--kubeconfig", str(cluster.kubeconfig), "auth", "can-i", verb, resource,
                               "-n", where, "--as", user, *(["--subresource", sub] if sub else [])],
                              capture_output=True, text=True, timeout=30)
        return done.stdout.strip() == "yes"

    wait_until("the aggregation into edit and view", lambda: can("alice", "patch", ROLLOUTS)
               and can("bob", "list", ROLLOUTS), timeout=30)
    assert can("alice", "get", ROLLOUTS) and can("alice", "patch", "pods")
    assert not can("alice", "patch", f"{ROLLOUTS}:status"), "the status stays the controller's"
    assert can("bob", "watch", ROLLOUTS) and not can("bob", "patch", ROLLOUTS)
    for verb, resource in (("list", "pods"), ("patch", "pods"), ("patch", ROLLOUTS), ("watch", ROLLOUTS)):
        assert can("carol", verb, resource), f"the app team may {verb} {resource}"
    for verb, resource in (("delete", "pods"), ("create", "pods"), ("get", "secrets"), ("delete", ROLLOUTS),
                           ("patch", f"{ROLLOUTS}:status")):
        assert not can("carol", verb, resource), f"the app team must not {verb} {resource}"
    assert not can("carol", "patch", ROLLOUTS, "default"), "only in its own namespace"
    # App rollouts the same way; the app team also reads the Deployments `autocrane status` shows.
    assert can("alice", "patch", APP_ROLLOUTS) and not can("alice", "patch", f"{APP_ROLLOUTS}:status")
    assert can("bob", "list", APP_ROLLOUTS) and not can("bob", "patch", APP_ROLLOUTS)
    for verb, resource in (("patch", APP_ROLLOUTS), ("list", "deployments.apps"), ("list", "replicasets.apps")):
        assert can("carol", verb, resource), f"the app team may {verb} {resource}"
    for verb, resource in (("patch", "deployments.apps"), ("patch", f"{APP_ROLLOUTS}:status")):
        assert not can("carol", verb, resource), f"the app team must not {verb} {resource}"
