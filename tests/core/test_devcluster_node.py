"""Pure parts of the real node: its claim's names, index choice, liveness, and where it cannot run."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import types
from pathlib import Path

import pytest

from devcluster import linuxhost, node, nodeclaim


def _claim(index: int = 3, **changes: object) -> nodeclaim.Claim:
    fields: dict[str, object] = {"index": index, "node_dir": Path("/c/node"), "owner_pid": 42,
                                 "owner_start": 1000, "boot_id": "boot-a"}
    fields.update(changes)
    return nodeclaim.Claim(**fields)  # type: ignore[arg-type]


def test_every_name_of_a_claim_derives_from_its_index() -> None:
    claim = _claim(3)
    assert (claim.host_address, claim.node_address, claim.pod_subnet) == ("10.243.3.1", "10.243.3.2", "10.244.3.0/24")
    assert (claim.host_link, claim.cgroup, claim.cni_network) == ("acnode3", "autocrane-devcluster-3", "devcluster-3")
    assert claim.daemons_cgroup.startswith(claim.cgroup + "/")
    assert len(claim.host_link) <= 15  # IFNAMSIZ
    assert claim.netns.parent == claim.pod_logs.parents[1] == claim.node_dir


def test_a_claim_survives_its_record() -> None:
    claim = _claim(7)
    assert nodeclaim.Claim.from_record(claim.record()) == claim


def test_a_claim_is_live_only_while_its_process_runs_on_this_boot() -> None:
    claim = _claim()
    assert claim.is_live("boot-a", {42: 1000}.get)
    assert not claim.is_live("boot-a", {}.get)  # gone
    assert not claim.is_live("boot-a", {42: 2000}.get)  # the PID was reused by a later process
    assert not claim.is_live("boot-b", {42: 1000}.get)  # rebooted


def test_the_index_skips_claims_links_and_networks_the_host_already_has() -> None:
    taken = [ipaddress.IPv4Network("10.244.1.0/24"), ipaddress.IPv4Network("10.243.0.0/22")]
    assert nodeclaim.free_index([], [], lambda _: False) == 0
    # 0: claimed; 1: its pod subnet is routed; 2 and 3: inside 10.243.0.0/22; 4: its link exists.
    assert nodeclaim.free_index([0], taken, lambda link: link == "acnode4") == 5


def test_no_free_index_is_a_clear_unavailability() -> None:
    with pytest.raises(nodeclaim.NodeUnavailable, match="no free node network"):
        nodeclaim.free_index([], [ipaddress.IPv4Network("10.0.0.0/8")], lambda _: False)


def test_shim_sockets_are_named_as_containerd_1_6_names_them() -> None:
    # runtime/v2/shim/util_unix.go: sha256(filepath.Join(address, namespace, id)) under /run/containerd/s
    digest = hashlib.sha256(b"/c/node/containerd/containerd.sock/k8s.io/abc").hexdigest()
    got = nodeclaim.shim_socket(Path("/c/node/containerd/containerd.sock"), "k8s.io", "abc")
    assert got == Path("/run/containerd/s") / digest


def test_shared_directories_go_only_when_empty_deepest_first(tmp_path: Path) -> None:
    outer, inner, busy = tmp_path / "cni", tmp_path / "cni" / "results", tmp_path / "logs"
    inner.mkdir(parents=True)
    busy.mkdir()
    (busy / "someone-elses.log").write_text("")
    nodeclaim.remove_shared_directories([outer, inner, busy, tmp_path / "never-made"])
    assert not outer.exists()
    assert (busy / "someone-elses.log").exists()


def test_pods_reach_the_real_node_by_toleration_and_selector() -> None:
    placement = node.placement()
    assert placement["nodeSelector"] == {"type": "real"}
    assert placement["tolerations"] == [{"key": node.TAINT["key"], "effect": "NoSchedule", "operator": "Exists"}]


def test_without_root_the_node_is_skipped_with_the_reason_or_refused_when_required(monkeypatch) -> None:
    monkeypatch.setattr(node.sys, "platform", "linux")
    monkeypatch.setattr(node.os, "geteuid", lambda: 1000)
    assert node.unavailable_reason() == "the real node needs root (it makes a network namespace, cgroups and mounts)"
    claim, status = node.prepare("auto", Path("/nowhere"))
    assert claim is None
    assert status == "real node: not started (the real node needs root (it makes a network namespace, " \
                     "cgroups and mounts))"
    with pytest.raises(node.NodeError, match=r"required .* cannot run: the real node needs root"):
        node.prepare("required", Path("/nowhere"))
    assert node.prepare("off", Path("/nowhere")) == (None, "real node: off")


def test_the_node_imports_what_devcluster_images_ensures(monkeypatch, tmp_path: Path) -> None:
    # devcluster.images' interface: ensure_images() -> [Image(ref=..., archive=...), ...].
    built = [types.SimpleNamespace(name="sidecar", ref="localhost/autocrane-sidecar:abc",
                                   archive=tmp_path / "sidecar.oci.tar", size=1)]
    monkeypatch.setattr(node.images, "ensure_images", lambda: built)
    assert [(i.ref, i.archive) for i in node.app_images()] == [("localhost/autocrane-sidecar:abc",
                                                                 tmp_path / "sidecar.oci.tar")]


def test_off_linux_the_node_is_skipped(monkeypatch) -> None:
    monkeypatch.setattr(node.sys, "platform", "darwin")
    assert node.unavailable_reason() == "the real node needs Linux (this is darwin)"


def test_a_start_after_a_killed_run_that_held_the_only_node_sweeps_it_and_claims(monkeypatch, tmp_path: Path) -> None:
    """The registry is kept for the claim that follows the sweep: removing it with its last stale record left the
    start writing its host record into a directory that no longer existed."""
    released: list[nodeclaim.Claim] = []
    monkeypatch.setattr(nodeclaim, "release", released.append)  # the host's own undoing is tested on the real node
    monkeypatch.setattr(nodeclaim, "leftovers", lambda claim: [])
    # Nothing of the host's own: a real node may run beside this test (its kubelet.sock, its directories).
    monkeypatch.setattr(nodeclaim, "DEVICE_PLUGINS", tmp_path / "device-plugins")
    monkeypatch.setattr(nodeclaim, "SHARED_DIRECTORIES", (tmp_path / "device-plugins",))
    monkeypatch.setattr(nodeclaim, "KUBELET_TUNABLES", ())
    registry = nodeclaim.Registry(tmp_path / "registry")
    registry.root.mkdir()
    killed = _claim(200, owner_pid=0, boot_id=linuxhost.boot_id())  # no process has PID 0
    (registry.root / "node-200.json").write_text(json.dumps(killed.record()))

    claim = registry.claim(tmp_path / "node")

    assert released == [killed]
    assert sorted(p.name for p in registry.root.iterdir()) == ["host.json", "lock", f"node-{claim.index}.json"]
    registry.release(claim)
    assert not registry.root.exists()  # the last release takes the registry with it
