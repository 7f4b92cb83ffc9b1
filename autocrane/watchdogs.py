"""Watchdog statuses: levels, the annotation value format, and the health label (pure).

A watchdog status lives in the pod annotation ``status.autocrane.io/<name>`` as
``<level>/<RFC3339 UTC time>/<message>``, for example
``error/2026-01-02T03:04:05Z/http 500 from /watchdog``. The message may contain ``/``: the
value is split on the first two slashes only (an RFC3339 time never contains one).

Levels are ordered ``info < warning < error``. Parsing accepts any letter case and normalises
to lower case; any other level is rejected with an error that names the annotation key. Times
are written with second precision and a ``Z``; on reading, an offset is converted to UTC and a
time without one (the format of the original C# AutoCrane) is taken as UTC.

The pod label ``status.autocrane.io/health`` is the worst level among the pod's statuses, or
``unknown`` when the pod has none: nobody has reported, which is neither good nor bad (it is
not ``info``, so a selector ``health=info`` never matches an unwatched pod). A value that
cannot be parsed counts as ``error``: a watchdog whose status nobody can read is failing, and
the reason is in :func:`health`'s problem list.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
from collections.abc import Iterable, Mapping

from autocrane import errors, keys, untrusted

STATUS_PREFIX = keys.STATUS_PREFIX
HEALTH_LABEL = keys.HEALTH_LABEL
#: Health label value when a pod has no watchdog status at all.
UNKNOWN = "unknown"
#: Longest message kept in a status value; annotations are small and humans read them.
MAX_MESSAGE = 1024

# The name part of a qualified Kubernetes key: 63 characters, alphanumeric at both ends (fullmatch:
# "$" also matches before a trailing newline).
_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


class WatchdogError(errors.AutocraneError, ValueError):
    """A watchdog name, level or status value is malformed; the message names the key."""


class Level(enum.IntEnum):
    """Watchdog levels, ordered so that ``max()`` gives the worst."""

    INFO = 1
    WARNING = 2
    ERROR = 3

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str, key: str = "level") -> Level:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise WatchdogError(f"{key}: unknown level {text!r}; expected one of info, warning, error") from None


@dataclasses.dataclass(frozen=True, slots=True)
class Status:
    """One watchdog status."""

    level: Level
    """How bad it is."""
    time: dt.datetime
    """When it was observed (timezone-aware, UTC)."""
    message: str
    """Free text for humans; may contain ``/``."""


def check_name(name: str) -> str:
    """Return ``name`` if it can follow ``status.autocrane.io/``, else raise naming it."""
    if not _NAME.fullmatch(name):
        raise WatchdogError(
            f"watchdog name {name!r}: expected 1-63 characters [A-Za-z0-9-_.], alphanumeric at both ends"
        )
    if f"{STATUS_PREFIX}{name}" == HEALTH_LABEL:
        raise WatchdogError(f"watchdog name {name!r} is reserved for the health label")
    return name


def status_key(name: str) -> str:
    """The annotation key of watchdog ``name``."""
    return STATUS_PREFIX + check_name(name)


def format_time(when: dt.datetime) -> str:
    """RFC3339 in UTC with second precision: ``2026-01-02T03:04:05Z``."""
    if when.tzinfo is None:
        raise WatchdogError(f"time {when!r} has no timezone")
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str, key: str = "time") -> dt.datetime:
    """An RFC3339 time (UTC when it has no offset); a WatchdogError naming ``key`` otherwise."""
    try:
        return untrusted.parse_time(text, what=key)
    except untrusted.UntrustedValueError as error:
        raise WatchdogError(str(error)) from None


def format_status(status: Status) -> str:
    """The annotation value: ``<level>/<time>/<message>`` (message cut to MAX_MESSAGE characters)."""
    return f"{status.level}/{format_time(status.time)}/{status.message[:MAX_MESSAGE]}"


def parse_status(value: str, key: str = "status") -> Status:
    """Parse an annotation value; errors name ``key`` and the expected form."""
    parts = value.split("/", 2)
    if len(parts) != 3:
        raise WatchdogError(f"{key}: value {value[:80]!r} is not <level>/<RFC3339 UTC time>/<message>")
    level, when, message = parts
    return Status(Level.parse(level, key), parse_time(when, key), message)


def statuses(pod_annotations: Mapping[str, str]) -> tuple[dict[str, Status], dict[str, str]]:
    """Split a pod's annotations into parsed watchdog statuses and problems, both keyed by name."""
    found: dict[str, Status] = {}
    problems: dict[str, str] = {}
    for key, value in pod_annotations.items():
        if not key.startswith(STATUS_PREFIX) or key == HEALTH_LABEL:
            continue
        name = key[len(STATUS_PREFIX):]
        try:
            found[name] = parse_status(value, key)
        except WatchdogError as error:
            problems[name] = str(error)
    return found, problems


def worst(levels: Iterable[Level]) -> Level | None:
    """The worst of ``levels``, or None when there are none."""
    return max(levels, default=None)


def health(pod_annotations: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The health label value for a pod's annotations, and the unreadable statuses (which count as error)."""
    found, problems = statuses(pod_annotations)
    levels = [status.level for status in found.values()]
    if problems:
        levels.append(Level.ERROR)
    level = worst(levels)
    return (UNKNOWN if level is None else str(level)), problems


def records(annotations: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """The pod's watchdogs by name as plain records (``-o json|yaml``); an unreadable one has level ``unreadable``."""
    found, problems = statuses(annotations)
    shown = {name: {"level": str(s.level), "time": format_time(s.time), "message": s.message}
             for name, s in found.items()}
    return shown | {name: {"level": "unreadable", "message": problem} for name, problem in problems.items()}
