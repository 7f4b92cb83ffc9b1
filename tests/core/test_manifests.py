"""Data-repository manifests and data-request values."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from autocrane import manifests

SHA = "ab" * 32
T = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def test_version_ids_are_time_then_hash_prefix() -> None:
    assert manifests.version_id(T, SHA) == "20260102T030405Z-abababababab"


def test_a_source_manifest_round_trips_through_json() -> None:
    version = manifests.Version("20260102T030405Z-abababababab", SHA, 10, T, {"commit": "c0ffee"})
    source = manifests.SourceManifest("models/resnet", (version,), version.version)
    text = json.dumps({"sources": {"models/resnet": source.to_json()}})
    parsed = manifests.parse_manifest(text)["models/resnet"]
    assert parsed == source
    assert parsed.find(version.version) == version and parsed.latest == version


def test_each_namespace_sees_its_own_last_known_good_else_the_sources() -> None:
    old, new = (manifests.Version(f"v{i}", SHA, 1, T) for i in (1, 2))
    source = manifests.SourceManifest("m", (old, new), "v2", {"team-a": "v1"})
    parsed = manifests.parse_manifest(json.dumps({"sources": {"m": source.to_json()}}))["m"]
    assert parsed == source and source.to_json()["lastKnownGoodByNamespace"] == {"team-a": "v1"}
    assert parsed.for_namespace("team-a").last_known_good == "v1"
    assert parsed.for_namespace("team-b").last_known_good == "v2" and parsed.for_namespace(None) is parsed
    assert "lastKnownGoodByNamespace" not in manifests.SourceManifest("m", (old,), "v1").to_json()
    assert source.newer("v2", "v1") and not source.newer("v1", "v2") and source.newer("v1", None)
    assert not source.newer("v9", "v1") and source.newer("v1", "gone")


@pytest.mark.parametrize("scoped, message", [
    ([], "lastKnownGoodByNamespace: expected an object"),
    ({"Team": "v1"}, "lastKnownGoodByNamespace key 'Team'"),
    ({"team": "../x"}, r"lastKnownGoodByNamespace\.team"),
])
def test_a_hostile_namespace_map_is_rejected_saying_where(scoped: object, message: str) -> None:
    body = {"source": "m", "versions": [], "lastKnownGood": None, "lastKnownGoodByNamespace": scoped}
    with pytest.raises(manifests.ManifestError, match=message):
        manifests.SourceManifest.from_json(body, "sources.m")


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(sha256="AB" * 32), "64 lower-case hex"),
    (lambda d: d.update(size=-1), "not a byte count"),
    (lambda d: d.update(version="../etc"), "version"),
    (lambda d: d.update(created="soon"), "not an RFC3339 time"),
])
def test_malformed_versions_are_rejected_saying_where(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    body = {"version": "v1", "sha256": SHA, "size": 1, "created": "2026-01-02T03:04:05Z"}
    mutate(body)
    with pytest.raises(manifests.ManifestError, match=message):
        manifests.Version.from_json(body, "sources.x.versions[0]")


def test_requests_parse_with_and_without_sha256_and_ignore_unknown_keys() -> None:
    assert manifests.parse_request('{"version":"v1"}') == manifests.DataRequest("v1")
    assert manifests.parse_request(json.dumps({"version": "v1", "sha256": SHA, "stage": 2})) == \
        manifests.DataRequest("v1", SHA)
    request = manifests.DataRequest("v1", SHA)
    assert manifests.parse_request(request.to_annotation()) == request


@pytest.mark.parametrize("value", ["v1", "{}", '{"version": "a/b"}', '{"version": "v1", "sha256": "x"}', "[]"])
def test_malformed_requests_are_rejected_naming_the_key(value: str) -> None:
    with pytest.raises(manifests.ManifestError, match=r"request\.data\.autocrane\.io/models"):
        manifests.parse_request(value, "request.data.autocrane.io/models")


def test_source_names_may_have_slashes_but_no_dot_segments() -> None:
    assert manifests.check_source("models/resnet") == "models/resnet"
    for bad in ("", "/x", "x/", "a//b", "a/../b", "A"):
        with pytest.raises(manifests.ManifestError):
            manifests.check_source(bad)
