"""The injector proper: ``inject(pod, settings)`` -> the pod with AutoCrane's containers (pure).

Steps, on a deep copy (the caller's pod is never modified):

1. parse the pod's autocrane annotations (``errors.AnnotationError`` for malformed ones) and decide
   (``webhook.policy``): skip, with a reason, or inject; check that the fields read below have the
   types Kubernetes gives them (``errors.ObjectError`` naming the field otherwise), and that the
   pod is nested at most ``untrusted.MAX_DEPTH`` levels (the patch diff and its JSON recurse);
2. strip a previous injection recorded in ``injector.autocrane.io/status`` (Istio's approach): its
   containers, its volumes, and every mount of those volumes, but only under the names AutoCrane
   injects (``containers.CONTAINER_NAMES``, ``VOLUME_NAMES``): the annotation is the pod's, and a
   hand-written one naming ``app`` must not delete the app. Re-running on an injected pod, as a
   reinvoked webhook or ``autocrane inject`` on its own output does, therefore rebuilds the same pod;
3. refuse conflicts with the pod's own objects: container or volume names we use, ports we listen on,
   and mounts at, above or below the store location (they would hide or be hidden by the data);
4. add the init containers at ``init-position`` (first by default, so the pod's own init containers
   already see the data), sidecars after the app containers (``kubectl exec`` and ``logs`` keep
   defaulting to the app), volumes, the read-only data mount in each app container (and in the pod's
   init containers when ours run first), and the status annotation.

If the result equals the input the pod was already injected with the same settings: the result says
so (``policy.ALREADY_INJECTED``) and the webhook returns no patch. The warnings are capped at
``MAX_WARNINGS`` lines and a last one saying how many more there were: 100,000 unknown annotations
once made a 9 MB admission response.
"""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from autocrane import bodies, errors, keys, untrusted
from webhook import containers, options, policy
from webhook import settings as injector_settings

_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
MAX_WARNINGS = 10
"""Warnings returned for one pod; more are summed up in one more line."""


@dataclass(frozen=True, slots=True)
class InjectionResult:
    """What ``inject`` did."""

    pod: dict[str, Any]
    """The resulting pod (a new object, even when nothing changed)."""
    warnings: tuple[str, ...] = ()
    """For the client: unknown annotations, questionable choices. Short, one line each."""
    skipped_reason: str | None = None
    """``None`` if containers were injected; else why not (a ``webhook.policy`` constant). A skipped pod
    can still differ from the input: a stale injection is stripped from pods that no longer opt in."""


