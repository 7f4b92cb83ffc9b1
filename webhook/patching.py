"""The JSONPatch (RFC 6902) from one JSON document to another (pure).

``jsonpatch.JsonPatch.from_diff`` is correct but searches lists for moved elements, which costs
about a millisecond per pod: most of an admission's CPU. An injection only adds, inserts, removes
or replaces; this diff says exactly that, in a few microseconds:

- objects: ``remove`` keys that went, ``add`` keys that came, recurse into keys that changed;
- lists of equal length: recurse element by element;
- lists that grew or shrank in one place (a common prefix and suffix around the change, which is
  how containers, volumes and mounts are inserted): ``add``/``remove`` at explicit indexes;
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


def _diff_lists(old: list[Any], new: list[Any], path: str) -> list[Operation]:
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
