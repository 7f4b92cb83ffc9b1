"""The JSONPatch (RFC 6902) from one JSON document to another (pure).

``jsonpatch.JsonPatch.from_diff`` is correct but searches lists for moved elements, which costs
about a millisecond per pod: most of an admission's CPU. An injection only adds, inserts, removes
or replaces; this diff says exactly that, in a few microseconds:

- objects: ``remove`` keys that went, ``add`` keys that came, recurse into keys that changed;
- lists of equal length: recurse element by element;
- lists of objects with unique ``name`` keys (containers, volumes, mounts, env: Kubernetes' own
  merge key), where the names they share keep their order: matched by name, so a container that
  gained a mount while a sidecar was appended is one ``add`` into its mounts and one ``add`` of
  the sidecar, never the whole list;
- other lists that grew or shrank in one place (a common prefix and suffix around the change):
  ``add``/``remove`` at explicit indexes;
- anything else: ``replace`` the value.

Parents that do not exist are added whole, so ``/metadata/annotations`` or ``/spec/initContainers``
missing from the pod is handled by construction, and keys are escaped (``~`` -> ``~0``, ``/`` ->
``~1``). Tests apply every patch with the ``jsonpatch`` library and compare with the target.
Values are compared with ``==``: both documents come from the same JSON decoding and the injector
never turns a number into a boolean, so ``1 == True`` cannot hide a change here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Operation = dict[str, Any]


def escape(key: str) -> str:
    """A JSON Pointer reference token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def diff(old: Any, new: Any, path: str = "") -> list[Operation]:
    """The operations that turn ``old`` into ``new``; empty when they are equal."""
    if old == new:
        return []
    old_type, new_type = type(old), type(new)  # exact types first: ABC checks cost more than the diff
    if (old_type is dict or isinstance(old, Mapping)) and (new_type is dict or isinstance(new, Mapping)):
        return _diff_objects(old, new, path)
    if old_type is list and new_type is list:
        return _diff_lists(old, new, path)
    return [{"op": "replace", "path": path, "value": new}]


def _diff_objects(old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> list[Operation]:
    ops: list[Operation] = [{"op": "remove", "path": f"{path}/{escape(k)}"} for k in old if k not in new]
    for key, value in new.items():
        if key not in old:
            ops.append({"op": "add", "path": f"{path}/{escape(key)}", "value": value})
        elif old[key] != value:
            ops.extend(diff(old[key], value, f"{path}/{escape(key)}"))
    return ops


def _names(items: list[Any]) -> list[str] | None:
    """The ``name`` of each item, if every item is an object with a unique string one."""
    names = [item.get("name") if isinstance(item, Mapping) else None for item in items]
    strings = [name for name in names if isinstance(name, str)]
    if len(strings) != len(names) or len(set(strings)) != len(strings):
        return None  # a list or a mapping as a name is not hashable: compare such lists by position
    return strings


def _diff_named(old: list[Any], new: list[Any], old_names: list[str], new_names: list[str],
                path: str) -> list[Operation] | None:
    """Match elements by name; None when the shared names are not in the same order."""
    kept = set(old_names) & set(new_names)
    if [n for n in old_names if n in kept] != [n for n in new_names if n in kept]:
        return None
    # Removals from the end first, so earlier indexes stay right; then the list is walked in
    # the target's order: a shared element is always the next one left, a new one is inserted.
    ops: list[Operation] = [{"op": "remove", "path": f"{path}/{index}"}
                            for index in reversed(range(len(old))) if old_names[index] not in kept]
    remaining = iter(item for item, name in zip(old, old_names, strict=True) if name in kept)
    for index, (item, name) in enumerate(zip(new, new_names, strict=True)):
        if name in kept:
            ops.extend(diff(next(remaining), item, f"{path}/{index}"))
        else:
            ops.append({"op": "add", "path": f"{path}/{index}", "value": item})
    return ops


def _diff_lists(old: list[Any], new: list[Any], path: str) -> list[Operation]:
    old_names, new_names = _names(old), _names(new)
    if old_names is not None and new_names is not None and old_names != new_names:
        named = _diff_named(old, new, old_names, new_names, path)
        if named is not None:
            return named
    if len(old) == len(new):
        ops: list[Operation] = []
        for index, (before, after) in enumerate(zip(old, new, strict=True)):
            ops.extend(diff(before, after, f"{path}/{index}"))
        return ops
    shorter = min(len(old), len(new))
    prefix = 0
    while prefix < shorter and old[prefix] == new[prefix]:
        prefix += 1
    suffix = 0
    while suffix < shorter - prefix and old[-1 - suffix] == new[-1 - suffix]:
        suffix += 1
    removed = old[prefix:len(old) - suffix]
    added = new[prefix:len(new) - suffix]
    if removed and added:
        return [{"op": "replace", "path": path, "value": new}]
    if added:
        return [{"op": "add", "path": f"{path}/{prefix + i}", "value": v} for i, v in enumerate(added)]
    return [{"op": "remove", "path": f"{path}/{prefix}"} for _ in removed]
