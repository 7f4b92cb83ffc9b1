"""Checks shared by the injector tests: what any valid injected pod must satisfy."""

from __future__ import annotations

from typing import Any

from autocrane import keys
from webhook import options


def all_containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod.get("spec") or {}
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def injected_names(pod: dict[str, Any]) -> set[str]:
    """Names of the injected containers, from the status annotation (a pod may have its own "autocrane-*")."""
    notes = (pod.get("metadata") or {}).get("annotations") or {}
    if keys.INJECTOR_STATUS not in notes:
        return set()
    status = options.parse_status(notes[keys.INJECTOR_STATUS])
    return {*status.init_containers, *status.containers}


def injected_containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in all_containers(pod) if c["name"] in injected_names(pod)]


def app_containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    ours = injected_names(pod)
    return [c for c in (pod.get("spec") or {}).get("containers") or [] if c["name"] not in ours]


def assert_valid_pod(pod: dict[str, Any]) -> None:
    """The API server's checks that an injector can break: unique names, mounts of existing volumes."""
    names = [c["name"] for c in all_containers(pod)]
    assert len(names) == len(set(names)), f"duplicate container names: {names}"
    volumes = [v["name"] for v in (pod.get("spec") or {}).get("volumes") or []]
    assert len(volumes) == len(set(volumes)), f"duplicate volume names: {volumes}"
    for container in all_containers(pod):
        paths = [m["mountPath"] for m in container.get("volumeMounts") or []]
        assert len(paths) == len(set(paths)), f"{container['name']}: duplicate mount paths {paths}"
        for mount in container.get("volumeMounts") or []:
            assert mount["name"] in volumes, f"{container['name']} mounts missing volume {mount['name']}"
        if container.get("restartPolicy") is not None:
            assert container in (pod["spec"].get("initContainers") or []), "restartPolicy only on init containers"
        if "startupProbe" in container or "readinessProbe" in container:
            assert container not in (pod["spec"].get("initContainers") or []) or \
                container.get("restartPolicy") == "Always", f"{container['name']}: probes on a plain init container"


def assert_restricted(container: dict[str, Any]) -> None:
    """Pod Security Standard ``restricted`` at container level, plus what we promise on top."""
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["readOnlyRootFilesystem"] is True
    assert sc.get("privileged") is not True


def assert_resources_set(container: dict[str, Any]) -> None:
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}, f"{container['name']} {kind}"
