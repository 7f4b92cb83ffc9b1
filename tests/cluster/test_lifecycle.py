"""The control plane's own lifecycle: it cleans up after itself, and says when a part dies."""

from __future__ import annotations

import os
import signal

import pytest

from devcluster import controlplane

pytestmark = pytest.mark.cluster


@pytest.fixture(autouse=True)
def _local_only() -> None:
    if os.environ.get("AUTOCRANE_TEST_KUBECONFIG"):
        pytest.skip("starts its own local control plane; AUTOCRANE_TEST_KUBECONFIG selects an external cluster")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_every_process_stops_and_the_directory_goes_even_when_the_body_fails() -> None:
    seen: dict[str, object] = {}
    with pytest.raises(RuntimeError, match="test body failed"), \
            controlplane.ControlPlane.start(controlplane.Options(nodes=1)) as plane:
        seen["pids"] = [p.popen.pid for p in plane.processes]
        seen["dir"] = plane.directory
        assert all(_alive(pid) for pid in seen["pids"])
        raise RuntimeError("test body failed")

    assert len(seen["pids"]) == 5  # etcd, apiserver, KCM, scheduler, KWOK
    assert not [pid for pid in seen["pids"] if _alive(pid)]
    assert not seen["dir"].exists()


def test_a_component_that_dies_is_named_with_its_log() -> None:
    with controlplane.ControlPlane.start(controlplane.Options(nodes=1)) as plane:
        (etcd,) = [p for p in plane.processes if p.name == "etcd"]
        etcd.popen.send_signal(signal.SIGKILL)
        etcd.popen.wait()
        with pytest.raises(controlplane.ControlPlaneError, match="etcd exited with -9"):
            plane.check_alive()

