"""Hostile files for ``autocrane inject -f`` (issue 8, defect 9): an ``error:`` line and exit 1, never a
traceback or a hang.

The issue's cases run the real command; the property tests feed arbitrary YAML text and arbitrary
annotation files to ``render_text``, which must give output or a ``RenderError`` (the one error
``main`` turns into an ``error:`` line besides unreadable files and settings).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from autocrane import untrusted
from tests.hostile import podstrategies
from webhook import containers, render, settings

INJECTOR = settings.load(None, {})
POD = """apiVersion: v1
kind: Pod
metadata:
  name: web
  annotations:
    data.autocrane.io/models: models/v1
{extra}spec:
  containers:
  - name: app
    image: app:1
{container}"""


def pod_yaml(annotation_lines: str = "", container_lines: str = "") -> str:
    return POD.format(extra=annotation_lines, container=container_lines)


def inject_file(path: Path | str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """``autocrane inject -f path``; a hang fails the test after 60 s."""
    return subprocess.run([sys.executable, "-c", "from autocrane import cli; cli.main()", "inject", "-f", str(path)],
                          input=stdin, capture_output=True, timeout=60)


def refused(tmp_path: Path, text: str | bytes) -> str:
    """The error line for a file holding ``text``: exit 1, one ``error:`` line, no traceback."""
    path = tmp_path / "hostile.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    result = inject_file(path)
    stderr = result.stderr.decode()
    assert result.returncode == 1 and result.stdout == b"", stderr[-2000:]
    assert "Traceback" not in stderr and stderr.startswith("error: ") and stderr.count("\n") == 1, stderr[-2000:]
    return stderr.strip()


BOMB = """    store.autocrane.io/location: &i
      - &a [x,x,x,x,x,x,x,x,x]
      - &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
      - &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
      - &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
      - &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
      - &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
      - &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
      - &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
      - [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_an_alias_bomb_in_an_annotation_value_is_refused_at_once(tmp_path: Path) -> None:
    assert refused(tmp_path, pod_yaml(BOMB)) == (
        "error: line 14, column 13: the input expands to more than 1,000,000 nodes through its YAML aliases")


def test_an_alias_bomb_as_a_kind_is_refused_too(tmp_path: Path) -> None:
    text = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(7))
    assert "YAML aliases" in refused(tmp_path, text + "kind: *h\n")


@pytest.mark.parametrize(("key", "shown"), [("1", "1 (int"), ("null", "None (NoneType"), ("true", "True (bool")])
def test_an_annotation_key_that_is_not_a_string_is_an_error_line(tmp_path: Path, key: str, shown: str) -> None:
    assert refused(tmp_path, pod_yaml(f"    {key}: x\n")) == (
        "error: document 1 (Pod web): metadata.annotations is not valid: expected a mapping of strings to strings, "
        f"not the key {shown}; quote it in YAML)")


def test_a_file_that_is_not_utf8_is_an_error_line(tmp_path: Path) -> None:
    assert refused(tmp_path, pod_yaml().encode().replace(b"name: web", b"name: w\xffb")) == (
        f"error: {tmp_path / 'hostile.yaml'} is not UTF-8 text (byte 44: b'\\xff')")


def test_standard_input_that_is_not_utf8_is_an_error_line() -> None:
    result = inject_file("-", stdin=b"kind: \xfe\n")
    assert result.returncode == 1
    assert result.stderr == b"error: the standard input is not UTF-8 text (byte 6: b'\\xfe')\n"


def test_10000_levels_of_nesting_are_an_error_line(tmp_path: Path) -> None:
    assert refused(tmp_path, "a: " + "[" * 10_000 + "]" * 10_000 + "\n") == (
        f"error: line 1, column {3 + render.MAX_YAML_DEPTH}: nested deeper than {render.MAX_YAML_DEPTH} levels")


def test_10000_levels_of_nesting_in_a_mapping_are_an_error_line_too(tmp_path: Path) -> None:
    assert "nested deeper than 128 levels" in refused(tmp_path, "a:\n" + "".join(
        " " * level + "b:\n" for level in range(1, 10_000)))


def test_an_aliased_list_as_container_port_is_an_error_line(tmp_path: Path) -> None:
    text = pod_yaml("    watchdoghealthz.autocrane.io/min-ready-seconds: '1'\n",
                    "    env: &list [{name: A, value: b}]\n    ports: [{containerPort: *list}]\n")
    assert refused(tmp_path, text) == ("error: document 1 (Pod web): spec.containers[0].ports[0].containerPort is not "
                                       "valid: expected a port number, 1 to 65535")


def test_a_recursive_alias_is_an_error_line(tmp_path: Path) -> None:
    assert refused(tmp_path, "a: &x [1, *x]\n") == "error: line 1, column 11: alias *x refers to a node that holds it"


@pytest.mark.parametrize(("value", "message"), [("9" * 5000, "Exceeds the limit (4300 digits)"),
                                                ("2026-13-01", "month must be in 1..12")])
def test_a_scalar_the_loader_cannot_build_is_an_error_line(tmp_path: Path, value: str, message: str) -> None:
    assert refused(tmp_path, f"a: {value}\n").startswith(f"error: the input holds a value YAML cannot load: {message}")


