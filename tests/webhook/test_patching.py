"""The fast JSON diff: every patch applies with the jsonpatch library and gives the target."""

from __future__ import annotations

import copy

import jsonpatch
from hypothesis import given, settings
from hypothesis import strategies as st

from webhook import patching


def _applies(old: object, new: object) -> list[dict]:
    ops = patching.diff(old, new)
    assert jsonpatch.apply_patch(copy.deepcopy(old), ops) == new
    return ops


def test_equal_documents_give_no_operations() -> None:
    assert _applies({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2}]}) == []


def test_a_missing_parent_is_added_whole_with_escaped_keys() -> None:
    ops = _applies({"metadata": {}}, {"metadata": {"annotations": {"data.autocrane.io/x~y": "s"}}})
    assert ops == [{"op": "add", "path": "/metadata/annotations", "value": {"data.autocrane.io/x~y": "s"}}]
    ops = _applies({"metadata": {"annotations": {}}}, {"metadata": {"annotations": {"a.io/b~c": "s"}}})
    assert ops == [{"op": "add", "path": "/metadata/annotations/a.io~1b~0c", "value": "s"}]


def test_an_insertion_in_a_list_is_an_add_at_its_index() -> None:
    ops = _applies({"c": [{"n": "a"}, {"n": "b"}]}, {"c": [{"n": "x"}, {"n": "a"}, {"n": "b"}]})
    assert ops == [{"op": "add", "path": "/c/0", "value": {"n": "x"}}]
    ops = _applies({"c": ["a", "b"]}, {"c": ["a", "x", "y", "b"]})
    assert ops == [{"op": "add", "path": "/c/1", "value": "x"}, {"op": "add", "path": "/c/2", "value": "y"}]


def test_removals_and_unrelated_changes_apply() -> None:
    _applies({"c": ["a", "x", "y", "b"]}, {"c": ["a", "b"]})
    _applies({"c": ["a", "b", "c"]}, {"c": ["z", "q"]})
    _applies({"k": 1, "gone": True}, {"k": "one"})
    _applies([1, 2], {"now": "an object"})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text("ab/~", max_size=3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text("ab/~", max_size=3), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(json_values, json_values)
def test_any_two_documents_are_bridged_by_the_patch(old: object, new: object) -> None:
    _applies({"doc": old}, {"doc": new})


def test_a_container_that_gained_a_mount_beside_an_appended_sidecar_is_two_adds() -> None:
    old = {"containers": [{"name": "app", "volumeMounts": [{"name": "token"}]}]}
    new = {"containers": [{"name": "app", "volumeMounts": [{"name": "token"}, {"name": "data"}]},
                          {"name": "sidecar"}]}
    assert _applies(old, new) == [
        {"op": "add", "path": "/containers/0/volumeMounts/1", "value": {"name": "data"}},
        {"op": "add", "path": "/containers/1", "value": {"name": "sidecar"}},
    ]


named_items = st.lists(
    st.fixed_dictionaries({"name": st.sampled_from("abcdefgh"), "v": st.integers(0, 2)}),
    max_size=6, unique_by=lambda item: item["name"])


@settings(max_examples=500, deadline=None)
@given(named_items, named_items)
def test_lists_of_named_objects_are_bridged_whatever_was_added_removed_moved_or_changed(
    old: list[dict], new: list[dict]
) -> None:
    _applies({"items": old}, {"items": new})
