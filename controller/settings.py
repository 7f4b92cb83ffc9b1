"""The controller's settings: typed, frozen, read once from the command line (``autocrane controller --help``).

Each field says its unit and why its default is what it is; the flags' help repeats the short
form. :func:`parse` turns arguments into :class:`Settings` or exits with the usage and what was
wrong (``argparse``'s way), so nothing after it meets an unchecked value.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from autocrane import inpod, logs
from controller.datarollouts import decision as datarollout
from controller.evictions import decision as eviction


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Everything ``autocrane controller`` is told."""

    kubeconfig: Path | None
    """kubeconfig file; None: the in-cluster service account, else $KUBECONFIG or ~/.kube/config."""
    namespaces: tuple[str, ...]
    """Namespaces watched (one informer each); empty: all namespaces, with one informer."""
    selector: str | None
    """Label selector of the pods watched (applied by the API server)."""
    interval: float
    """Seconds between passes (jittered by 10 %, so replicas and restarts do not beat in step)."""
    probe_timeout: float
    """Seconds one watchdog probe may take in all."""
    probe_concurrency: int
    """Probes (and datadeployer /status reads) in flight at once."""
    unknown_error_seconds: float | None
    """A watchdog of a running pod with no answer for this long is recorded as error (the C# original's
    timeout rule); None (the default): no answer stays ``unknown``, never evicted
    (:mod:`controller.watchdogs.unanswered`)."""
    eviction: eviction.Policy
    """When a failing pod is evicted, and the limits on how many (its fields say why)."""
    eviction_grace_period: int | None
    """``gracePeriodSeconds`` of evictions; None: the pod's own."""
    dry_run: bool
    """Send evictions with ``dryRun=All``: budgets are checked and Events written, nothing is evicted."""
    data_repository: str | None
    """The data repository's base URL; None: no data rollouts."""
    data_repository_token_file: Path | None
    """File holding the repository's bearer token (read at each request: a rotated token is used)."""
    datadeployer_port: int
    """Port of the datadeployer's ``GET /status`` on each pod: the injector's default."""
    rollout: datarollout.Policy
    """Default stages, bake time and progress deadline of data rollouts (a DataRollout may override each)."""
    app_rollouts: bool
    """Roll Deployments labelled ``rollout.autocrane.io/group`` out stage by stage (docs/app-rollouts.md)."""
    qps: float
    """Client-side limit on API writes per second: 10,000 patches at once would be felt by every API client."""
    burst: int
    """Writes allowed at once before ``qps`` paces them."""
    leader_elect: bool
    """Act only while holding the Lease; False: one replica only."""
    lease_namespace: str
    """Namespace of the Lease: the controller's own (``$POD_NAMESPACE``), where its RBAC allows Leases."""
    lease_name: str
    """Name of the Lease every replica competes for."""
    identity: str
    """The Lease holder's identity: the pod name (or hostname) and a random suffix, unique per process."""
    health_host: str
    """Address of the health site (all interfaces: the kubelet and Prometheus reach it on the pod IP)."""
    health_port: int
    """Port of ``/healthz``, ``/readyz`` and ``/metrics`` (0: any free port)."""
    log_format: str
    """``json`` lines (default) or ``text`` for a terminal (``autocrane.logs``)."""
    log_level: str
    """Lowest level logged."""


