"""``autocrane datadeployer --mode init|sidecar``: keep this pod's data sets at the requested versions.

Requests come from the pod's own annotations in the downward-API file (no Kubernetes API
permissions at all); acknowledgements go out through the status endpoint, which the controller
reads when it probes the pod (see docs/data-plane.md).

- ``init``: bring every declared data set to its requested version, then exit 0. A data set
  without a request after ``--request-timeout`` keeps a verified version already on disk, else
  gets the repository's last-known-good version for the pod's namespace (the manifest's
  ``lastKnownGoodByNamespace`` entry, else its ``lastKnownGood``), and the log says so. A data
  set that fails ``--max-failures`` times in a row ends the program with
  exit 1 and a message naming each failing data set and why.
- ``sidecar``: serve the status endpoints and follow the requests for as long as the pod lives,
  one task per data set so a failing one never holds back the others; failures are retried
  with exponential backoff; the app is optionally notified after each swap.

Nothing in the annotations file can stop the following: a malformed value affects only its own
data set (the decoders report it), and anything unexpected is caught where it happens, logged
once with its traceback, reported on that data set's ``/status`` and retried; a per-set task
that ends anyway is restarted. ``/livez`` fails if the follow loop itself ever stops, so the
kubelet restarts the container instead of leaving ``/status`` frozen.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import logging
import os
from pathlib import Path

from autocrane import backoff, inpod, logs, podinfo, serving, untrusted
from sidecars import archives
from sidecars.datadeploy import fetching, hooks, requests, status, swap, syncing

log = logging.getLogger("sidecars.datadeploy")
DEFAULT_ANNOTATIONS = podinfo.ANNOTATIONS_PATH
INIT_BACKOFF = backoff.Backoff(first=2.0, cap=30.0)
"""init: seconds before a failed data set is tried again (at least the poll interval)."""


class Outcome(enum.Enum):
    DONE = "done"
    WAITING = "waiting"
    FAILED = "failed"


class Deployer:
    """The decisions of one pass over one data set, shared by both modes."""

    def __init__(self, settings: syncing.Settings, watcher: podinfo.Watcher, state: status.Status,
                 request_timeout: float, notifier: hooks.Notifier | None = None) -> None:
        self.settings, self.watcher, self.status = settings, watcher, state
        self.store = swap.Store(settings.root)
        self.request_timeout = request_timeout
        self.notifier = notifier
        self.started = state.clock.monotonic()
        self.sets: dict[str, requests.DataSet] = {}

    def refresh(self) -> bool:
        """Re-read the annotations file; True when the declared sets or requests changed."""
        changed = self.watcher.poll()
        self.status.annotations_error = self.watcher.error
        if changed and self.watcher.error is None:
            self.sets, problems = requests.data_sets(self.watcher.annotations)
            for problem in problems:
                log.error("ignoring data set: %s", problem)
            for name in list(self.status.sets):
                if name not in self.sets:
                    del self.status.sets[name]
            for name, data_set in self.sets.items():
                self.status.get(name).source = data_set.source
        return changed

    async def step(self, name: str) -> Outcome:
        data_set = self.sets.get(name)
        if data_set is None:
            return Outcome.DONE
        if data_set.error is not None:
            self.status.failed(name, data_set.error)
            return Outcome.FAILED
        entry, request = self.status.get(name), data_set.request
        entry.fallback = False
        if request is None:
            current = self.store.current(name)
            if current is not None:
                entry.requested = None
                self.status.succeeded(name, current.version, current.sha256, current.time)
                return Outcome.DONE
            if self.status.clock.monotonic() - self.started < self.request_timeout:
                return Outcome.WAITING
            try:
                request = await asyncio.to_thread(syncing.last_known_good, self.settings, data_set.source)
            except syncing.SyncError as error:
                log.error("%s: no request after %.0fs and %s", name, self.request_timeout, error)
                if name not in self.sets:
                    return Outcome.DONE
                self.status.failed(name, f"no request after {self.request_timeout:.0f}s and {error}")
                return Outcome.FAILED
            log.warning("%s: no request after %.0fs; falling back to the repository's last known good version %s",
                        name, self.request_timeout, request.version)
            entry.fallback = True
        entry.requested = request.version
        try:
            deployed, changed = await asyncio.to_thread(
                syncing.sync, self.settings, self.store, name, data_set.source, request)
        except syncing.SyncError as error:
            log.error("%s: sync failed, still serving %s: %s", name, entry.version or "nothing", error)
            if name not in self.sets:  # undeclared while it ran: recording it would resurrect the entry
                return Outcome.DONE
            self.status.failed(name, str(error))
            return Outcome.FAILED
        if name not in self.sets:
            return Outcome.DONE
        self.status.succeeded(name, deployed.version, deployed.sha256, deployed.time)
        if changed:
            self.announce(deployed)
        return Outcome.DONE

    def announce(self, deployed: swap.Deployed) -> None:
        if self.notifier is not None:
            self.notifier.announce({"name": deployed.name, "version": deployed.version,
                                    "sha256": deployed.sha256, "path": str(self.settings.root / deployed.name)})


async def run_init(deployer: Deployer, max_failures: int, poll: float) -> int:
    """Until every declared data set is present and verified (0), or one fails too often (1)."""
    deployer.refresh()
    if deployer.watcher.error is not None:
        log.error("cannot read the pod's annotations: %s", deployer.watcher.error)
        return 1
    pending, failures = set(deployer.sets), dict.fromkeys(deployer.sets, 0)
    log.info("init: data sets %s", ", ".join(sorted(pending)) or "(none)")
    while pending:
        delay = poll
        for name in sorted(pending):
            outcome = await deployer.step(name)
            if outcome is Outcome.DONE:
                pending.discard(name)
            elif outcome is Outcome.FAILED:
                failures[name] += 1
                delay = max(delay, INIT_BACKOFF.delay(failures[name]))
        given_up = [n for n in sorted(pending) if failures[n] >= max_failures]
        if given_up:
            for name in given_up:
                log.error("init failed: data set %s: %s (%d attempts)", name,
                          deployer.status.get(name).error, failures[name])
            return 1
        if pending:
            await asyncio.sleep(delay)
            deployer.refresh()
    log.info("init: every data set is present and verified")
    return 0


class _Once:
    """Logs an unexpected error with its traceback once per place and message, not every retry."""

    def __init__(self) -> None:
        self._last: dict[str, str] = {}

    def error(self, where: str, error: BaseException) -> str:
        said = f"{type(error).__name__}: {untrusted.shown(str(error), 200)}"
        if self._last.get(where) != said:
            self._last[where] = said
            log.error("%s: unexpected error (logged once; retrying): %s", where, said, exc_info=error)
        return said

    def clear(self, where: str) -> None:
        self._last.pop(where, None)


async def follow(deployer: Deployer, poll: float, resync: float, max_backoff: float = 300.0) -> None:
    """The sidecar's loops: watch the annotations file, one task per data set. Never returns nor raises."""
    wake: dict[str, asyncio.Event] = {}
    tasks: dict[str, asyncio.Task[None]] = {}
    once = _Once()

    async def step(name: str) -> Outcome:
        try:
            outcome = await deployer.step(name)
        except Exception as error:  # a bug, or a value no decoder foresaw: this set fails, the others go on
            said = once.error(f"data set {name}", error)
            if name in deployer.sets:
                deployer.status.failed(name, f"internal error: {said}")
            return Outcome.FAILED
        once.clear(f"data set {name}")
        return outcome

    retrying = backoff.Backoff(min(1.0, max_backoff), max_backoff)

    async def one(name: str) -> None:
        failures = 0
        while name in deployer.sets:
            wake[name].clear()
            outcome = await step(name)
            failures = failures + 1 if outcome is Outcome.FAILED else 0
            timeout = retrying.delay(failures) if failures else poll if outcome is Outcome.WAITING else resync
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake[name].wait(), timeout)

    def refresh() -> bool:
        try:
            changed = deployer.refresh()
        except Exception as error:
            deployer.watcher.invalidate()  # read it again next time: it may work, and the error stays until then
            deployer.status.annotations_error = f"the annotations cannot be read: {once.error('annotations', error)}"
            return False
        once.clear("annotations")
        return changed

    refresh()
    for name in sorted(deployer.sets):
        try:
            current = deployer.store.current(name)
        except Exception as error:
            once.error(f"data set {name}", error)
            continue
        if current is not None:
            deployer.announce(current)  # at-least-once: the app may have missed the last one
    changed = True
    try:
        while True:
            for name in deployer.sets:
                wake.setdefault(name, asyncio.Event())
                if changed:
                    wake[name].set()
                task = tasks.get(name)
                if task is None or task.done():
                    if task is not None and not task.cancelled() and task.exception() is not None:
                        log.error("data set %s: its sync task ended (%s); restarting it", name, task.exception())
                    tasks[name] = asyncio.create_task(one(name), name=f"sync-{name}")
            for name in [n for n, t in tasks.items() if t.done() and n not in deployer.sets]:
                del tasks[name]
            await asyncio.sleep(poll)
            changed = refresh()
    finally:
        for task in tasks.values():
            task.cancel()


