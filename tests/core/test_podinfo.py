"""The downward-API annotations file: Go-quoted values, parsed exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from autocrane import podinfo
from devcluster import downwardapi

# What the kubelet writes (fmt %q of each value, keys sorted), including escapes Go produces.
KUBELET_FILE = (
    'data.autocrane.io/models="models"\n'
    'kubernetes.io/config.seen="2026-01-02T03:04:05.123456789Z"\n'
    'multi="line one\\nline \\"two\\"\\ttabbed \\\\ backslash"\n'
    'request.data.autocrane.io/models="{\\"version\\":\\"v1-abc\\"}"\n'
    'unicode="caf\u00e9 \\u200b \\x00 \\a\\b\\f\\r\\v"\n'
    'bytes="\\xff\\xfe"'
)


def test_the_kubelet_format_is_parsed_with_go_escapes() -> None:
    parsed = podinfo.parse(KUBELET_FILE)
    assert parsed["data.autocrane.io/models"] == "models"
    assert parsed["multi"] == 'line one\nline "two"\ttabbed \\ backslash'
    assert parsed["request.data.autocrane.io/models"] == '{"version":"v1-abc"}'
    assert parsed["unicode"] == "caf\u00e9 \u200b \x00 \a\b\f\r\v"
    assert parsed["bytes"] == "\ufffd\ufffd"  # invalid UTF-8 is kept visible, not fatal


def test_a_value_may_contain_equals_signs() -> None:
    assert podinfo.parse('a.io/b="x=y=z"') == {"a.io/b": "x=y=z"}


def test_octal_and_long_unicode_escapes() -> None:
    assert podinfo.unquote('"\\101\\U0001F600"') == "A\U0001f600"


def test_quote_and_parse_round_trip() -> None:
    annotations = {"b": 'he said "hi"\n\tand left \\', "a": "plain", "c": "\x01\x7f"}
    assert podinfo.parse(downwardapi.format_annotations(annotations)) == annotations


@pytest.mark.parametrize("line, message", [
    ("no-equals", "line 1: expected key=\"value\""),
    ("k=unquoted", r"line 1 \(k\): expected a double-quoted string"),
    ('k="bad \\q escape"', "unknown escape"),
    ('k="dangling \\"', "unescaped quote|backslash at the end"),
    ('k="\\xZZ"', "bad \\\\x escape"),
    ('k="a"b"', "unescaped quote"),
])
def test_malformed_lines_are_rejected_naming_the_line(line: str, message: str) -> None:
    with pytest.raises(podinfo.PodInfoError, match=message):
        podinfo.parse(line)


def test_the_watcher_rereads_only_when_the_content_changes(tmp_path: Path) -> None:
    path = tmp_path / "annotations"
    watcher = podinfo.Watcher(path)
    assert watcher.poll() is False and watcher.error is not None  # missing file: an error, not a crash
    path.write_text('a="1"')
    assert watcher.poll() is True and watcher.annotations == {"a": "1"} and watcher.error is None
    assert watcher.poll() is False
    path.write_text('a="1"\nb="2"')
    assert watcher.poll() is True and watcher.annotations == {"a": "1", "b": "2"}
    path.write_text("garbage")
    assert watcher.poll() is True and "line 1" in (watcher.error or "")
    assert watcher.annotations == {"a": "1", "b": "2"}  # the last good content stays in force


def test_watcher_clears_a_read_error_when_the_same_content_is_readable_again(tmp_path: Path) -> None:
    # The kubelet swaps ..data and then deletes the old directory: a read racing with it fails
    # once, and the next read returns the unchanged content. The error must not stick.
    path = tmp_path / "annotations"
    path.write_text('a="1"')
    watcher = podinfo.Watcher(path)
    assert watcher.poll() is True and watcher.error is None
    path.unlink()
    assert watcher.poll() is False and watcher.error is not None
    assert watcher.annotations == {"a": "1"}
    path.write_text('a="1"')
    watcher.poll()
    assert watcher.error is None and watcher.annotations == {"a": "1"}
