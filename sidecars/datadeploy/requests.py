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

from autocrane import datasets, errors, keys, manifests


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
    """Every declared data set keyed by name, and the problems with declarations that have no usable name.

    The rule is :mod:`autocrane.datasets`'s, the one the webhook admits pods by. A declaration
    whose name is not a DNS-1123 label is never used as a path and only reported; one whose source
    (or request) cannot be used is kept with its error, which its ``/status`` entry shows.
    """
    found: dict[str, DataSet] = {}
    problems: list[str] = []
    for key, value in sorted(pod_annotations.items()):
        if not key.startswith(keys.DATA_PREFIX):
            continue
        try:
            name = datasets.name_of(key, value)
        except errors.AnnotationError as error:
            problems.append(str(error))
            continue
        request_key = keys.REQUEST_DATA_PREFIX + name
        source, request, problem = value.strip(), None, None
        try:
            datasets.parse(key, value)
            if request_key in pod_annotations:
                request = manifests.parse_request(pod_annotations[request_key], request_key)
        except (errors.AnnotationError, manifests.ManifestError) as error:
            problem = str(error)
        found[name] = DataSet(name, source, request, problem)
    return found, problems