def test_a_namespace_that_is_not_a_string_is_left_out_of_the_message(tmp_path: Path) -> None:
    text = pod_yaml("    store.autocrane.io/location: relative\n").replace("  name: web\n",
                                                                     "  name: web\n  namespace: 5\n")
    assert refused(tmp_path, text).startswith('error: document 1 (Pod web): annotation "store.autocrane.io/location"')


def test_a_1_mib_name_and_value_are_cut_in_the_message(tmp_path: Path) -> None:
    big = "x" * (1 << 20)
    text = pod_yaml(f"    store.autocrane.io/location: {big}\n").replace("name: web", f"name: {big}", 1)
    assert len(refused(tmp_path, text)) < 400


def test_a_non_string_annotation_value_is_named_and_cut(tmp_path: Path) -> None:
    message = refused(tmp_path, pod_yaml("    store.autocrane.io/location: [" + ", ".join(["long"] * 1000) + "]\n"))
    assert message == ('error: document 1 (Pod web): annotation "store.autocrane.io/location": '
                       "['long', 'long', 'long', 'long', 'long', 'long', ...] (list) is not valid: "
                       "expected a string (quote the value in YAML)")


def test_anchors_and_aliases_that_do_not_blow_up_still_work(tmp_path: Path) -> None:
    path = tmp_path / "anchors.yaml"
    path.write_text(pod_yaml("", "    env: &env [{name: A, value: b}]\n")
                    + "  - {name: sidecar, image: s:1, env: *env}\n")
    result = inject_file(path)
    assert result.returncode == 0, result.stderr.decode()
    (out,) = yaml.safe_load_all(result.stdout)
    assert [c["name"] for c in out["spec"]["containers"]] == ["app", "sidecar", containers.DATADEPLOYER]
    assert out["spec"]["containers"][1]["env"] == [{"name": "A", "value": "b"}]


def test_nesting_up_to_the_limit_passes_through_and_one_more_level_is_refused() -> None:
    kept: dict[str, Any] = {"apiVersion": "example.com/v1", "kind": "Deep", "spec": {}}
    level = kept["spec"]
    for _ in range(render.MAX_YAML_DEPTH - 2):  # the document and spec are the first two levels
        level["a"] = {}
        level = level["a"]
    assert untrusted.depth(kept, 1000) == render.MAX_YAML_DEPTH
    text = yaml.safe_dump(kept)
    assert yaml.safe_load(render.render_text(text, INJECTOR)) == kept
    level["a"] = {}
    with pytest.raises(render.RenderError, match=f"nested deeper than {render.MAX_YAML_DEPTH} levels"):
        render.render_text(yaml.safe_dump(kept), INJECTOR)


def test_aliases_are_counted_as_the_nodes_they_stand_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "MAX_YAML_NODES", 100)

    def text(aliases: int) -> str:
        return "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: [" + ", ".join(["*a"] * aliases) + "]\n"

    # The mapping, "a", its list and 10 scalars, "b" and its list: 15 nodes; each alias 11 more.
    assert yaml.safe_load(render.render_text(text(7), INJECTOR))["b"][6] == ["x"] * 10  # 92 nodes
    with pytest.raises(render.RenderError, match="more than 100 nodes"):
        render.render_text(text(8), INJECTOR)  # 103


# --- properties ---------------------------------------------------------------------------------

YAML_KEYS = st.text(max_size=8) | st.integers(-5, 5) | st.none() | st.booleans()


@st.composite
def annotation_files(draw: st.DrawFn) -> str:
    """Pods, workloads and lists whose annotations may have keys of any YAML type, as YAML text."""
    pods = draw(st.lists(podstrategies.pods(), min_size=1, max_size=3))
    documents: list[Any] = []
    for obj in pods:
        meta = obj.get("metadata")
        if isinstance(meta, dict) and isinstance(meta.get("annotations"), dict):
            meta["annotations"].update(draw(st.dictionaries(YAML_KEYS, podstrategies.ANNOTATION_VALUES, max_size=2)))
        kind = draw(st.sampled_from(["Pod", "Deployment", "CronJob", "List"]))
        if kind == "Deployment":
            obj = {"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"template": obj}}
        elif kind == "CronJob":
            obj = {"apiVersion": "batch/v1", "kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": obj}}}}
        elif kind == "List":
            obj = {"apiVersion": "v1", "kind": "List", "items": [obj, draw(podstrategies.JSON_VALUES)]}
        documents.append(obj)
    return yaml.safe_dump_all(documents)


def assert_rendered_or_refused(text: str) -> None:
    try:
        render.render_text(text, INJECTOR)
    except render.RenderError as exc:
        assert str(exc)


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(annotation_files())
def test_any_annotation_file_gives_output_or_an_error(text: str) -> None:
    assert_rendered_or_refused(text)


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab1:- \n[]{}&*!|>'\"#%@`,?"), max_size=80) | st.text(max_size=40))
def test_any_text_gives_output_or_an_error(text: str) -> None:
    assert_rendered_or_refused(text)
