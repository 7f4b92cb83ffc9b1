"""The client's pure parts: answers to typed errors, the write rate limiter on a manual clock, metric labels.

What the real API server answers is checked on the control plane (tests/cluster/test_kube.py).
"""

from __future__ import annotations

import asyncio

import pytest

from autocrane import clock, errors, kube

# The Eviction API's Status for a pod two PodDisruptionBudgets select (kubernetes 1.34,
# pkg/registry/core/pod/storage/eviction.go): code 500, no reason.
TWO_BUDGETS = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500,
               "message": "This pod has more than one PodDisruptionBudget, which the eviction subresource does not "
                          "support."}


@pytest.mark.parametrize(("status", "body", "kind"), [
    (404, {"reason": "NotFound", "message": "pods \"x\" not found"}, errors.NotFound),
    (409, {"reason": "AlreadyExists", "message": "leases \"l\" already exists"}, errors.AlreadyExists),
    (409, {"reason": "Conflict", "message": "the object has been modified"}, errors.Conflict),
    (410, {"reason": "Expired", "message": "too old resource version"}, errors.Gone),
    (422, {"reason": "Invalid", "message": "the server rejected our request"}, errors.Invalid),
    (401, {"reason": "Unauthorized"}, errors.Unauthorized),
    (403, {"reason": "Forbidden"}, errors.Forbidden),
    (429, {"reason": "TooManyRequests", "message": "Cannot evict pod as it would violate the pod's disruption budget."},
     errors.TooManyRequests),
    (500, TWO_BUDGETS, errors.MultiplePodDisruptionBudgets),
    (500, {"reason": "InternalError", "message": "etcdserver: request timed out"}, errors.ServerError),
    (503, {}, errors.ServerError),
    (400, {"reason": "BadRequest"}, errors.KubeError),
])
def test_an_answer_becomes_the_error_of_its_kind(status: int, body: dict[str, object],
                                                 kind: type[errors.KubeError]) -> None:
    error = kube.error("POST /api/v1/namespaces/ns/pods/p/eviction", status, body)
    assert type(error) is kind
    assert error.status == status and error.body == body
    assert error.message == (body.get("message") or str(error))


def test_two_budgets_are_a_server_error_too_and_the_message_is_the_api_servers() -> None:
    error = kube.error("POST eviction", 500, TWO_BUDGETS)
    assert isinstance(error, errors.ServerError)
    assert error.message.startswith("This pod has more than one PodDisruptionBudget")


def test_retry_after_comes_from_the_header_else_from_the_status_details() -> None:
    assert kube.error("x", 429, {}, retry_after=7.0).retry_after == 7.0
    assert kube.error("x", 429, {"details": {"retryAfterSeconds": 3}}).retry_after == 3.0
    assert kube.error("x", 429, {"details": {"retryAfterSeconds": 0}}).retry_after is None
    assert kube.error("x", 429, {"details": "garbage"}).retry_after is None


def test_a_watch_error_event_is_typed_by_its_code() -> None:
    assert isinstance(kube.status_error("watch", {"kind": "Status", "code": 410, "message": "too old"}), errors.Gone)
    assert type(kube.status_error("watch", {"code": "410"})) is errors.KubeError


def test_the_write_limiter_lets_a_burst_through_then_paces_to_the_rate() -> None:
    manual = clock.ManualClock()
    started = manual.monotonic()

    async def run() -> list[float]:
        bucket = kube.RateLimiter(rate=50, burst=5, time=manual)
        return [await bucket.take() for _ in range(10)]

    waits = asyncio.run(run())
    assert waits[:5] == [0.0] * 5  # the burst
    assert waits[5:] == pytest.approx([0.02] * 5)  # then one token per 1/50 s
    assert manual.monotonic() - started == pytest.approx(0.1)


@pytest.mark.parametrize(("path", "resource"), [
    ("/api/v1/namespaces/x/pods/y/eviction", "pods/eviction"),
    ("/api/v1/namespaces/x/pods/y", "pods"),
    ("/api/v1/pods?watch=true", "pods"),
    ("/api/v1/namespaces/x/events", "events"),
    ("/apis/coordination.k8s.io/v1/namespaces/x/leases/l", "leases"),
])
def test_api_metrics_name_the_resource_not_the_object(path: str, resource: str) -> None:
    assert kube.resource_of(path) == resource
