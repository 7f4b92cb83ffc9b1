"""The test-facing side of the control plane: a kubeconfig, API clients and waiting helpers.

Process control lives in ``devcluster.controlplane``; this module only adapts it (or an
existing cluster named by ``AUTOCRANE_TEST_KUBECONFIG``, e.g. a kind cluster) for tests.

The session's local cluster has a real node where this host can run one (``devcluster.node``);
``AUTOCRANE_REQUIRE_REAL_NODE=1`` (set by ``.ci/run``) makes the session fail instead of going on
without it, so that in CI a real-node test can never be skipped; ``=0`` starts none (KWOK only: a
quicker session while working on tests that need no real containers).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from devcluster import controlplane, node
from tests import waiting

T = TypeVar("T")
DEFAULT_TIMEOUT = 60.0
REQUIRE_REAL_NODE = "AUTOCRANE_REQUIRE_REAL_NODE"
_current: controlplane.ControlPlane | None = None


def current_control_plane() -> controlplane.ControlPlane | None:
    return _current


@dataclasses.dataclass
class Cluster:
    kubeconfig: Path
    api: client.ApiClient
    logs: Path | None
    """Control-plane logs, when the session started its own control plane."""
    local: bool
    """True for the local control plane (KWOK nodes, loopback pod IPs)."""
    real_node: str | None = None
    """The real node's name, when the session's cluster has one."""
    real_node_status: str = "real node: none (AUTOCRANE_TEST_KUBECONFIG names the cluster)"
    """What :mod:`devcluster.node` said: the node, or why there is none."""

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @property
    def policy(self) -> client.PolicyV1Api:
        return client.PolicyV1Api(self.api)

    def server_version(self) -> str:
        return str(client.VersionApi(self.api).get_code().git_version)

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        self.core.create_namespace({"metadata": {"name": name, "labels": labels or {}}})
        # The ServiceAccount admission plugin refuses pods until the `default` SA exists.
        wait_until(f"ServiceAccount {name}/default",
                   lambda: _exists(lambda: self.core.read_namespaced_service_account("default", name)))

    def delete_namespace(self, name: str) -> None:
        with contextlib.suppress(ApiException):
            self.core.delete_namespace(name)


def require_real_node(cluster: Cluster) -> str:
    """The real node's name; skips (fails with ``AUTOCRANE_REQUIRE_REAL_NODE=1``) where there is none.

    For fixtures wider than a test, which cannot use the ``real_node`` fixture itself.
    """
    if cluster.real_node is None:
        if os.environ.get(REQUIRE_REAL_NODE) == "1":
            pytest.fail(f"{REQUIRE_REAL_NODE}=1 but {cluster.real_node_status}")
        pytest.skip(cluster.real_node_status)
    return cluster.real_node


def _exists(read: Callable[[], object]) -> bool:
    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def wait_until(what: str, condition: Callable[[], T], timeout: float = DEFAULT_TIMEOUT,
               interval: float = 0.1) -> T:
    """``tests.waiting.wait_until`` with the cluster tests' deadline and pace."""
    return waiting.wait_until(what, condition, timeout, interval)


def _client_for(kubeconfig: Path) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kubeconfig))


@contextlib.contextmanager
def session_cluster() -> Iterator[Cluster]:
    global _current
    existing = os.environ.get("AUTOCRANE_TEST_KUBECONFIG")
    if existing:
        api = _client_for(Path(existing))
        yield Cluster(Path(existing), api, logs=None, local=False)
        api.close()
        return
    wanted = os.environ.get(REQUIRE_REAL_NODE)
    mode: node.Mode = "required" if wanted == "1" else "off" if wanted == "0" else "auto"  # 0: KWOK only, faster
    with controlplane.ControlPlane.start(controlplane.Options(real_node=mode)) as plane:
        _current = plane
        api = _client_for(plane.kubeconfig)
        try:
            yield Cluster(plane.kubeconfig, api, logs=plane.logs, local=True,
                          real_node=node.NODE_NAME if plane.node else None, real_node_status=plane.node_status)
        finally:
            api.close()
            _current = None
