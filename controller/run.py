"""``autocrane controller``: flags, wiring and shutdown. Decisions live elsewhere (docs/controller.md).

Tasks in one asyncio loop: one pod informer per namespace (or one for all), the Lease elector,
the pass loop (:mod:`controller.loop`) and a plain-HTTP site with ``/healthz`` (the loop is
alive), ``/readyz`` (informers synced) and ``/metrics``. On SIGTERM/SIGINT the loop stops, the
Lease is released so a standby takes over at once, and the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from autocrane import clock, inpod, kube, logs, metrics, serving
from controller import apply, datarollouts, eviction, informer, leader, loop, probing, repository, rollout
from controller import metrics as controller_metrics

log = logging.getLogger("controller")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autocrane controller", description=(
        "Probe watchdog annotations, record statuses and the health label, evict pods stuck in error "
        "through the Eviction API (PDBs respected, circuit breaker when most of a workload fails), and roll "
        "data versions out in watchdog-gated stages with rollback (with --data-repository)."))
    p.add_argument("--kubeconfig", type=Path, default=None,
                   help="kubeconfig file (default: in-cluster service account, else $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--namespace", "-n", action="append", default=[],
                   help="watch only this namespace (repeatable; default all namespaces)")
    p.add_argument("--selector", "-l", default=None, help="watch only pods matching this label selector")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between passes (default 10)")
    p.add_argument("--probe-timeout", type=float, default=5.0, help="seconds per watchdog probe (default 5)")
    p.add_argument("--probe-concurrency", type=int, default=64, help="probes in flight at once (default 64)")
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
    d.add_argument("--rollout-stages", default=",".join(rollout.DEFAULT_STAGES),
                   help="default stages: pod counts or percentages, the last 100%% (default 1,25%%,100%%)")
    d.add_argument("--bake-seconds", type=float, default=600.0,
                   help="default seconds a stage must stay free of error watchdogs once acknowledged (default 600)")
    d.add_argument("--progress-deadline", type=float, default=600.0,
                   help="default seconds a stage may wait for acknowledgements before rolling back (default 600)")
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


def policy(args: argparse.Namespace) -> eviction.Policy:
    return eviction.Policy(
        observations=args.error_observations, min_error_seconds=args.error_seconds, min_pod_age=args.min_pod_age,
        max_per_pass=args.max_evictions_per_pass, max_per_namespace=args.max_evictions_per_namespace,
        max_per_owner=args.max_evictions_per_owner, max_failing_share=args.max_failing_share)


def rollout_policy(args: argparse.Namespace) -> rollout.Policy:
    stages = rollout.check_stages([s.strip() for s in args.rollout_stages.split(",")])
    return rollout.Policy(stages=stages, bake_seconds=args.bake_seconds, progress_deadline=args.progress_deadline)


def health_app(controller: loop.Controller, tasks: list[asyncio.Task[None]]) -> Starlette:
    async def healthz(_: Request) -> PlainTextResponse:
        dead = [t.get_name() for t in tasks if t.done()]
        return PlainTextResponse(f"stopped: {', '.join(dead)}\n" if dead else "ok\n", 500 if dead else 200)

    async def readyz(_: Request) -> PlainTextResponse:
        return PlainTextResponse("ok\n" if controller.synced else "informers not synced\n",
                                 200 if controller.synced else 503)

    return Starlette(routes=[Route("/healthz", healthz), Route("/readyz", readyz), metrics.route()])


async def run(args: argparse.Namespace) -> int:
    identity = args.identity or f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"
    time = clock.SYSTEM  # the one clock of the pass, the rate limiter, the writer and the loops around them
    api = await kube.Kube.connect(args.kubeconfig, limiter=kube.RateLimiter(args.qps, args.burst, time=time),
                                 observer=controller_metrics.ApiObserver())
    informers = [informer.PodInformer(api, namespace=ns, label_selector=args.selector, time=time)
                 for ns in (args.namespace or [None])]
    elector = leader.LeaderElector(api, namespace=args.lease_namespace, name=args.lease_name, identity=identity,
                                   time=time) if args.leader_elect else None
    applier = apply.Applier(api, identity=identity, dry_run=args.dry_run, grace_period=args.eviction_grace_period,
                            time=time)
    stop = asyncio.Event()
    loop_ = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop_.add_signal_handler(signum, stop.set)
    repo = repository.Repository(args.data_repository, token_file=args.data_repository_token_file) \
        if args.data_repository else None
    async with contextlib.AsyncExitStack() as stack:
        prober = await stack.enter_async_context(
            probing.Prober(concurrency=args.probe_concurrency, timeout=args.probe_timeout))
        rollouts = None
        if repo is not None:
            await stack.enter_async_context(repo)
            rollouts = datarollouts.DataRollouts(api, repo, prober, applier, namespaces=args.namespace,
                                                 policy=rollout_policy(args), datadeployer_port=args.datadeployer_port,
                                                 time=time)
        controller = loop.Controller(informers, prober, applier, policy(args), elector=elector, interval=args.interval,
                                     rollouts=rollouts, time=time)
        tasks = [asyncio.create_task(i.run(), name=f"informer-{i.namespace or 'all'}") for i in informers]
        tasks.append(asyncio.create_task(controller.run(), name="passes"))
        if elector is not None:
            tasks.append(asyncio.create_task(elector.run(), name="leader-election"))
        site = serving.Serving([serving.Site("health", health_app(controller, tasks), args.health_host,
                                             args.health_port)], graceful_timeout=2)
        await site.start()
        log.info("controller started", extra={"identity": identity, "dry_run": args.dry_run,
                                              "namespaces": args.namespace or "all", "selector": args.selector,
                                              "data_repository": args.data_repository})
        crashed = asyncio.ensure_future(asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED))
        await asyncio.wait([crashed, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        code = 0 if stop.is_set() else 1
        if code:
            log.error("a controller task stopped unexpectedly",
                      extra={"tasks": [t.get_name() for t in tasks if t.done()]})
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        crashed.cancel()
        if elector is not None:
            await elector.release()
        site.stop()
        await site.wait()
    await api.close()
    log.info("controller stopped")
    return code


def main(argv: list[str]) -> int:
    p = parser()
    args = p.parse_args(argv)
    try:
        rollout_policy(args)
    except ValueError as exc:
        p.error(f"--rollout-stages: {exc}")
    logs.setup_from_arguments(args)
    return asyncio.run(run(args))
