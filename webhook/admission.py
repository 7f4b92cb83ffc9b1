"""AdmissionReview v1 in, AdmissionReview v1 out (pure): the webhook's decision without the HTTP.

- The response echoes the request's ``apiVersion``, ``kind`` and ``request.uid``.
- Anything but a Pod CREATE (another kind, a subresource, UPDATE/DELETE/CONNECT) is allowed untouched;
  the registration only sends pod CREATEs, so this is defence in depth.
- An injected pod is allowed with ``patchType: JSONPatch`` and the base64 patch, computed as the
  difference between the pod as received and as mutated (``webhook.patching.diff``; tests apply
  every patch with the ``jsonpatch`` library). Missing
  parents (``/metadata/annotations``, ``/spec/initContainers``), ``~1`` escaping of ``/`` in annotation
  keys and list indexes are thus right by construction. ``managedFields`` is left out of the diff: it
  is large and never ours to change.
- Malformed autocrane annotations, and conflicts with the pod, deny with ``status.code`` 400 and the
  ``errors.AnnotationError`` text naming the annotation and the expected form.
- Unknown ``*.autocrane.io`` annotations are allowed with AdmissionResponse warnings.
- ``dryRun`` requests get the same answer: admitting has no side effects (``sideEffects: None``), so
  ``kubectl apply --dry-run=server`` previews the injection.
- A body that is not an AdmissionReview v1 with ``request.uid`` (and, for a pod CREATE, a
  ``request.object``) raises ``MalformedReview``; the HTTP server answers 400, never a 500.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

import orjson

from autocrane import bodies, caching, errors, untrusted
from webhook import inject, patching, policy
from webhook import settings as injector_settings

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
SKIP_REASON_AUDIT_KEY = "skip-reason"
MAX_UID_CHARS = 128
"""Longest ``request.uid`` answered: the response echoes it, and the API server's are 36-character UUIDs."""


class MalformedReview(errors.AutocraneError):
    """The body is not an AdmissionReview v1 this webhook can answer (HTTP 400)."""


def review(request_review: Mapping[str, Any], settings: injector_settings.InjectorSettings) -> bodies.AdmissionReview:
    """Answer one AdmissionReview v1 request with an AdmissionReview v1 response."""
    request = _request(request_review)
    uid: str = request["uid"]
    if not _is_pod_create(request):
        return answer(uid, {"allowed": True})
    pod = request.get("object")
    if not isinstance(pod, Mapping) or not policy.is_pod(pod):
        raise MalformedReview("request.object must be the Pod being created")
    key = _cache_key(pod, settings)
    response = CACHE.get(key) if key is not None else None
    if response is None:
        response, shareable = _respond(pod, settings)
        if key is not None and shareable:
            CACHE.put(key, response, len(key[1]) + len(orjson.dumps(response)))
    return answer(uid, response)  # a new top level: the cached response itself is never changed


def _shareable(raw_patch: bytes | None) -> bool:
    """Whether other pods with this key may get a response with this patch: only if it does not
    carry the token volume's name, which the key leaves out (a patch replacing a whole list would)."""
    return raw_patch is None or b"kube-api-access-" not in raw_patch


def _respond(pod: Mapping[str, Any], settings: injector_settings.InjectorSettings
             ) -> tuple[bodies.AdmissionResponse, bool]:
    """The response to a pod CREATE, without its uid, and whether pods of the same key may share it."""
    try:
        result = inject.inject(pod, settings)
    except (errors.AnnotationError, errors.ObjectError) as exc:  # the pod's fault, said in words
        return {"allowed": False, "status": {"code": 400, "message": str(exc)}}, True
    response: bodies.AdmissionResponse = {"allowed": True}
    patch = admission_patch(pod, result.pod)
    raw_patch = orjson.dumps(patch) if patch else None
    if raw_patch is not None:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(raw_patch).decode()
    if result.warnings:
        response["warnings"] = list(result.warnings)
    if result.skipped_reason and not patch:
        # Lands in the API server's audit log, and the server counts skips by it.
        response["auditAnnotations"] = {SKIP_REASON_AUDIT_KEY: result.skipped_reason}
    return response, _shareable(raw_patch)


CACHE: caching.BoundedCache[tuple[object, bytes], bodies.AdmissionResponse] = caching.BoundedCache(
    max_entries=256, max_bytes=16 << 20, max_entry_bytes=128 << 10)
