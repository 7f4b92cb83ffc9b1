"""``autocrane check-inject``: why a pod would or would not be injected, from the webhook's own code."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from webhook import checkinject
from webhook import settings as injector_settings

SETTINGS = injector_settings.load(None)
TESTDATA = Path(__file__).parent / "testdata"
OPTED_IN = {"autocrane-inject": "enabled"}


def _pod(**annotations: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "api", "annotations": annotations},
            "spec": {"containers": [{"name": "api", "image": "shop/api:3"}]}}


READY = {"watchdoghealthz.autocrane.io/min-ready-seconds": "60"}


def test_an_opted_in_pod_in_an_opted_in_namespace_would_get_its_containers() -> None:
    found = checkinject.explain(_pod(**READY), SETTINGS, namespace="shop", namespace_labels=OPTED_IN)
    assert found.inject is True
    assert found.lines[0] == "namespace shop: opted in (autocrane-inject=enabled)"
    assert found.lines[-1].startswith("would be injected: ") and "autocrane-watchdoghealthz" in found.lines[-1]


def test_a_namespace_without_the_label_or_a_system_one_is_the_reason() -> None:
    plain = checkinject.explain(_pod(**READY), SETTINGS, namespace="shop", namespace_labels={})
    assert plain.inject is False
    assert "kubectl label namespace shop autocrane-inject=enabled" in plain.lines[0]
    assert "would get" in plain.lines[-1]  # what it asks for, once the namespace is fixed
    system = checkinject.explain(_pod(**READY), SETTINGS, namespace="kube-system", namespace_labels=OPTED_IN)
    assert system.inject is False and "system namespace" in system.lines[0]


def test_the_policys_named_reason_says_why_not() -> None:
    nothing = checkinject.explain(_pod(), SETTINGS, namespace="shop", namespace_labels=OPTED_IN)
    assert nothing.inject is False and "(not-opted-in)" in nothing.lines[-1]
    out = checkinject.explain(_pod(**READY, **{"injector.autocrane.io/inject": "false"}), SETTINGS)
    assert out.inject is False and "(opted-out)" in out.lines[-1] and 'inject: "false"' in out.lines[-1]
    mirror = checkinject.explain(_pod(**READY, **{"kubernetes.io/config.mirror": "x"}), SETTINGS)
    assert "(mirror-pod)" in mirror.lines[-1]


def test_a_malformed_annotation_is_refused_naming_the_key() -> None:
    found = checkinject.explain(_pod(**{"watchdoghealthz.autocrane.io/min-ready-seconds": "soon"}), SETTINGS)
    assert found.inject is False
    assert found.lines[-1].startswith("refused: ")
    assert "watchdoghealthz.autocrane.io/min-ready-seconds" in found.lines[-1]


def test_an_injected_pod_says_what_it_got() -> None:
    pod = yaml.safe_load((TESTDATA / "pod-watchdoghealthz.yaml.injected").read_text())
    found = checkinject.explain(pod, SETTINGS, namespace="shop", namespace_labels=OPTED_IN)
    assert found.inject is True and found.lines[-1].startswith("injected already: ")
    assert "autocrane-watchdoghealthz" in found.lines[-1]


def test_a_file_of_workloads_explains_each_pod_template(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert checkinject.main([str(TESTDATA / "deployment.yaml")]) == 0
    out = capsys.readouterr().out
    assert "(its pod template): would be injected" in out and "namespace: not checked" in out
    plain = tmp_path / "plain.yaml"
    plain.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: b}]}\n"
                     "---\nkind: ConfigMap\nmetadata: {name: c}\n")
    assert checkinject.main([str(plain)]) == 1
    assert "Pod p: would NOT be injected" in capsys.readouterr().out
    empty = tmp_path / "empty.yaml"
    empty.write_text("kind: ConfigMap\n")
    assert checkinject.main([str(empty)]) == 2


def test_the_images_the_injection_adds_are_named() -> None:
    settings = injector_settings.parse("datadeployer_image: shop/sidecar:7\nwatchdoghealthz_image: shop/sidecar:7\n",
                                       "test")
    found = checkinject.explain(_pod(**READY, **{"data.autocrane.io/model": "models"}), settings,
                                namespace="shop", namespace_labels=OPTED_IN)
    assert found.inject is True and found.lines[-1].endswith("; images shop/sidecar:7")


def test_a_file_is_explained_with_the_defaults_unless_a_release_or_config_is_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert checkinject.main([str(TESTDATA / "deployment.yaml")]) == 0
    assert capsys.readouterr().out.startswith("injector settings: the defaults (name the release with --release")
    config = tmp_path / "injector.yaml"
    config.write_text("datadeployer_image: shop/sidecar:7\n")
    assert checkinject.main([str(TESTDATA / "deployment.yaml"), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"injector settings: {config}\n") and "shop/sidecar:7" in out


def test_a_named_release_that_cannot_be_read_is_an_error_not_the_defaults(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-kubeconfig"
    assert checkinject.main([str(TESTDATA / "deployment.yaml"), "--release", "shop", "--kubeconfig",
                             str(missing)]) == 2
    assert "no usable Kubernetes credentials" in capsys.readouterr().err
