"""Structured logging for every AutoCrane program: JSON lines (or plain text) on stderr.

One line per event, written by the standard ``logging`` module so library logs (uvicorn,
kubernetes) come out in the same shape. A JSON line always carries ``time`` (UTC, ISO 8601 with
milliseconds), ``level``, ``logger`` and ``message``; fields passed with ``extra={...}`` are added
as top-level keys, and an exception adds ``exception`` (the formatted traceback). Text lines are
for people at a terminal: ``time level logger: message key=value ...``.

Programs call :func:`add_arguments` on their parser and :func:`setup` with the parsed values.
The defaults come from ``AUTOCRANE_LOG_FORMAT`` and ``AUTOCRANE_LOG_LEVEL`` so a container can
be switched without editing its command line.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
from typing import Any, TextIO

import orjson

FORMATS = ("json", "text")
LEVELS = ("debug", "info", "warning", "error")

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName", "color_message"}


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a caller attached with ``extra=``, in the order they were given."""
    return {key: value for key, value in record.__dict__.items() if key not in _STANDARD_ATTRIBUTES}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; values JSON cannot encode are written with ``str()``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        # orjson: a line per admission is on the webhook's hot path (and it writes UTF-8 as is).
        return orjson.dumps(line, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...`` for reading at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{key}={value}" for key, value in extra_fields(record).items())
        text = f"{_timestamp(record)} {record.levelname.lower():<7} {record.name}: {record.getMessage()}"
        if fields:
            text = f"{text} {fields}"
        if record.exc_info:
            text = f"{text}\n{self.formatException(record.exc_info)}"
        return text


def setup(*, log_format: str = "json", level: str = "info", stream: TextIO | None = None) -> None:
    """Send every logger's records to ``stream`` (stderr) as ``log_format``; idempotent.

    uvicorn's own loggers are pointed at the root handler (their default config installs
    colourised handlers of their own), and uvicorn's per-request access log is silenced: the
    programs log what matters about each request themselves, with fields.
    """
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    if level.lower() not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        library_logger = logging.getLogger(name)
        library_logger.handlers.clear()
        library_logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--log-format`` and ``--log-level``, defaulting to the AUTOCRANE_LOG_* variables."""
    parser.add_argument("--log-format", choices=FORMATS, default=os.environ.get("AUTOCRANE_LOG_FORMAT", "json"),
                        help="json lines (default; env AUTOCRANE_LOG_FORMAT) or text for a terminal")
    parser.add_argument("--log-level", choices=LEVELS, type=str.lower,
                        default=os.environ.get("AUTOCRANE_LOG_LEVEL", "info").lower(),
                        help="lowest level written (default info; env AUTOCRANE_LOG_LEVEL)")


def setup_from_arguments(arguments: argparse.Namespace) -> None:
    setup(log_format=arguments.log_format, level=arguments.log_level)