def _writable(pod: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``pod`` in which exactly what ``inject`` and ``strip`` change is new: the pod, its
    metadata and annotations, its spec, the container lists and each container (whose
    ``volumeMounts`` are replaced, never edited). Everything else is shared with the input, which
    neither side changes: copying the whole pod was a third of an admission's CPU.
    """
    result = dict(pod)
    meta = result.get("metadata")
    if isinstance(meta, Mapping):
        result["metadata"] = meta = dict(meta)
        if isinstance(meta.get("annotations"), Mapping):
            meta["annotations"] = dict(meta["annotations"])
    spec = result.get("spec")
    if isinstance(spec, Mapping):
        result["spec"] = spec = dict(spec)
        for key in _CONTAINER_LISTS:
            if isinstance(spec.get(key), list):
                spec[key] = [dict(item) if isinstance(item, Mapping) else item for item in spec[key]]
    return result


def inject(pod: Mapping[str, Any], settings: injector_settings.InjectorSettings) -> InjectionResult:
    """Inject AutoCrane's containers into ``pod`` (a Pod or a pod template) as its annotations ask.

    ``pod`` is not changed; the result shares the subtrees it does not change with ``pod`` (treat
    both as read-only, or deep-copy first).

    Raises ``errors.AnnotationError`` for malformed annotations and conflicts with the pod, ``errors.ObjectError``
    when the object is not shaped like a pod.
    """
    if not policy.is_pod(pod):
        return InjectionResult(dict(pod) if isinstance(pod, Mapping) else {}, (), policy.NOT_A_POD)
    if untrusted.depth(pod) > untrusted.MAX_DEPTH:
        raise errors.ObjectError(_deepest(pod), f"JSON nested at most {untrusted.MAX_DEPTH} levels deep "
                                 "(a whole Pod is about 12)")
    result = _writable(pod)
    request, warnings = options.parse_pod(_annotations(result))
    decision = policy.decide(result, request)
    if decision.inject or request.status is not None:
        _check_shape(_mapping(result, "spec", "spec"))
    if not decision.inject:
        if request.status is not None:
            strip(result, request.status)  # opted out or no longer opted in: remove what we added before
        return InjectionResult(result, _capped(warnings), decision.reason)

    if not _items(_mapping(result, "spec", "spec"), "containers", "spec.containers"):
        raise errors.ObjectError("spec.containers", "at least one container of the pod's own")
    native, native_warnings = policy.native_sidecar(result, request, settings.native_sidecar)
    if request.status is not None:
        strip(result, request.status)
    plan = containers.Plan(
        data=request.wants_datadeployer,
        min_ready_seconds=request.min_ready_seconds,
        store_location=request.store_location or settings.store_location,
        native=native,
        datadeployer_resources=containers.effective_resources(
            settings.datadeployer_resources, request.datadeployer_resources),
        watchdoghealthz_resources=containers.effective_resources(
            settings.watchdoghealthz_resources, request.watchdoghealthz_resources),
    )
    init, sidecars = _containers(settings, plan)
    volumes = containers.volumes(settings, plan)
    _check_conflicts(result, request, plan, settings, [c["name"] for c in init + sidecars],
                     [v["name"] for v in volumes])
    _add(result, request.init_position, plan, init, sidecars, volumes)
    status = options.InjectionStatus(
        init_containers=tuple(c["name"] for c in init), containers=tuple(c["name"] for c in sidecars),
        volumes=tuple(v["name"] for v in volumes), version=_version(), config=settings.config_hash())
    _mapping(_mapping(result, "metadata", "metadata"), "annotations", "metadata.annotations")[
        keys.INJECTOR_STATUS] = status.to_json()
    skipped = policy.ALREADY_INJECTED if result == pod else None
    return InjectionResult(result, _capped(warnings + native_warnings), skipped)


def _capped(warnings: list[str]) -> tuple[str, ...]:
    if len(warnings) <= MAX_WARNINGS:
        return tuple(warnings)
    return (*warnings[:MAX_WARNINGS], f"and {len(warnings) - MAX_WARNINGS} more warnings like these")


def strip(pod: dict[str, Any], status: options.InjectionStatus) -> None:
    """Remove, in place, what the injection recorded in ``status`` added to ``pod``.

    Only names AutoCrane injects are removed, whatever ``status`` lists (it is an annotation anyone
    who may create the pod can write). Lists and the annotations map that end up empty because of
    the removal are deleted, so a pod that never had them gets back to its original shape.
    """
    spec = pod.get("spec")
    if isinstance(spec, dict):
        ours = set(containers.CONTAINER_NAMES)
        volumes = set(status.volumes) & set(containers.VOLUME_NAMES)
        _remove_named(spec, "initContainers", set(status.init_containers) & ours)
        _remove_named(spec, "containers", set(status.containers) & ours)
        _remove_named(spec, "volumes", volumes)
        for container in _all_containers(spec):
            _remove_named(container, "volumeMounts", volumes)
    meta = pod.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("annotations"), dict):
        meta["annotations"].pop(keys.INJECTOR_STATUS, None)
        if not meta["annotations"]:
            del meta["annotations"]


def _containers(s: injector_settings.InjectorSettings,
                plan: containers.Plan) -> tuple[list[bodies.Container], list[bodies.Container]]:
    """(init containers, classic sidecars) to inject, in order."""
    init: list[bodies.Container] = []
    sidecars: list[bodies.Container] = []
    if plan.data:
        if plan.native:
            init.append(containers.datadeployer_sidecar(s, plan))
        else:
            init.append(containers.datadeployer_init(s, plan))
            sidecars.append(containers.datadeployer_sidecar(s, plan))
    if plan.min_ready_seconds is not None:
        (init if plan.native else sidecars).append(containers.watchdoghealthz_sidecar(s, plan))
    return init, sidecars


def _check_conflicts(pod: dict[str, Any], request: options.PodOptions, plan: containers.Plan,
                     s: injector_settings.InjectorSettings, names: list[str], volumes: list[str]) -> None:
    key, value = request.opt_in_key(), _annotations(pod).get(request.opt_in_key(), "")
    spec = _mapping(pod, "spec", "spec")
    for container in _all_containers(spec):
        if container.get("name") in names:
            raise errors.AnnotationError(key, value, f'a pod without its own container named "{container["name"]}" '
                                         "(the name is reserved for the container AutoCrane injects)")
    for volume in _items(spec, "volumes", "spec.volumes"):
        if volume.get("name") in volumes:
            raise errors.AnnotationError(key, value, f'a pod without its own volume named "{volume["name"]}" '
                                         "(the name is reserved for the volume AutoCrane injects)")
    ports = {p: n for p, n, wanted in ((s.datadeployer_status_port, "datadeployer", plan.data),
                                       (s.watchdoghealthz_port, "watchdoghealthz", plan.min_ready_seconds is not None))
             if wanted}
    for container in _all_containers(spec):
        for port in _items(container, "ports", "ports"):
            if port.get("containerPort") in ports:
                number = port["containerPort"]
                raise errors.AnnotationError(key, value, f"a pod whose containers leave port {number} free for the "
                                             f"injected {ports[number]} (container {_name(container)} declares it)")
    if not plan.data:
        return
    location = plan.store_location
    for container in _app_containers(spec, request.init_position):
        for mount in _items(container, "volumeMounts", "volumeMounts"):
            path = mount.get("mountPath")
            if not isinstance(path, str) or not path.startswith("/"):
                continue  # the API server's validation reports those
            path = "/" + posixpath.normpath(path).lstrip("/")
            if options.is_within(path, location) or options.is_within(location, path):
                where = f"container {_name(container)} mounts volume {_name(mount)} at {untrusted.quoted(path)}"
                raise errors.AnnotationError(keys.STORE_LOCATION, location,
                                             f"a path clear of the pod's own mounts ({where})")


def _add(pod: dict[str, Any], position: str, plan: containers.Plan, init: list[bodies.Container],
         sidecars: list[bodies.Container], volumes: list[bodies.Volume]) -> None:
    spec = _mapping(pod, "spec", "spec")
    if plan.data:
        for container in _app_containers(spec, position):
            container["volumeMounts"] = [*(container.get("volumeMounts") or []),
                                         containers.app_data_mount(plan.store_location)]
    if init:
        existing = _items(spec, "initContainers", "spec.initContainers")
        spec["initContainers"] = init + existing if position == "first" else existing + init
    if sidecars:
        spec["containers"] = _items(spec, "containers", "spec.containers") + sidecars
    spec["volumes"] = _items(spec, "volumes", "spec.volumes") + volumes


def _app_containers(spec: dict[str, Any], position: str) -> list[dict[str, Any]]:
    """The pod's own containers that get the data: all app containers, and init containers if ours run first."""
    found = _items(spec, "containers", "spec.containers")
    if position == "first":
        found = _items(spec, "initContainers", "spec.initContainers") + found
    return found


def _all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for key in _CONTAINER_LISTS for c in _items(spec, key, f"spec.{key}")]