def _stopped(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the follow loop stopped; /livez now fails so the container is restarted",
                  exc_info=task.exception())


async def run_sidecar(deployer: Deployer, host: str, port: int, poll: float, resync: float) -> int:
    loops: asyncio.Task[None] | None = None

    def alive() -> str | None:
        return "the follow loop stopped" if loops is not None and loops.done() else None

    site = serving.Site("status", status.app(deployer.status, alive), host, port, limits=serving.IN_POD)
    server = serving.Serving([site], graceful_timeout=5.0)
    loops = asyncio.create_task(follow(deployer, poll, resync), name="follow")
    loops.add_done_callback(_stopped)
    try:
        await serving.run(server)
    finally:
        loops.cancel()
        await asyncio.gather(loops, return_exceptions=True)  # its end, if it came early, is logged already
        if deployer.notifier is not None:
            deployer.notifier.close()
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autocrane datadeployer", description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("init", "sidecar"), required=True)
    p.add_argument("--repository", required=True, help="data repository base URL, e.g. http://datarepository")
    p.add_argument("--root", type=Path, default=Path("/autocrane/data"),
                   help="data volume as mounted here; data set NAME appears at ROOT/NAME (default /autocrane/data)")
    p.add_argument("--annotations-file", type=Path, default=Path(DEFAULT_ANNOTATIONS),
                   help=f"downward-API file of the pod's annotations (default {DEFAULT_ANNOTATIONS})")
    p.add_argument("--token-file", type=Path, help="file holding the repository's bearer token")
    p.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE") or None,
                   help="the pod's namespace, whose last known good is the fallback (default $POD_NAMESPACE)")
    p.add_argument("--request-timeout", type=float, default=90.0,
                   help="seconds to wait for a request before falling back to last known good (default 90)")
    p.add_argument("--max-failures", type=int, default=5, help="init: attempts per data set before exit 1")
    p.add_argument("--host", default="0.0.0.0", help="sidecar: status endpoint address")
    p.add_argument("--port", type=int, default=inpod.DATADEPLOYER_STATUS_PORT,
                   help=f"sidecar: status endpoint port (default {inpod.DATADEPLOYER_STATUS_PORT}, the injector's)")
    p.add_argument("--poll-seconds", type=float, default=1.0, help="how often to re-read the annotations file")
    p.add_argument("--resync-seconds", type=float, default=30.0, help="sidecar: re-check a healthy data set")
    p.add_argument("--failure-threshold", type=float, default=300.0,
                   help="sidecar: seconds of failed syncing before /watchdog reports error (default 300)")
    p.add_argument("--notify-url", help=f"sidecar: POST here after each swap: {hooks.FORM}")
    limits = archives.Limits()
    p.add_argument("--max-entries", type=int, default=limits.max_entries, help="entries per archive")
    p.add_argument("--max-file-bytes", type=int, default=limits.max_entry_bytes, help="bytes per extracted file")
    p.add_argument("--max-total-bytes", type=int, default=limits.max_total_bytes, help="bytes per extracted tree")
    logs.add_arguments(p)
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    logs.setup_from_arguments(args)
    try:
        token = args.token_file.read_text().strip() if args.token_file else None
    except OSError as error:
        log.error("error: --token-file %s: %s", args.token_file, error.strerror or error)
        return 2
    settings = syncing.Settings(
        root=args.root, repository=fetching.Repository(args.repository, token),
        limits=archives.Limits(args.max_entries, args.max_file_bytes, args.max_total_bytes), namespace=args.namespace)
    try:
        notifier = hooks.Notifier(args.notify_url) if args.notify_url and args.mode == "sidecar" else None
    except hooks.HookError as error:
        log.error("error: %s", error)
        return 2
    if not os.access(args.root, os.W_OK):
        log.error("data root %s is missing or not writable", args.root)
        return 1
    swap.Store(args.root).recover()
    deployer = Deployer(settings, podinfo.Watcher(args.annotations_file),
                        status.Status(args.failure_threshold), args.request_timeout, notifier)
    if args.mode == "init":
        try:
            return asyncio.run(run_init(deployer, args.max_failures, args.poll_seconds))
        except Exception as error:  # exit 1 with one line saying why, as for any other failed init
            log.error("error: init failed: unexpected %s: %s", type(error).__name__, untrusted.shown(str(error), 200))
            log.debug("the unexpected error's traceback", exc_info=error)
            return 1
    return asyncio.run(run_sidecar(deployer, args.host, args.port, args.poll_seconds, args.resync_seconds))

