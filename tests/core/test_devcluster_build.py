"""Pure parts of the control-plane build: the staging list, ldflags, cache stamps."""

from __future__ import annotations

import dataclasses
import hashlib
import json

from devcluster import build

GOMOD = """module k8s.io/kubernetes

go 1.24.0

require (
\tk8s.io/api v0.0.0
\tk8s.io/client-go v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tk8s.io/cri-api => ./staging/src/k8s.io/cri-api
\tgithub.com/example/x => github.com/example/x v1.2.3
)
"""


def test_staging_modules_are_read_from_the_replace_block() -> None:
    assert build.staging_modules(GOMOD) == ["k8s.io/api", "k8s.io/client-go", "k8s.io/cri-api"]


def test_staging_modules_ignore_replaces_that_do_not_point_into_staging() -> None:
    assert build.staging_modules("replace k8s.io/foo => k8s.io/foo v0.1.0\n") == []


def test_kubernetes_binaries_are_stamped_with_their_version() -> None:
    (k8s,) = [r for r in build.recipes() if r.name == "kubernetes"]
    assert f"-X k8s.io/component-base/version.gitVersion={build.KUBERNETES_VERSION}" in k8s.ldflags
    assert f"-X k8s.io/client-go/pkg/version.gitVersion={build.KUBERNETES_VERSION}" in k8s.ldflags
    assert "-X k8s.io/component-base/version.gitMinor=34" in k8s.ldflags


def test_a_changed_recipe_changes_the_stamp_so_it_is_rebuilt() -> None:
    recipe = build.recipes()[0]
    assert recipe.stamp() == dataclasses.replace(recipe).stamp()
    assert recipe.stamp() != dataclasses.replace(recipe, version="v9.9.9").stamp()


def test_cache_dir_follows_autocrane_cache(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AUTOCRANE_CACHE", str(tmp_path))
    assert build.bin_dir() == tmp_path / "bin"


def test_the_node_binaries_are_a_recipe_of_their_own_with_the_same_version_stamp() -> None:
    recipes = {r.name: r for r in build.recipes()}
    node, k8s = recipes["node"], recipes["kubernetes"]
    assert node.binaries == ("kubelet", "kube-proxy")
    assert (node.module, node.version, node.ldflags, node.tags) == (k8s.module, k8s.version, k8s.ldflags, k8s.tags)
    assert not set(node.binaries) & set(k8s.binaries)


def test_a_recipe_without_a_main_source_keeps_the_stamp_it_had_before_the_field_existed() -> None:
    # Others' caches hold binaries stamped before `main_source` existed: adding it must not rebuild them.
    (k8s,) = [r for r in build.recipes() if r.name == "kubernetes"]
    before = {k: v for k, v in dataclasses.asdict(k8s).items() if k != "main_source"}
    expected = hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()
    assert k8s.stamp() == expected


def test_a_changed_main_source_changes_the_stamp(monkeypatch, tmp_path) -> None:
    (coredns,) = [r for r in build.recipes() if r.name == "coredns"]
    assert "plugin/kubernetes" in coredns.main_go()
    before = coredns.stamp()
    (tmp_path / "coredns").mkdir()
    (tmp_path / "coredns" / "main.go").write_text(coredns.main_go() + "\n// changed\n")
    monkeypatch.setattr(build, "GO_SOURCES", tmp_path)
    assert coredns.stamp() != before