def _remove_named(parent: dict[str, Any], key: str, names: set[str]) -> None:
    items = parent.get(key)
    if not isinstance(items, list):
        return
    kept = [item for item in items if not (isinstance(item, dict) and item.get("name") in names)]
    if len(kept) == len(items):
        return
    if kept:
        parent[key] = kept
    else:
        del parent[key]


def _name(item: Mapping[str, Any]) -> str:
    """The item's name, quoted for a message (cut if long; ``_check_shape`` made it a string or None)."""
    name = item.get("name")
    return untrusted.quoted(name) if isinstance(name, str) else "without a name"


def _check_shape(spec: dict[str, Any]) -> None:
    """Raise ``errors.ObjectError`` naming the first field that inject, strip or the patch would read
    with another type than Kubernetes gives it: names, ports and mounts, in every container list
    and volume (a list where a name belongs once made the webhook answer "internal error")."""
    for key in _CONTAINER_LISTS:
        for index, container in enumerate(_items(spec, key, f"spec.{key}")):
            where = f"spec.{key}[{index}]"
            _check_string(container, "name", where)
            for number, port in enumerate(_items(container, "ports", f"{where}.ports")):
                found = port.get("containerPort")
                if found is not None and (type(found) is not int or not 0 < found < 65536):
                    raise errors.ObjectError(f"{where}.ports[{number}].containerPort", "a port number, 1 to 65535")
            for number, mount in enumerate(_items(container, "volumeMounts", f"{where}.volumeMounts")):
                _check_string(mount, "name", f"{where}.volumeMounts[{number}]")
                _check_string(mount, "mountPath", f"{where}.volumeMounts[{number}]")
    for index, volume in enumerate(_items(spec, "volumes", "spec.volumes")):
        _check_string(volume, "name", f"spec.volumes[{index}]")


