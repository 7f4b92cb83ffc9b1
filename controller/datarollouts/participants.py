"""Who takes part in one data rollout, read from the pods' annotations (pure).

*Members* are the pods that declare a data set from the source (``data.autocrane.io/<name>:
<source>``, valid by ``autocrane.datasets``'s rule); *dependents* list the source in
``store.autocrane.io/deps`` and consume it through a member, so their watchdogs gate the rollout
too. A member's request annotation is the record of the version it is asked for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from autocrane import datasets, inpod, keys, manifests, watchdogs
from controller import pods

DEPS_ANNOTATION = keys.STORE_DEPS


def data_names(pod: pods.Pod, source: str) -> tuple[str, ...]:
    """The pod's data-set names that come from ``source`` (valid declarations only, ``autocrane.datasets``)."""
    found, _ = datasets.declared(pod.annotations)
    return tuple(sorted(name for name, data_set in found.items() if data_set.source == source))


def sources(pod: pods.Pod) -> set[str]:
    """Every source the pod validly declares a data set from."""
    found, _ = datasets.declared(pod.annotations)
    return {data_set.source for data_set in found.values()}


def depends_on(pod: pods.Pod, source: str) -> bool:
    return source in {s.strip() for s in pod.annotations.get(DEPS_ANNOTATION, "").split(",")}


def requested(pod: pods.Pod, name: str) -> manifests.DataRequest | None:
    """The pod's current request for data set ``name`` (None when absent or unreadable)."""
    value = pod.annotations.get(keys.REQUEST_DATA_PREFIX + name)
    if value is None:
        return None
    try:
        return manifests.parse_request(value)
    except manifests.ManifestError:
        return None


def errors_of(pod: pods.Pod) -> list[tuple[str, watchdogs.Status | None]]:
    """The pod's error-level watchdogs: (name, status), status None when unreadable."""
    found, problems = watchdogs.statuses(pod.annotations)
    out: list[tuple[str, watchdogs.Status | None]] = [
        (name, s) for name, s in sorted(found.items()) if s.level == watchdogs.Level.ERROR]
    return out + [(name, None) for name in sorted(problems)]


def dependents(pod_list: Sequence[pods.Pod], source: str) -> list[pods.Pod]:
    """The pods (not terminating) that depend on ``source`` without being members of its rollout."""
    return [p for p in pod_list if not p.terminating and depends_on(p, source) and not data_names(p, source)]


@dataclasses.dataclass(frozen=True, slots=True)
class Member:
    pod: pods.Pod
    names: tuple[str, ...]
    version: str | None
    """Requested now (the first data set's request)."""
    ack: inpod.Ack | None


def of(pod_list: Iterable[pods.Pod], source: str, acks: Mapping[str, Mapping[str, inpod.Ack]]) -> list[Member]:
    """The members of ``source``'s rollout among ``pod_list`` (not terminating), by pod name, each with its ack."""
    out = []
    for pod in pod_list:
        names = data_names(pod, source)
        if not names or pod.terminating:
            continue
        request = requested(pod, names[0])
        out.append(Member(pod, names, request.version if request else None, acks.get(pod.uid, {}).get(names[0])))
    return sorted(out, key=lambda m: m.pod.name)


def ack_annotations(pod: pods.Pod, pod_acks: Mapping[str, inpod.Ack]) -> dict[str, str]:
    """``status.data.autocrane.io/<name>`` values that mirror what the datadeployer reports, where they differ."""
    changes = {}
    for name, ack in pod_acks.items():
        if ack.version is None or not pod.annotations.get(keys.DATA_PREFIX + name):
            continue
        value, key = inpod.mirror_value(ack), keys.STATUS_DATA_PREFIX + name
        if pod.annotations.get(key) != value:
            changes[key] = value
    return changes
