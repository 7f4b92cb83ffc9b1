"""Builders for the injected containers and volumes (pure: settings and a plan in, Kubernetes dicts out).

What a data pod gets (classic mode):

- ``autocrane-datadeployer-init``: ``autocrane datadeployer --mode init``, an init container that
  performs the first sync, so app containers never start without their data;
- ``autocrane-datadeployer``: ``autocrane datadeployer --mode sidecar``, a container that swaps in
  later versions while the app runs, with a status endpoint on ``datadeployer_status_port``.

Both get ``--repository`` (the settings' data repository URL), ``--root`` (the store location, where
the data volume is mounted read-write) and ``--annotations-file`` (the downward-API file, from which
they read the pod's ``data.autocrane.io/*`` and ``request.data.autocrane.io/*`` annotations).

In native mode the two become one init container with ``restartPolicy: Always`` whose startupProbe
(``GET /synced``) passes once the first sync is done: the kubelet starts the containers after it
only then, and the sidecar exits with the pod (Jobs complete).

A watchdoghealthz pod gets ``autocrane-watchdoghealthz`` (``autocrane watchdoghealthz --port P``),
whose ``/healthz`` is its own readinessProbe: the pod is not Ready while it fails.

Every injected container sets requests and limits (ResourceQuota namespaces admit it), passes Pod
Security ``restricted`` (non-root UID, no privilege escalation, no capabilities, RuntimeDefault
seccomp, read-only root filesystem, with an emptyDir at /tmp), and learns its own pod through the
downward API (``POD_NAME``, ``POD_NAMESPACE``, ``POD_IP`` and the annotations file
``/etc/autocrane/podinfo/annotations``), so it needs no API permissions to read its annotations.
Fields the API server would default are set explicitly, so a re-invoked injection compares equal.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

from autocrane import bodies, inpod, podinfo
from webhook import options
from webhook import settings as injector_settings

DATADEPLOYER_INIT = "autocrane-datadeployer-init"
DATADEPLOYER = "autocrane-datadeployer"
WATCHDOGHEALTHZ = "autocrane-watchdoghealthz"
CONTAINER_NAMES = (DATADEPLOYER_INIT, DATADEPLOYER, WATCHDOGHEALTHZ)

DATA_VOLUME = "autocrane-data"
PODINFO_VOLUME = "autocrane-podinfo"
TMP_VOLUME = "autocrane-tmp"
VOLUME_NAMES = (DATA_VOLUME, PODINFO_VOLUME, TMP_VOLUME)

PODINFO_DIR = podinfo.DIRECTORY
ANNOTATIONS_FILE = podinfo.ANNOTATIONS_PATH
_STARTUP_PERIOD_SECONDS = 2


@dataclass(frozen=True, slots=True)
class Plan:
    """What to inject into one pod, decided from its annotations and the settings."""

    data: bool
    """Inject the datadeployer (the pod has ``data.autocrane.io/*`` annotations)."""
    min_ready_seconds: int | None
    """Inject watchdoghealthz with this setting, or not at all (``None``)."""
    store_location: str
    """Where the data volume is mounted, in the app and in the datadeployer."""
    native: bool
    """Sidecars as init containers with ``restartPolicy: Always``."""
    datadeployer_resources: injector_settings.Resources
    """Effective resources (defaults with the pod's overrides)."""
    watchdoghealthz_resources: injector_settings.Resources
    """Effective resources (defaults with the pod's overrides)."""


# Pure, on frozen values: pods of one workload share the answer. Bounded in bytes by its inputs
# too: overrides are quantities of at most options.MAX_QUANTITY_CHARS characters.
@functools.lru_cache(maxsize=256)
def effective_resources(default: injector_settings.Resources,
                        overrides: options.ResourceOverrides) -> injector_settings.Resources:
    """Defaults with per-pod overrides; a lone override drags the other bound along to keep request <= limit."""
    values: dict[str, str] = {}
    for resource in ("cpu", "memory"):
        request = getattr(overrides, f"{resource}_request") or getattr(default, f"{resource}_request")
        limit = getattr(overrides, f"{resource}_limit") or getattr(default, f"{resource}_limit")
        if options.amount(request) > options.amount(limit):
            # Only one side was overridden (parse_pod refuses both sides crossed): follow it.
            if getattr(overrides, f"{resource}_request") is not None:
                limit = request
            else:
                request = limit
        values[f"{resource}_request"], values[f"{resource}_limit"] = request, limit
    return injector_settings.Resources(**values)


def datadeployer_init(s: injector_settings.InjectorSettings, plan: Plan) -> bodies.Container:
    """The classic first-sync init container."""
    return _container(s, DATADEPLOYER_INIT, s.datadeployer_image, _datadeployer_args(s, plan, "init"), ports=[],
                      resources=plan.datadeployer_resources,
                      mounts=[_mount(DATA_VOLUME, plan.store_location, read_only=False), *_common_mounts()])


def datadeployer_sidecar(s: injector_settings.InjectorSettings, plan: Plan) -> bodies.Container:
    """The data sidecar: a classic container, or (``plan.native``) a native sidecar that also does the first sync."""
    container = _container(
        s, DATADEPLOYER, s.datadeployer_image,
        [*_datadeployer_args(s, plan, "sidecar"), "--port", str(s.datadeployer_status_port)],
        ports=[_port(inpod.DATADEPLOYER_PORT_NAME, s.datadeployer_status_port)], resources=plan.datadeployer_resources,
        mounts=[_mount(DATA_VOLUME, plan.store_location, read_only=False), *_common_mounts()])
    # A hung sidecar is restarted by the kubelet; the live data and the app are not touched.
    container["livenessProbe"] = _http_probe(inpod.LIVEZ_PATH, s.datadeployer_status_port, period=10, failures=3)
    if plan.native:
        container["restartPolicy"] = "Always"
        container["startupProbe"] = _http_probe(
            inpod.SYNCED_PATH, s.datadeployer_status_port, period=_STARTUP_PERIOD_SECONDS,
            failures=math.ceil(s.startup_timeout_seconds / _STARTUP_PERIOD_SECONDS))
    return container


def watchdoghealthz_sidecar(s: injector_settings.InjectorSettings, plan: Plan) -> bodies.Container:
    """The readiness sidecar: its readinessProbe is its own ``/healthz``, so the pod is Ready only when it is.

    It reads ``min-ready-seconds`` from the annotations file itself, so a changed annotation takes effect
    without re-creating the pod.
    """
    container = _container(
        s, WATCHDOGHEALTHZ, s.watchdoghealthz_image,
        ["watchdoghealthz", "--annotations-file", ANNOTATIONS_FILE, "--port", str(s.watchdoghealthz_port)],
        ports=[_port(inpod.WATCHDOGHEALTHZ_PORT_NAME, s.watchdoghealthz_port)],
        resources=plan.watchdoghealthz_resources,
        mounts=_common_mounts())
    if plan.native:
        container["restartPolicy"] = "Always"
    container["readinessProbe"] = _http_probe(inpod.HEALTHZ_PATH, s.watchdoghealthz_port, period=5, failures=1)
    container["livenessProbe"] = _http_probe(inpod.LIVEZ_PATH, s.watchdoghealthz_port, period=10, failures=3)
    return container


def volumes(s: injector_settings.InjectorSettings, plan: Plan) -> list[bodies.Volume]:
    """The injected volumes: the data emptyDir (data pods only), the downward-API podinfo and /tmp."""
    found: list[bodies.Volume] = []
    if plan.data:
        found.append({"name": DATA_VOLUME, "emptyDir": {"sizeLimit": s.data_size_limit}})
    found.append({"name": PODINFO_VOLUME, "downwardAPI": {"defaultMode": 0o644, "items": [
        {"path": "annotations", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.annotations"}},
        {"path": "labels", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.labels"}},
    ]}})
    found.append({"name": TMP_VOLUME, "emptyDir": {"sizeLimit": s.tmp_size_limit}})
    return found


def app_data_mount(store_location: str) -> bodies.VolumeMount:
    """The mount added to each app container: the data volume, read-only, at the store location."""
    return _mount(DATA_VOLUME, store_location, read_only=True)


def security_context(s: injector_settings.InjectorSettings) -> dict[str, Any]:
    """Pod Security ``restricted``, and then some (read-only root filesystem, fixed non-root UID/GID)."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsGroup": s.run_as_user,
        "runAsNonRoot": True,
        "runAsUser": s.run_as_user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container(s: injector_settings.InjectorSettings, name: str, image: str, args: list[str], *,
               ports: list[bodies.ContainerPort], resources: injector_settings.Resources,
               mounts: list[bodies.VolumeMount]) -> bodies.Container:
    container: bodies.Container = {
        "name": name,
        "image": image,
        "imagePullPolicy": s.image_pull_policy,
        "command": ["autocrane", *args],
        "env": _downward_env(),
    }
    if ports:
        container["ports"] = ports
    container["resources"] = resources.to_kubernetes()
    container["securityContext"] = security_context(s)
    container["volumeMounts"] = mounts
    container["terminationMessagePath"] = "/dev/termination-log"
    container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    return container


def _datadeployer_args(s: injector_settings.InjectorSettings, plan: Plan, mode: str) -> list[str]:
    return ["datadeployer", "--mode", mode, "--repository", s.data_repository_url, "--root", plan.store_location,
            "--annotations-file", ANNOTATIONS_FILE]


def _downward_env() -> list[dict[str, Any]]:
    return [{"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}
            for name, path in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace"),
                               ("POD_IP", "status.podIP"))]


def _common_mounts() -> list[bodies.VolumeMount]:
    return [_mount(PODINFO_VOLUME, PODINFO_DIR, read_only=True), _mount(TMP_VOLUME, "/tmp", read_only=False)]


def _mount(volume: str, path: str, *, read_only: bool) -> bodies.VolumeMount:
    mount: bodies.VolumeMount = {"name": volume, "mountPath": path}
    if read_only:
        mount["readOnly"] = True
    return mount


def _port(name: str, number: int) -> bodies.ContainerPort:
    return {"name": name, "containerPort": number, "protocol": "TCP"}


def _http_probe(path: str, port: int, *, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port, "scheme": "HTTP"}, "periodSeconds": period,
            "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": failures}
