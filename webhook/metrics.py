"""The webhook's Prometheus metrics, all in one place (names follow autocrane.metrics' rule).

- ``autocrane_webhook_admissions_total{result}``: every ``POST /mutate`` answered with an
  AdmissionReview, by :data:`RESULTS`. Bodies refused at the HTTP level (415, 413, 400) are
  ``rejected``, so the sum is every request the API server (or anyone) sent.
- ``autocrane_webhook_skips_total{reason}``: allowed pods that were left untouched, by the
  admission's reason (not opted in, dry run, not a pod...).
- ``autocrane_webhook_admission_duration_seconds``: time from the request's arrival to the
  response, as the API server's timeout sees it.
- ``autocrane_webhook_admissions_in_flight_requests``: admissions being handled now.
- ``autocrane_webhook_cert_expiry_timestamp_seconds``: notAfter of the certificate now served.
- ``autocrane_webhook_cert_reloads_total{result}``: serving-certificate loads (``ok``/``error``).
- ``autocrane_webhook_ca_bundle_updates_total{result}``: caBundle patches in self-signed mode.
- ``autocrane_webhook_holds_total{result}``: ``POST /hold`` decisions (``held``/``passed``/``refused``).
"""

from __future__ import annotations

from autocrane import metrics

RESULTS = ("injected", "skipped", "denied", "error", "rejected")

ADMISSIONS = metrics.counter("webhook", "admissions", "AdmissionReviews answered, by result", ["result"])
SKIPS = metrics.counter("webhook", "skips", "Pods allowed without injection, by reason", ["reason"])
ADMISSION_DURATION = metrics.histogram("webhook", "admission_duration", "seconds",
                                       "Time to answer POST /mutate, from request to response")
IN_FLIGHT = metrics.gauge("webhook", "admissions_in_flight", "requests", "Admissions being handled now")
CERT_EXPIRY = metrics.gauge("webhook", "cert_expiry", "timestamp_seconds",
                            "notAfter of the serving certificate, as a Unix timestamp")
CERT_RELOADS = metrics.counter("webhook", "cert_reloads", "Serving-certificate loads, by result", ["result"])
CA_BUNDLE_UPDATES = metrics.counter("webhook", "ca_bundle_updates",
                                    "caBundle patches of the MutatingWebhookConfiguration, by result", ["result"])
HOLDS = metrics.counter("webhook", "holds", "Staged Deployment admissions at /hold, by result (held, passed, refused)",
                        ["result"])

# Pre-create the label sets so every series exists (at 0) from the first scrape.
for _result in RESULTS:
    ADMISSIONS.labels(_result)
for _result in ("ok", "error"):
    CERT_RELOADS.labels(_result)
    CA_BUNDLE_UPDATES.labels(_result)
for _result in ("held", "passed", "refused"):
    HOLDS.labels(_result)
