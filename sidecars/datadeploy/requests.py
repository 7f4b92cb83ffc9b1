"""What this pod wants: its data sets and the controller's requests, from its own annotations (pure).

``data.autocrane.io/<name>: <source>`` declares data set ``<name>`` (published at
``<root>/<name>``) from repository source ``<source>``; ``request.data.autocrane.io/<name>``
is the controller's request for it (format in :mod:`autocrane.manifests`). The annotations come
from the downward-API file (:mod:`autocrane.podinfo`), so the datadeployer needs no API access.

A malformed declaration or request affects only its own data set, which reports the error; the
others carry on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from autocrane import annotations, errors, manifests


@dataclasses.dataclass(frozen=True, slots=True)
class DataSet:
    """One data set the pod declares."""

    name: str
    """Directory name under the data root (a DNS-1123 label, so a safe path component)."""
    source: str
    """Repository source it comes from."""
    request: manifests.DataRequest | None = None
    """The controller's request, if any."""
    error: str | None = None
    """Why the source or the request cannot be used; the data set then keeps what it has."""


def data_sets(pod_annotations: Mapping[str, str]) -> tuple[dict[str, DataSet], list[str]]:
    """Every usable data set keyed by name, and the problems with declarations that are not usable.

    A declaration whose name is not a DNS-1123 label is never used as a path and only reported.
    """
    found: dict[str, DataSet] = {}
    problems: list[str] = []
    for key, value in sorted(pod_annotations.items()):
        if not key.startswith(annotations.DATA_PREFIX):
            continue
        try:
            declared = annotations.parse_data_set(key, value)
        except errors.AnnotationError as error:
            problems.append(str(error))
            continue
        request_key = annotations.REQUEST_DATA_PREFIX + declared.name
        request, problem = None, None
        try:
            manifests.check_source(declared.source, f"{key}: source")
            if request_key in pod_annotations:
                request = manifests.parse_request(pod_annotations[request_key], request_key)
        except manifests.ManifestError as error:
            problem = str(error)
        found[declared.name] = DataSet(declared.name, declared.source, request, problem)
    return found, problems
