"""Injector settings: defaults, YAML file, overrides, errors naming the key, a stable hash."""

from __future__ import annotations

import ast
import dataclasses
import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from autocrane import errors
from webhook import settings


def test_defaults_are_the_documented_ones() -> None:
    s = settings.load()
    assert s == settings.InjectorSettings()
    assert (s.watchdoghealthz_port, s.datadeployer_status_port, s.native_sidecar) == (8097, 8098, False)
    assert s.store_location == "/autocrane/data" and s.run_as_user == 65532


def test_every_setting_has_a_docstring() -> None:
    tree = ast.parse(Path(settings.__file__).read_text())
    body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "InjectorSettings").body
    documented = {
        node.target.id for node, after in itertools.pairwise(body)
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
        and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)
    }
    assert documented == {field.name for field in dataclasses.fields(settings.InjectorSettings)}


def test_a_yaml_file_sets_values_and_merges_resources_over_the_defaults(tmp_path: Path) -> None:
    config = tmp_path / "injector.yaml"
    config.write_text("datadeployer_image: registry.example/sidecar:2\nnative_sidecar: true\n"
                      "datadeployer_resources:\n  limits: {memory: 512Mi}\n  requests: {cpu: 0.1}\n"
                      "store_location: /srv/data/\n")
    s = settings.load(config)
    assert s.datadeployer_image == "registry.example/sidecar:2" and s.native_sidecar is True
    assert s.datadeployer_resources == settings.Resources("0.1", "64Mi", "1", "512Mi")
    assert s.store_location == "/srv/data"


def test_overrides_win_over_the_file_and_accept_strings(tmp_path: Path) -> None:
    config = tmp_path / "injector.yaml"
    config.write_text("watchdoghealthz_port: 9000\nnative_sidecar: false\n")
    s = settings.load(config, {"watchdoghealthz_port": "9100", "native_sidecar": "TRUE"})
    assert (s.watchdoghealthz_port, s.native_sidecar) == (9100, True)


def test_an_empty_file_means_defaults(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("")
    assert settings.load(tmp_path / "empty.yaml") == settings.InjectorSettings()


@pytest.mark.parametrize(("text", "fragment"), [
    ("native_sidecars: true\n", "unknown setting 'native_sidecars'"),
    ("- a list\n", "expected a mapping of settings"),
    ("image_pull_policy: Sometimes\n", "'image_pull_policy'"),
    ("watchdoghealthz_port: 0\n", "'watchdoghealthz_port'"),
    ("watchdoghealthz_port: 8098\n", "must differ"),
    ("native_sidecar: maybe\n", "'native_sidecar'"),
    ("data_size_limit: huge\n", "'data_size_limit'"),
    ("store_location: data\n", "'store_location': 'data' is not valid: expected an absolute path like /data"),
    ("datadeployer_resources: {requests: {gpu: 1}}\n", "'datadeployer_resources'.requests"),
    ("datadeployer_resources: {requests: {memory: 1Gi}}\n", "memory request 1Gi is larger than its limit 256Mi"),
    ("datadeployer_image: ''\n", "'datadeployer_image'"),
    ("{unclosed\n", "cannot read injector config"),
])
def test_bad_config_files_are_refused_naming_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    config = tmp_path / "injector.yaml"
    config.write_text(text)
    with pytest.raises(errors.ConfigError) as caught:
        settings.load(config)
    assert fragment in str(caught.value)


def test_unknown_overrides_are_refused_too() -> None:
    with pytest.raises(errors.ConfigError, match="overrides: unknown setting 'port'"):
        settings.load(None, {"port": 1})


def test_the_config_hash_is_stable_across_processes_and_changes_with_any_setting() -> None:
    here = settings.InjectorSettings().config_hash()
    there = subprocess.run([sys.executable, "-c", "from webhook import settings; "
                            "print(settings.InjectorSettings().config_hash())"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert here == there and len(here) == 16
    assert settings.load(overrides={"tmp_size_limit": "64Mi"}).config_hash() != here


def test_environment_variables_override_settings_by_field_name() -> None:
    overrides = settings.environment_overrides({
        "AUTOCRANE_INJECTOR_NATIVE_SIDECAR": "true", "AUTOCRANE_INJECTOR_WATCHDOGHEALTHZ_PORT": "9001",
        "UNRELATED": "x"})
    loaded = settings.load(None, overrides)
    assert loaded.native_sidecar is True
    assert loaded.watchdoghealthz_port == 9001


def test_an_unknown_environment_override_is_refused_naming_its_key() -> None:
    with pytest.raises(errors.ConfigError, match="no_such_field"):
        settings.load(None, settings.environment_overrides({"AUTOCRANE_INJECTOR_NO_SUCH_FIELD": "1"}))
