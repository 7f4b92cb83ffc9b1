"""Leader election on a ``coordination.k8s.io/v1`` Lease, with client-go's semantics.

- Take the Lease when it does not exist, names nobody (released), or its record has not changed
  for ``lease_duration`` seconds *as measured on our own clock* from when we last saw it change:
  the holder's clock is never compared with ours.
- Every write is an update carrying the Lease's ``resourceVersion``; of two replicas racing for
  it, one gets 409 and stays a follower.
- The leader renews every ``retry_period``; if it cannot renew for ``renew_deadline`` seconds it
  stops leading at once (before the Lease can expire and someone else takes over).
- :meth:`release` (on clean shutdown) empties ``holderIdentity`` so a standby takes over on its
  next try instead of waiting out the lease.

Defaults are component-base's 15 s / 10 s / 2 s (lease > renew deadline > 1.2 x retry period).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from typing import Any

from autocrane import bodies, clock, errors, kube
from controller import metrics

log = logging.getLogger(__name__)


def _micro_time(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclasses.dataclass(frozen=True, slots=True)
class Timing:
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > 1.2 * self.retry_period:
            raise ValueError("leader election needs lease duration > renew deadline > 1.2 x retry period")


class LeaderElector:
    def __init__(self, api: kube.Api, *, namespace: str, name: str, identity: str,
                 timing: Timing = Timing(), time: clock.Clock = clock.SYSTEM) -> None:
        self.api = api
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        self.collection = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self.namespace, self.name, self.identity = namespace, name, identity
        self.timing = timing
        self.clock = time
        """Monotonic time measures the lease (never the holder's clock); wall time stamps renewTime."""
        self.leading = asyncio.Event()
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0
        self._lease: dict[str, Any] | None = None

    @property
    def is_leader(self) -> bool:
        return self.leading.is_set()

    def _set_leading(self, leading: bool) -> None:
        if leading != self.is_leader:
            log.info("became the leader" if leading else "stopped leading",
                     extra={"lease": f"{self.namespace}/{self.name}", "identity": self.identity})
        (self.leading.set if leading else self.leading.clear)()
        metrics.LEADER.set(1 if leading else 0)

    def _spec(self, old: bodies.LeaseSpec) -> bodies.LeaseSpec:
        now = _micro_time(self.clock.time())
        transitions = int(old.get("leaseTransitions") or 0)
        spec: bodies.LeaseSpec = {
            "holderIdentity": self.identity, "leaseDurationSeconds": int(self.timing.lease_duration),
            "renewTime": now, "acquireTime": old.get("acquireTime") or now, "leaseTransitions": transitions}
        if old.get("holderIdentity") != self.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = transitions + (1 if old.get("holderIdentity") else 0)
        return spec

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when we hold the Lease afterwards."""
        try:
            lease = await self.api.request("GET", self.path)
        except errors.NotFound:
            body: bodies.Lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                  "metadata": {"name": self.name, "namespace": self.namespace}, "spec": self._spec({})}
            self._lease = await self.api.request("POST", self.collection, body=body)
            return True
        spec: bodies.LeaseSpec = lease.get("spec") or {}  # the API server's Lease
        record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseTransitions"),
                  spec.get("leaseDurationSeconds"))
        now = self.clock.monotonic()
        if record != self._observed:
            self._observed, self._observed_at = record, now
        holder = spec.get("holderIdentity")
        duration = float(spec.get("leaseDurationSeconds") or self.timing.lease_duration)
        if holder and holder != self.identity and now < self._observed_at + duration:
            return False
        lease["spec"] = self._spec(spec)
        self._lease = await self.api.request("PUT", self.path, body=lease)
        return True

    async def run(self) -> None:
        """Acquire, then renew, until cancelled; leadership is reflected in :attr:`leading`."""
        while True:
            try:
                held = await asyncio.wait_for(self.try_acquire_or_renew(), self.timing.renew_deadline)
            except (errors.KubeError, TimeoutError) as exc:
                held = False
                if not isinstance(exc, errors.Conflict | errors.AlreadyExists):  # another replica won the race
                    log.warning("lease not acquired or renewed", extra={"error": str(exc) or "timeout"})
            now = self.clock.monotonic()
            if held:
                self._renewed_at = now
                self._set_leading(True)
            elif self.is_leader and now - self._renewed_at >= self.timing.renew_deadline:
                self._set_leading(False)
            elif self.is_leader and self._observed and self._observed[0] not in (self.identity, None):
                self._set_leading(False)  # someone else holds it now
            await self.clock.sleep(self.timing.retry_period)

    async def release(self) -> None:
        """Give the Lease up (if we hold it) so a standby can take over at once."""
        if not self.is_leader or self._lease is None:
            return
        self._set_leading(False)
        lease = self._lease
        lease["spec"] = {**(lease.get("spec") or {}), "holderIdentity": None, "leaseDurationSeconds": 1,
                         "renewTime": _micro_time(self.clock.time())}
        try:
            await self.api.request("PUT", self.path, body=lease, timeout=5)
            log.info("lease released", extra={"lease": f"{self.namespace}/{self.name}"})
        except errors.KubeError as exc:
            log.warning("lease not released; the standby takes over when it expires", extra={"error": str(exc)})