"""The last responses by what they depend on (see ``_cache_key``); least recently used out.

The pods of one ReplicaSet arrive in bursts (a rollout, a scale-up) and differ only in fields
the injection never reads (name, uid, labels, owner): their responses are the same, so the
injection and its patch are computed once per template. Responses are never changed after
they are stored; ``review`` hands out copies of their top level. 16 MiB in all (key and
response), none over 128 KiB: a pod template with its patch is a few kB (the benchmark's, 10 kB),
and a pod carrying a 1 MB value is no template other pods share."""


def _cache_key(pod: Mapping[str, Any], settings: injector_settings.InjectorSettings) -> tuple[object, bytes] | None:
    """Everything the response depends on: the settings, and the pod's kind, whether it has
    metadata, its annotations and its spec (``inject`` reads nothing else). None: do not cache."""
    metadata = pod.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        return None
    # Presence as well as value: a missing key and a null one give different patch operations.
    has_annotations = metadata is not None and "annotations" in metadata
    annotations = metadata["annotations"] if metadata is not None and has_annotations else None
    try:
        key = orjson.dumps([pod.get("apiVersion"), pod.get("kind"), metadata is not None,
                            has_annotations, annotations, "spec" in pod, pod.get("spec")])
    except (TypeError, orjson.JSONEncodeError):  # not plain JSON, or nested past orjson's 254 levels
        return None
    if len(key) > CACHE.max_entry_bytes:
        return None  # could never be stored: not worth hashing
    # A copy of just its length: orjson's bytes keep the buffer it reserved while writing, about 8
    # times their length, and the key outlives the request (issue 8 saw 17 MB kept per 2 MB pod).
    return settings, bytes(memoryview(_TOKEN_VOLUME.sub(b'"kube-api-access-*"', key)))


# The ServiceAccount admission plugin (which runs before webhooks) names each pod's token volume
# kube-api-access-<5 random characters>, so replicas would never share a key. The injection only
# compares volume names with its own (autocrane-*), never copies them: the suffix cannot change
# the response, and is left out of the key.
_TOKEN_VOLUME = re.compile(rb'"kube-api-access-[a-z0-9]{5}"')


def admission_patch(original: Mapping[str, Any], mutated: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The RFC 6902 operations turning ``original`` into ``mutated``, ignoring ``metadata.managedFields``."""
    return patching.diff(_without_managed_fields(original), _without_managed_fields(mutated))


def outcome(review_response: bodies.AdmissionReview) -> str:
    """``injected``, ``allowed`` or ``denied``: a label for metrics and logs from a ``review`` answer."""
    response = review_response.get("response") or {}
    if not response.get("allowed"):
        return "denied"
    return "injected" if "patch" in response else "allowed"


def request_of(body: object) -> Mapping[str, Any]:
    """``request`` of an AdmissionReview v1 with a usable ``uid``; :class:`MalformedReview` otherwise."""
    return _request(body)


def _request(body: object) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise MalformedReview("the body must be a JSON object (an AdmissionReview)")
    if body.get("apiVersion") != API_VERSION or body.get("kind") != KIND:
        raise MalformedReview(f"expected apiVersion {API_VERSION} and kind {KIND}, got "
                              f"{untrusted.shown(body.get('apiVersion'))} and {untrusted.shown(body.get('kind'))}")
    request = body.get("request")
    if not isinstance(request, Mapping):
        raise MalformedReview("request must be an object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid or len(uid) > MAX_UID_CHARS:
        raise MalformedReview(f"request.uid must be a non-empty string of at most {MAX_UID_CHARS} characters "
                              "(the API server sends a UUID)")
    return request


def _is_pod_create(request: Mapping[str, Any]) -> bool:
    kind = request.get("kind")
    resource = request.get("resource")
    is_pod = (isinstance(kind, Mapping) and kind.get("group", "") == "" and kind.get("kind") == "Pod") or (
        not isinstance(kind, Mapping) and isinstance(resource, Mapping) and resource.get("resource") == "pods")
    return is_pod and request.get("operation") == "CREATE" and not request.get("subResource")


def answer(uid: str, response: bodies.AdmissionResponse) -> bodies.AdmissionReview:
    """The AdmissionReview v1 envelope around ``response`` for request ``uid``."""
    return {"apiVersion": API_VERSION, "kind": KIND, "response": {"uid": uid, **response}}


def _without_managed_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    copied = dict(obj)
    meta = copied.get("metadata")
    if isinstance(meta, Mapping) and "managedFields" in meta:
        copied["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    return copied
