"""The informer's store: watch events folded into slim pods, bookmarks, and errors typed for what they ask."""

from __future__ import annotations

from typing import Any

import pytest

from autocrane import errors
from controller.apiserver import informer
from tests.controller.podfactory import raw


def _informer() -> informer.PodInformer:
    return informer.PodInformer(api=None)  # type: ignore[arg-type]  # apply() never touches the API


def _event(kind: str, name: str, rv: str, **kwargs: Any) -> dict[str, Any]:
    obj = raw(name, **kwargs)
    obj["metadata"]["resourceVersion"] = rv
    return {"type": kind, "object": obj}


def test_watch_events_add_update_and_delete_slim_pods_and_advance_the_resource_version() -> None:
    inf = _informer()
    inf.apply(_event("ADDED", "a", "10"))
    inf.apply(_event("ADDED", "b", "11"))
    inf.apply(_event("MODIFIED", "a", "12", phase="Failed"))
    inf.apply(_event("DELETED", "b", "13"))
    assert {k: p.phase for k, p in inf.store.items()} == {"ns/a": "Failed"}
    assert inf.resource_version == "13"


def test_a_bookmark_only_moves_the_resource_version() -> None:
    inf = _informer()
    inf.apply(_event("ADDED", "a", "10"))
    inf.apply({"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "99"}}})
    assert list(inf.store) == ["ns/a"] and inf.resource_version == "99"


def test_a_410_error_event_asks_for_a_new_list_and_other_errors_are_api_errors() -> None:
    inf = _informer()
    with pytest.raises(errors.Gone):
        inf.apply({"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old resource version"}})
    with pytest.raises(errors.ServerError) as error:
        inf.apply({"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "boom"}})
    assert error.value.status == 500
