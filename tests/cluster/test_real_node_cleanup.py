"""Stopping a real node removes everything it made, also what a killed run left (the next start sweeps it).

One test, two clusters beside the session's (so it also shows two nodes running at once): a
``python -m devcluster up`` killed with SIGKILL while a pod with volumes runs, whose containers,
shims and mounts outlive it; then a cluster started in-process, whose start releases the killed
one and whose stop releases itself. The host is compared before and after (tests/cluster/hostsnapshot.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from devcluster import controlplane, linuxhost, nodeclaim
from tests.cluster import harness, hostsnapshot, nodekit
from tests.cluster.harness import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.realnode]
REPO = Path(__file__).resolve().parents[2]


def _pod_with_volumes() -> dict[str, object]:
    """A pod whose volumes leave the mounts a killed run would: tmpfs, a projected token, a subPath bind."""
    spec = nodekit.pod_spec(["serve"], probe=False)
    spec["containers"][0]["volumeMounts"] = [
        {"name": "scratch", "mountPath": "/scratch"},
        {"name": "settings", "mountPath": "/settings/a.txt", "subPath": "a.txt"},
    ]
    spec["volumes"] = [{"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                       {"name": "settings", "configMap": {"name": "settings"}}]
    return {"metadata": {"name": "volumes"}, "spec": spec}


def _run_pod(kubeconfig: Path) -> None:
    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        core = client.CoreV1Api(api)
        core.create_namespaced_config_map("default", {"metadata": {"name": "settings"}, "data": {"a.txt": "a"}})
        core.create_namespaced_pod("default", _pod_with_volumes())
        wait_until("the pod with volumes to run", lambda: core.read_namespaced_pod("volumes", "default")
                   .status.phase == "Running", 60)
    finally:
        api.close()


def _claim_of_or_none(node_dir: Path) -> nodeclaim.Claim | None:
    for record in nodeclaim.REGISTRY.glob("node-*.json"):
        claim = nodeclaim.Claim.from_record(json.loads(record.read_text()))
        if claim.node_dir == node_dir:
            return claim
    return None


def _claim_of(node_dir: Path) -> nodeclaim.Claim:
    claim = _claim_of_or_none(node_dir)
    assert claim is not None, f"no claim for {node_dir} in {nodeclaim.REGISTRY}"
    return claim


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A short directory for the killed cluster (unix socket paths must stay short)."""
    path = Path(tempfile.mkdtemp(prefix="ac-killed-"))
    yield path
    nodeclaim.Registry().sweep()  # should the test fail before the start that sweeps it
    linuxhost.rmtree_without_mounts(path)


def test_a_killed_runs_node_is_swept_by_the_next_start_and_a_stop_leaves_the_host_as_it_was(
        cluster: harness.Cluster, real_node: str, scratch: Path) -> None:
    session = harness.current_control_plane()
    assert session is not None and session.node is not None
    killed_dir = scratch / "cluster"
    before = hostsnapshot.Snapshot.take(str(scratch))

    log = (scratch / "up.log").open("wb")
    up = subprocess.Popen([sys.executable, "-m", "devcluster", "up", "--cluster-only", "--nodes", "0",
                           "--dir", str(killed_dir)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                          start_new_session=True)
    log.close()
    try:
        try:
            wait_until("the killed cluster to start", lambda: b"\nready in " in (scratch / "up.log").read_bytes()
                       or up.poll() is not None, 300)
        except AssertionError as timed_out:
            raise AssertionError(f"{timed_out}; its log ends:\n{(scratch / 'up.log').read_text()[-3000:]}") from None
        assert up.poll() is None, (scratch / "up.log").read_text()[-3000:]
        _run_pod(killed_dir / "kubeconfig")
        killed = _claim_of(killed_dir / "node")
    finally:
        os.kill(up.pid, signal.SIGKILL)
        up.wait()

    # What the kill leaves: containerd's shims and the containers outlive containerd by design.
    left = nodeclaim.leftovers(killed)
    assert any(item.startswith("process") for item in left), left
    assert any(item.startswith("mount") and "volume-subpaths" in item for item in left), left
    assert f"link {killed.host_link}" in left

    orphans = linuxhost.cgroup_pids(killed.cgroup)
    with controlplane.ControlPlane.start(controlplane.Options(nodes=0, real_node="required",
                                                              node_app_images=False)) as plane:
        # Its start released the killed run's node (whose index, and so names, it may now reuse).
        assert not [pid for pid in orphans if linuxhost.process_start(pid) is not None]
        assert linuxhost.mounts_under(killed.node_dir) == []
        assert _claim_of_or_none(killed.node_dir) is None
        assert plane.node is not None
        ours = plane.node.claim
        assert ours.index != session.node.claim.index  # two nodes at once
        _run_pod(plane.kubeconfig)
        assert nodeclaim.leftovers(ours)  # running, it holds processes, mounts, a link, cgroups

    assert nodeclaim.leftovers(ours) == []
    others = _other_clusters(session.node.claim, killed, ours)
    after = hostsnapshot.Snapshot.take(str(scratch), str(ours.node_dir.parent),
                                       f"/{killed.cgroup}/", f"/{ours.cgroup}/")
    added = _without(after.added_since(before), others + _other_clusters(session.node.claim, killed, ours))
    assert added == {}, json.dumps(added, indent=1)
    # ... and the session's node, beside them all along, is untouched.
    ready = cluster.core.read_node(real_node).status.conditions
    assert any(c.type == "Ready" and c.status == "True" for c in ready)


def _other_clusters(*ours: nodeclaim.Claim) -> list[nodeclaim.Claim]:
    """Nodes of other clusters on this host (``make dev`` beside ``make test``): theirs, not our leftovers."""
    mine = {claim.index for claim in ours}
    return [claim for claim in nodeclaim.Registry().live() if claim.index not in mine]


def _without(added: dict[str, list[str]], others: list[nodeclaim.Claim]) -> dict[str, list[str]]:
    """``added`` less what names another cluster's node (its link, cgroup, addresses, directory, record) and
    the files its pods keep in the directories nodes share (container log links, CNI results, shim sockets)."""
    if "paths" in added:
        added = {**added, "paths": _ours(added["paths"], others)}
    names = [re.escape(name) for claim in others for name in (
        claim.host_link, claim.cgroup, claim.cni_network, str(claim.node_dir.parent), f"node-{claim.index}.json")]
    prefixes = [re.escape(f"{net}.{claim.index}.") for claim in others for net in ("10.243", "10.244")]
    if not names:
        return added
    theirs = re.compile(r"(?<![\w.])((" + "|".join(names) + r")(?![\w-])|" + "|".join(prefixes) + ")")
    kept = {part: [line for line in lines if not theirs.search(line)] for part, lines in added.items()}
    return {part: lines for part, lines in kept.items() if lines}


def _ours(paths: list[str], others: list[nodeclaim.Claim]) -> list[str]:
    """The ``paths`` still here that no other node holds. Ours are stopped and remove nothing, so a path
    gone since the snapshot was a pod's of another cluster, which kept running."""
    held = {item.removeprefix("file ") for claim in others for item in nodeclaim.leftovers(claim)
            if item.startswith("file ")}
    return [path for path in paths if os.path.lexists(path) and path not in held]
