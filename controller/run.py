"""``autocrane controller``: wiring only, settings -> objects -> tasks (docs/controller.md).

Tasks in one asyncio loop: one pod informer per namespace (or one for all), the Lease elector,
the pass loop (:mod:`controller.passes`) and a plain-HTTP site with ``/healthz`` (the loop is
alive), ``/readyz`` (informers synced) and ``/metrics``. One clock is handed to the rate limiter,
the writer, the pass and the loops around them. On SIGTERM/SIGINT the loop stops, the Lease is
released so a standby takes over at once, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from autocrane import clock, errors, kube, logs, metrics, serving
from controller import metrics as controller_metrics
from controller import passes, settings
from controller.apiserver import informer, leader, writer
from controller.approllouts import loop as approllouts
from controller.datarollouts import loop as datarollouts
from controller.datarollouts import repository
from controller.watchdogs import probing

log = logging.getLogger("controller")


def health_app(controller: passes.Controller, tasks: list[asyncio.Task[None]]) -> Starlette:
    async def healthz(_: Request) -> PlainTextResponse:
        dead = [t.get_name() for t in tasks if t.done()]
        return PlainTextResponse(f"stopped: {', '.join(dead)}\n" if dead else "ok\n", 500 if dead else 200)

    async def readyz(_: Request) -> PlainTextResponse:
        return PlainTextResponse("ok\n" if controller.synced else "informers not synced\n",
                                 200 if controller.synced else 503)

    return Starlette(routes=[Route("/healthz", healthz), Route("/readyz", readyz), metrics.route()])


async def run(s: settings.Settings, time: clock.Clock = clock.SYSTEM) -> int:
    api = await kube.Kube.connect(s.kubeconfig, limiter=kube.RateLimiter(s.qps, s.burst, time=time),
                                 observer=controller_metrics.ApiObserver())
    informers = [informer.PodInformer(api, namespace=ns, label_selector=s.selector, time=time)
                 for ns in (s.namespaces or (None,))]
    elector = leader.LeaderElector(api, namespace=s.lease_namespace, name=s.lease_name, identity=s.identity,
                                   time=time) if s.leader_elect else None
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        prober = await stack.enter_async_context(
            probing.Prober(concurrency=s.probe_concurrency, timeout=s.probe_timeout))
        repo = None if not s.data_repository else await stack.enter_async_context(
            repository.Repository(s.data_repository, token_file=s.data_repository_token_file))
        api_writer = writer.Writer(api, identity=s.identity, dry_run=s.dry_run, grace_period=s.eviction_grace_period,
                                   repository=repo, time=time)
        rollouts = None if repo is None else datarollouts.DataRollouts(
            api, repo, prober, api_writer, namespaces=s.namespaces, policy=s.rollout,
            datadeployer_port=s.datadeployer_port, time=time)
        apps = approllouts.AppRollouts(api, api_writer, namespaces=s.namespaces, time=time) if s.app_rollouts \
            else None
        controller = passes.Controller(informers, prober, api_writer, s.eviction, elector=elector,
                                       interval=s.interval, rollouts=rollouts, apps=apps,
                                       unknown_error_seconds=s.unknown_error_seconds, time=time)
        tasks = [asyncio.create_task(i.run(), name=f"informer-{i.namespace or 'all'}") for i in informers]
        tasks.append(asyncio.create_task(controller.run(), name="passes"))
        if elector is not None:
            tasks.append(asyncio.create_task(elector.run(), name="leader-election"))
        site = serving.Serving([serving.Site("health", health_app(controller, tasks), s.health_host,
                                             s.health_port)], graceful_timeout=2)
        await site.start()
        log.info("controller started", extra={"identity": s.identity, "dry_run": s.dry_run,
                                              "namespaces": list(s.namespaces) or "all", "selector": s.selector,
                                              "data_repository": s.data_repository,
                                              "app_rollouts": s.app_rollouts})
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
    identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"
    s = settings.parse(argv, default_identity=identity)
    logs.setup(log_format=s.log_format, level=s.log_level)
    try:
        return asyncio.run(run(s))
    except errors.ConfigError as exc:  # no usable credentials
        log.error("cannot start the controller", extra={"error": str(exc)})
        return 1
