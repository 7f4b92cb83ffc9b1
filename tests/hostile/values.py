"""Hypothesis strategies for what a hostile pod can write: annotation values and ``/status`` bodies.

Each strategy mixes arbitrary values with the ones that broke something once (issue 8), so a
property test meets the known cases in every run, not only when shrinking finds them again.
"""

from __future__ import annotations

import json

from hypothesis import strategies as st

from autocrane import keys

DEEP = "[" * 10_000 + "]" * 10_000
"""Nested 10,000 levels: the standard ``json`` module raises RecursionError on it."""
BRACKETS_5000 = "[" * 5000 + "]" * 5000
"""The 10 KB ``/status`` body that raised RecursionError in ``Prober.get_json``."""
LATE = "9999-12-31T23:59:59-23:59"
"""A time that exists only west of UTC: converting it to UTC overflows."""
EARLY = "0001-01-01T00:00:00+23:59"
"""...and one that exists only east of UTC."""

TIMES = st.one_of(
    st.sampled_from([LATE, EARLY, "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "2026-03-01T12:00:00Z",
                     "2026-03-01T12:00:00", "2999-01-01T00:00:00Z", "", "now", "2026-13-01T00:00:00Z",
                     "2026-03-01T12:00:00Z\n", "1e309"]),
    st.datetimes().map(lambda when: when.isoformat()),
    st.text(max_size=30),
)

NOTORIOUS = st.sampled_from([
    f"error/{LATE}/m", f"error/{EARLY}/m", f"info/{LATE}/m", "error/9999-12-31T23:59:59Z/from the future",
    "error/0001-01-01T00:00:00Z/since forever", "ERROR//", "error", "//", "bogus/2026-03-01T12:00:00Z/x",
    DEEP, '{"version":' * 5000, '{"version": "v1\\n"}', '{"version": "' + "v" * 100_000 + '"}',
    '{"version": "a", "sha256": "' + "a" * 64 + '\\n"}', "x" * 100_000, "models\n", "models/../x", "\x00", "\n",
    "1e999999999", "9" * 5000, "-1", "POD_IP:99999/w", "POD_IP:0/w", "POD_IP:80/w\n", "user@POD_IP:80/w",
    "169.254.169.254:80/latest", "POD_IP:80/" + "a" * 100_000, "true", "TRUE\n", ",,,", "models, models\n,",
])

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)

STATUS_VALUES = st.builds(lambda level, when, message: f"{level}/{when}/{message}",
                          st.sampled_from(["error", "ERROR", "warning", "info", "Info ", "bogus", ""]), TIMES,
                          st.text(max_size=40))
REQUEST_VALUES = st.one_of(
    st.builds(lambda version, sha: json.dumps({"version": version, "sha256": sha}),
              st.one_of(st.sampled_from(["a", "b", "v1\n", "../x", ""]), JSON),
              st.one_of(st.none(), st.sampled_from(["1" * 64, "1" * 64 + "\n", "x"]), JSON)),
    JSON.map(json.dumps))

VALUES = st.one_of(st.text(max_size=60), NOTORIOUS, STATUS_VALUES, REQUEST_VALUES, TIMES)
"""Anything an annotation value can be."""

NAMES = st.one_of(st.sampled_from(["app", "model", "x", "health", "a.b", "-bad", "_"]),
                  st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=70))
_FAMILIES = (keys.STATUS_PREFIX, keys.PROBE_PREFIX, keys.DATA_PREFIX,
             keys.REQUEST_DATA_PREFIX, keys.STATUS_DATA_PREFIX)
_SINGLE_KEYS = (keys.STORE_DEPS, keys.STORE_LOCATION, keys.EVICTION_OPT_OUT,
                keys.MIN_READY_SECONDS)
KEYS = st.one_of(st.builds(str.__add__, st.sampled_from(_FAMILIES), NAMES), st.sampled_from(_SINGLE_KEYS))


def annotation_maps(max_size: int = 8) -> st.SearchStrategy[dict[str, str]]:
    """Annotations of one hostile pod: AutoCrane keys with values of every kind."""
    return st.dictionaries(KEYS, st.one_of(VALUES, st.sampled_from(["models", "POD_IP:8080/watchdog"])),
                           max_size=max_size)


SET_ENTRIES = st.fixed_dictionaries({}, optional={
    "version": st.one_of(st.sampled_from(["a", "b", "v" * 100_000, "b\n"]), JSON),
    "deployedAt": st.one_of(TIMES, JSON),
    "error": st.one_of(st.none(), st.text(max_size=20), st.just("e" * 100_000), JSON),
})
STATUS_BODIES = st.one_of(
    st.sampled_from([BRACKETS_5000.encode(), DEEP.encode(), b"", b"null", b"{", b"\xff\xfe",
                     json.dumps({"sets": {"model": {"version": "b", "deployedAt": LATE}}}).encode(),
                     json.dumps({"sets": {"model": {"version": "b", "deployedAt": "9999-01-01T00:00:00Z"}}}).encode(),
                     json.dumps({"sets": {"model": {"version": "v" * 100_000}}}).encode()]),
    st.binary(max_size=64),
    st.builds(lambda sets: json.dumps({"sets": sets}).encode(),
              st.dictionaries(st.sampled_from(["model", "x", "other"]) | st.text(max_size=8),
                              st.one_of(SET_ENTRIES, JSON), max_size=3)),
    JSON.map(lambda value: json.dumps(value).encode()),
)
"""What a datadeployer's ``GET /status`` can answer."""
