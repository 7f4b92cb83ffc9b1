"""The datadeployer's Prometheus metrics (``autocrane_datadeploy_*``), served on its status port at ``/metrics``.

- ``syncs_total{data_set, result}``: passes over a data set by outcome: ``swapped`` (a new version
  went live), ``current`` (already the requested version), ``failed`` (a :class:`SyncError`: the
  live tree is untouched).
- ``sync_duration_seconds{data_set}``: time of one sync that changed the tree (download, verify,
  extract, publish); a pass that finds the version current is not timed.
- ``extracted_bytes_total{data_set}``: bytes of the trees extracted.
- ``swaps_total{data_set}``: versions made live (the symlink swap), the app's reloads.
- ``failing_since_timestamp_seconds{data_set}``: start of the current run of failed syncs, 0 when
  the last one worked (the ``/watchdog`` turns error after ``--failure-threshold`` of it).

The pod's name and namespace come from the scrape (the Prometheus pod role's labels), so the
labels here stay per data set.
"""

from __future__ import annotations

import contextlib

from prometheus_client.metrics import MetricWrapperBase

from autocrane import metrics

AREA = "datadeploy"
RESULTS = ("swapped", "current", "failed")

SYNCS = metrics.counter(AREA, "syncs", "Syncs of a data set by result (swapped, current, failed).",
                        ["data_set", "result"])
SYNC_DURATION = metrics.histogram(AREA, "sync_duration", "seconds",
                                  "Time of one sync that changed the tree: download, verify, extract, publish.",
                                  ["data_set"], buckets=(0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800))
EXTRACTED = metrics.counter(AREA, "extracted_bytes", "Bytes of the data trees extracted.", ["data_set"])
SWAPS = metrics.counter(AREA, "swaps", "Versions made live at <root>/<data set> (the symlink swap).", ["data_set"])
FAILING_SINCE = metrics.gauge(AREA, "failing_since", "timestamp_seconds",
                              "Start of the current run of failed syncs of a data set; 0 when the last one worked.",
                              ["data_set"])


def declared(name: str) -> None:
    """Create a data set's series at 0, so a rate over them exists from its first scrape."""
    for result in RESULTS:
        SYNCS.labels(name, result)
    SWAPS.labels(name)
    EXTRACTED.labels(name)
    FAILING_SINCE.labels(name)


def forget(name: str) -> None:
    """Drop an undeclared data set's series."""
    for result in RESULTS:
        _remove(SYNCS, name, result)
    for family in (SWAPS, EXTRACTED, FAILING_SINCE, SYNC_DURATION):
        _remove(family, name)


def _remove(family: MetricWrapperBase, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never created (a histogram before its first sync)
        family.remove(*labels)
