"""Structured logging: one JSON object per line with the standard fields plus ``extra``."""

from __future__ import annotations

import argparse
import io
import json
import logging
from collections.abc import Iterator

import pytest

from autocrane import logs


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_a_json_line_has_time_level_logger_message_and_the_extra_fields(restore_logging: None) -> None:
    stream = io.StringIO()
    logs.setup(log_format="json", level="info", stream=stream)
    logging.getLogger("webhook.server").info("admission %s", "done", extra={"uid": "u-1", "duration_ms": 1.5})
    line = json.loads(stream.getvalue())
    assert line["level"] == "info" and line["logger"] == "webhook.server" and line["message"] == "admission done"
    assert line["uid"] == "u-1" and line["duration_ms"] == 1.5
    assert line["time"].endswith("Z") and "T" in line["time"]


def test_values_json_cannot_encode_are_written_as_text(restore_logging: None) -> None:
    stream = io.StringIO()
    logs.setup(stream=stream)
    logging.getLogger("x").warning("odd", extra={"path": object.__new__(argparse.Namespace)})
    assert json.loads(stream.getvalue())["path"] == "Namespace()"


def test_an_exception_is_one_line_with_its_traceback_in_a_field(restore_logging: None) -> None:
    stream = io.StringIO()
    logs.setup(stream=stream)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("x").exception("failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert "ValueError: boom" in json.loads(lines[0])["exception"]


def test_records_below_the_level_are_dropped(restore_logging: None) -> None:
    stream = io.StringIO()
    logs.setup(level="warning", stream=stream)
    logging.getLogger("x").info("quiet")
    logging.getLogger("x").error("loud")
    assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == ["loud"]


def test_the_text_format_puts_extra_fields_after_the_message(restore_logging: None) -> None:
    stream = io.StringIO()
    logs.setup(log_format="text", stream=stream)
    logging.getLogger("webhook.tls").info("loaded", extra={"serial": "ab"})
    assert stream.getvalue().rstrip().endswith("info    webhook.tls: loaded serial=ab")


def test_uvicorn_logs_come_out_in_the_same_shape(restore_logging: None) -> None:
    stream = io.StringIO()
    logs.setup(stream=stream)
    logging.getLogger("uvicorn.error").info("Started server process")
    assert json.loads(stream.getvalue())["logger"] == "uvicorn.error"


def test_an_unknown_format_or_level_is_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        logs.setup(log_format="xml")
    with pytest.raises(ValueError, match="log level"):
        logs.setup(level="loud")


def test_the_flags_default_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOCRANE_LOG_FORMAT", "text")
    monkeypatch.setenv("AUTOCRANE_LOG_LEVEL", "DEBUG")
    parser = argparse.ArgumentParser()
    logs.add_arguments(parser)
    arguments = parser.parse_args([])
    assert (arguments.log_format, arguments.log_level) == ("text", "debug")
    assert parser.parse_args(["--log-format", "json", "--log-level", "ERROR"]).log_level == "error"
