"""Values AutoCrane does not control, decoded in one place each: bounded JSON, RFC3339 times, echoes.

Whatever a pod's annotations, the downward-API file, a peer's HTTP answer or a client's request
carries may be hostile: anyone allowed to annotate one pod can write it. Every such value is
decoded here, so the rules hold everywhere:

- **JSON** is decoded by :func:`json_value` with a byte limit and a depth limit. The standard
  ``json`` module recurses per level and raises ``RecursionError`` (not a ``ValueError``) at
  about a thousand; orjson stops at 1024 levels, and our own code that walks a value (patch
  diffs, copies) recurses too. :data:`MAX_DEPTH` levels are far more than any value AutoCrane
  reads (the deepest, a pod in an AdmissionReview, is about 12).
- **Times** are decoded by :func:`parse_time`: ``datetime.fromisoformat`` accepts years 1 to
  9999 with any offset, and converting ``9999-12-31T23:59:59-23:59`` to UTC raises
  ``OverflowError``, which once escaped a controller pass. Here it is a :class:`UntrustedValueError`.
  The way back, :func:`rfc3339`, never raises either, whatever seconds a sum of outside values
  made.
- **Echoes**: a value quoted back in a message (an admission denial, a log line, a 400 answer)
  goes through :func:`shown` (or :func:`quoted`, the same in JSON quotes), which keeps at most
  :data:`SHOWN` characters. It never builds the whole ``repr`` of a list or a mapping: a YAML
  alias bomb is a few hundred bytes whose ``repr`` is gigabytes.

Every failure is an :class:`UntrustedValueError` (a ``ValueError``), whose message names what
was decoded and the expected form, so callers catch one exception type and report it once.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import reprlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson

from autocrane import errors

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted in any JSON value AutoCrane decodes."""
SHOWN = 80
"""Characters of a value quoted back in a message."""


UntrustedValueError = errors.UntrustedValueError
"""An outside value cannot be decoded (defined in :mod:`autocrane.errors`, with the other errors)."""


def _bounded_repr(limit: int) -> reprlib.Repr:
    # A few levels and items of a container, each string and number cut: the work is bounded
    # whatever the value (nested 10,000 deep, or an alias bomb of shared lists).
    bounded = reprlib.Repr()
    bounded.maxlevel = 3
    bounded.maxdict = bounded.maxlist = bounded.maxtuple = bounded.maxset = bounded.maxfrozenset = 6
    bounded.maxstring = bounded.maxother = bounded.maxlong = limit
    return bounded


_REPR = _bounded_repr(SHOWN)


def shown(value: object, limit: int = SHOWN) -> str:
    """``repr`` of ``value``, cut to ``limit`` characters (a string says its length when cut).

    Lists, mappings and other values are shown a few levels and items deep (``reprlib``), so
    showing one costs little however large or deeply nested it is.
    """
    if not isinstance(value, str):
        text = (_REPR if limit == SHOWN else _bounded_repr(limit)).repr(value)
        return text if len(text) <= limit else f"{text[:limit]}..."
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def quoted(value: str, limit: int = SHOWN) -> str:
    """``value`` in JSON quotes (as a person wrote it in YAML or JSON), cut like :func:`shown`."""
    if len(value) <= limit:
        return json.dumps(value, ensure_ascii=False)
    return f"{json.dumps(value[:limit], ensure_ascii=False)}... ({len(value)} characters)"


def depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of a decoded JSON value (a scalar is 0), counted without recursion.

    Stops counting once ``limit`` is exceeded and returns ``limit + 1``. Walks one level at a
    time, keeping only the containers of the next: about 30 us for a pod in an AdmissionReview.
    """
    level = [value] if isinstance(value, _CONTAINERS) else []
    deepest = 0
    while level:
        deepest += 1
        if deepest > limit:
            return limit + 1
        below: list[Any] = []
        for item in level:
            below += [child for child in (item.values() if isinstance(item, dict) else item)
                      if isinstance(child, _CONTAINERS)]
        level = below
    return deepest


_CONTAINERS = (dict, list, tuple)


def json_value(data: str | bytes, *, what: str, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """Decode ``data`` as JSON within ``max_bytes`` and ``max_depth``; raise UntrustedValueError naming ``what``."""
    size = len(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    if size > max_bytes:
        raise UntrustedValueError(f"{what}: {size} bytes of JSON, more than the {max_bytes} accepted")
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise UntrustedValueError(f"{what}: not JSON ({error})") from None
    if depth(value, max_depth) > max_depth:
        raise UntrustedValueError(f"{what}: JSON nested deeper than {max_depth} levels")
    return value


def mapping(value: object) -> Mapping[str, Any]:
    """``value`` when it is a JSON object (a mapping), else an empty one: for reading nested fields of
    an outside object without a check at every level."""
    return value if isinstance(value, Mapping) else _EMPTY


_EMPTY: Mapping[str, Any] = MappingProxyType({})


def parse_time(text: object, *, what: str) -> dt.datetime:
    """An RFC3339 time as an aware UTC datetime; a time without offset is taken as UTC.

    Raises UntrustedValueError for anything else, including times that exist only in another
    time zone (year 1 with a positive offset, year 9999 with a negative one).
    """
    if not isinstance(text, str):
        raise UntrustedValueError(f"{what}: {shown(text)} is not an RFC3339 time (e.g. 2026-01-02T03:04:05Z)")
    try:
        when = dt.datetime.fromisoformat(text.strip())
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return when.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        raise UntrustedValueError(
            f"{what}: {shown(text)} is not an RFC3339 time between years 1 and 9999 in UTC "
            "(e.g. 2026-01-02T03:04:05Z)") from None


def timestamp(text: object) -> float | None:
    """:func:`parse_time` as POSIX seconds, or None when ``text`` is not a usable time."""
    try:
        return parse_time(text, what="time").timestamp()
    except UntrustedValueError:
        return None


_FIRST = dt.datetime(1, 1, 1, tzinfo=dt.UTC)
_LAST = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)


def rfc3339(seconds: float) -> str:
    """POSIX seconds as an API timestamp: UTC, second precision.

    Never raises: seconds before year 1 or after 9999 (say a deployment time plus a bake time of
    1e300 from a ``DataRollout`` spec) are shown as the first or last second those years hold,
    and NaN as the epoch.
    """
    if math.isnan(seconds):
        seconds = 0.0
    try:
        when = _FIRST + dt.timedelta(seconds=math.floor(seconds) - _FIRST.timestamp())
    except OverflowError:
        when = _FIRST if seconds < 0 else _LAST
    when = min(max(when, _FIRST), _LAST)
    return f"{when.year:04d}-{when:%m-%dT%H:%M:%SZ}"