def parser() -> argparse.ArgumentParser:
    """The command line of ``autocrane controller``."""
    p = argparse.ArgumentParser(prog="autocrane controller", description=(
        "Probe watchdog annotations, record statuses and the health label, evict pods stuck in error "
        "through the Eviction API (PDBs respected, circuit breaker when most of a workload fails), roll "
        "data versions out in watchdog-gated stages with rollback (with --data-repository), and roll staged "
        "Deployments (rollout.autocrane.io/group) out stage by stage with rollback."))
    p.add_argument("--kubeconfig", type=Path, default=None,
                   help="kubeconfig file (default: in-cluster service account, else $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--namespace", "-n", action="append", default=[],
                   help="watch only this namespace (repeatable; default all namespaces)")
    p.add_argument("--selector", "-l", default=None, help="watch only pods matching this label selector")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between passes (default 10)")
    p.add_argument("--probe-timeout", type=float, default=5.0, help="seconds per watchdog probe (default 5)")
    p.add_argument("--probe-concurrency", type=int, default=64, help="probes in flight at once (default 64)")
    p.add_argument("--unknown-error-seconds", type=float, default=None, metavar="SECONDS",
                   help="record a watchdog that has had no answer (timeout, refused) for this long as error, "
                   "so a hung pod is evicted (default off: no answer stays unknown)")
    g = p.add_argument_group("evictions")
    g.add_argument("--error-observations", type=int, default=3,
                   help="consecutive passes a pod must be seen in error before eviction (default 3)")
    g.add_argument("--error-seconds", type=float, default=60.0,
                   help="...and seconds in error, from its status time (default 60)")
    g.add_argument("--min-pod-age", type=float, default=300.0, help="never evict younger pods (seconds, default 300)")
    g.add_argument("--max-evictions-per-pass", type=int, default=5)
    g.add_argument("--max-evictions-per-namespace", type=int, default=2, help="per pass (default 2)")
    g.add_argument("--max-evictions-per-owner", type=int, default=1, help="per pass (default 1)")
    g.add_argument("--max-failing-share", type=float, default=0.5,
                   help="circuit breaker: evict none of an owner's pods when more than this share fail (default 0.5)")
    g.add_argument("--eviction-grace-period", type=int, default=None,
                   help="gracePeriodSeconds for evictions (default: the pod's own)")
    g.add_argument("--dry-run", action="store_true",
                   help="send evictions with dryRun=All: PDBs are checked and Events written, nothing is evicted")
    d = p.add_argument_group("data rollouts (off without --data-repository)")
    d.add_argument("--data-repository", metavar="URL", default=None,
                   help="the data repository's base URL (e.g. http://autocrane-datarepository); enables data rollouts")
    d.add_argument("--data-repository-token-file", type=Path, default=None,
                   help="file holding the repository's bearer token")
    d.add_argument("--datadeployer-port", type=int, default=inpod.DATADEPLOYER_STATUS_PORT,
                   help="port of the datadeployer's GET /status on each pod "
                   f"(default {inpod.DATADEPLOYER_STATUS_PORT}, the injector's)")
    d.add_argument("--rollout-stages", default=",".join(datarollout.DEFAULT_STAGES),
                   help="default stages: pod counts or percentages, the last 100%% (default 1,25%%,100%%)")
    d.add_argument("--bake-seconds", type=float, default=600.0,
                   help="default seconds a stage must stay free of error watchdogs once acknowledged (default 600)")
    d.add_argument("--progress-deadline", type=float, default=600.0,
                   help="default seconds a stage may wait for acknowledgements before rolling back (default 600)")
    p.add_argument("--no-app-rollouts", dest="app_rollouts", action="store_false",
                   help="do not stage Deployments labelled rollout.autocrane.io/group (default: staged, "
                   "docs/app-rollouts.md)")
    a = p.add_argument_group("API server")
    a.add_argument("--qps", type=float, default=20.0, help="client-side limit on API writes per second (default 20)")
    a.add_argument("--burst", type=int, default=40, help="writes allowed in a burst (default 40)")
    a.add_argument("--no-leader-elect", dest="leader_elect", action="store_false",
                   help="act without a Lease (one replica only)")
    a.add_argument("--lease-namespace", default=os.environ.get("POD_NAMESPACE", "default"),
                   help="namespace of the Lease (default $POD_NAMESPACE or default)")
    a.add_argument("--lease-name", default="autocrane-controller")
    a.add_argument("--identity", default=None, help="holder identity (default hostname_random)")
    p.add_argument("--health-host", default="0.0.0.0")
    p.add_argument("--health-port", type=int, default=8080, help="/healthz /readyz /metrics port (0: any free)")
    logs.add_arguments(p)
    return p


def parse(argv: list[str], *, default_identity: str) -> Settings:
    """The settings ``argv`` gives; exits with the usage (status 2) when a value is not valid."""
    p = parser()
    args = p.parse_args(argv)
    try:
        stages = datarollout.check_stages([s.strip() for s in args.rollout_stages.split(",")])
    except ValueError as exc:
        p.error(f"--rollout-stages: {exc}")
    if args.unknown_error_seconds is not None and not args.unknown_error_seconds > 0:
        p.error(f"--unknown-error-seconds: must be more than 0 seconds, not {args.unknown_error_seconds:g}")
    return Settings(
        kubeconfig=args.kubeconfig, namespaces=tuple(args.namespace), selector=args.selector, interval=args.interval,
        probe_timeout=args.probe_timeout, probe_concurrency=args.probe_concurrency,
        unknown_error_seconds=args.unknown_error_seconds,
        eviction=eviction.Policy(
            observations=args.error_observations, min_error_seconds=args.error_seconds, min_pod_age=args.min_pod_age,
            max_per_pass=args.max_evictions_per_pass, max_per_namespace=args.max_evictions_per_namespace,
            max_per_owner=args.max_evictions_per_owner, max_failing_share=args.max_failing_share),
        eviction_grace_period=args.eviction_grace_period, dry_run=args.dry_run,
        data_repository=args.data_repository, data_repository_token_file=args.data_repository_token_file,
        datadeployer_port=args.datadeployer_port,
        rollout=datarollout.Policy(stages=stages, bake_seconds=args.bake_seconds,
                                   progress_deadline=args.progress_deadline),
        app_rollouts=args.app_rollouts, qps=args.qps, burst=args.burst, leader_elect=args.leader_elect,
        lease_namespace=args.lease_namespace,
        lease_name=args.lease_name, identity=args.identity or default_identity, health_host=args.health_host,
        health_port=args.health_port, log_format=args.log_format, log_level=args.log_level)