def _check_string(parent: Mapping[str, Any], key: str, where: str) -> None:
    if not isinstance(parent.get(key), str | None):
        raise errors.ObjectError(f"{where}.{key}", f"a string, not {type(parent[key]).__name__}")


def _deepest(pod: Mapping[str, Any]) -> str:
    """The path of a field nested too deep, down to a field of one container (for the message)."""
    path, value, room = "", pod, untrusted.MAX_DEPTH
    for _ in range(4):
        children = value.items() if isinstance(value, Mapping) else enumerate(value) if isinstance(value, list) else ()
        found = next(((k, v) for k, v in children if untrusted.depth(v, room - 1) > room - 1), None)
        if found is None:
            break
        key, value = found
        path, room = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}".lstrip("."), room - 1
    return path or "the pod"


def _annotations(pod: Mapping[str, Any]) -> dict[str, Any]:
    meta = pod.get("metadata")
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise errors.ObjectError("metadata", "a mapping")
    found = meta.get("annotations")
    if found is None:
        return {}
    if not isinstance(found, dict):
        raise errors.ObjectError("metadata.annotations", "a mapping of strings to strings")
    for key in found:
        if not isinstance(key, str):  # only from YAML (autocrane inject -f): JSON keys are strings
            raise errors.ObjectError("metadata.annotations", f"a mapping of strings to strings, not the key "
                                     f"{untrusted.shown(key)} ({type(key).__name__}; quote it in YAML)")
    return found


def _mapping(parent: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    """``parent[key]``, created empty if missing (or null)."""
    value = parent.get(key)
    if value is None:
        value = parent[key] = {}
    if not isinstance(value, dict):
        raise errors.ObjectError(path, "a mapping")
    return value


def _items(parent: Mapping[str, Any], key: str, path: str) -> list[dict[str, Any]]:
    """``parent[key]`` checked to be a list of mappings; ``[]`` (not attached) when missing."""
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise errors.ObjectError(path, "a list of mappings")
    return value


@functools.cache
def _version() -> str:
    try:
        return metadata.version("autocrane")
    except metadata.PackageNotFoundError:  # running from a source tree without installing
        return "0+unknown"
