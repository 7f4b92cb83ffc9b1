"""The controller against a real API server with 10,000 KWOK pods: RSS, probe pass, writes, LISTs, failure time.

Unlike ``controller_bench.py`` (the controller's code in-process, a stub instead of the API
server), this runs everything for real on loopback:

- the local control plane (``devcluster.controlplane``: etcd, kube-apiserver 1.34,
  kube-controller-manager, kube-scheduler, KWOK), with KCM's and the scheduler's client rate
  limits raised so 10,000 pods are created in minutes rather than tens of minutes;
- ``--deployments`` Deployments with ``--pods`` replicas in all, whose pod template carries
  ``probe.autocrane.io/app: POD_IP:<port>/watchdog``; KWOK makes the pods Running with IPs in
  127.16.0.0/16;
- ONE asyncio HTTP server in this process serving every pod's watchdog: a socket bound to
  ``0.0.0.0:<port>`` and to the ``lo`` device (``SO_BINDTODEVICE``), so it accepts connections to
  any 127/8 address and nothing from other interfaces; it answers 500 for the pod IPs the bench
  marks failing, 200 otherwise;
- ``autocrane controller`` as a subprocess (``-n bench``, ``--no-leader-elect``, ``--dry-run``)
  with the cluster's admin kubeconfig.

Measured: the controller's RSS (``/proc/PID/status``: after the informer synced, peak ``VmHWM``,
and at the end of the steady window); pass durations from its ``pass_duration_seconds``
histogram (the first pass writes every pod's first status; later passes are full probe passes
that write nothing); API writes per minute over a steady window (``--steady-seconds``, after
every pod has its first status), from the controller's ``api_requests_total`` and, for pods and
events from any client, the kube-apiserver's ``apiserver_request_total``; namespaced pod LISTs
at the API server (only the controller lists pods in the namespace) before and after its
informer synced; and the time from a watchdog starting to fail to the pod's
``status.autocrane.io/app`` error annotation, polled with GETs, for ``--victims`` pods.

    .venv/bin/python bench/controller_kwok_bench.py                       # 10,000 pods, ~20-30 min
    .venv/bin/python bench/controller_kwok_bench.py --pods 500 --deployments 2 --steady-seconds 30

Bounded by ``--timeout``; every process (control plane, controller) is stopped at the end. The
exit code is 0 when the targets (RSS <= 200 MiB, no LIST after the initial one, 0 writes per
minute at steady state, failure recorded within interval + one pass) are met.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import math
import os
import random
import re
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from devcluster import controlplane

NAMESPACE = "bench"
ANNOTATION = "probe.autocrane.io/app"
STATUS = "status.autocrane.io/app"
WRITE_VERBS = {"POST", "PUT", "PATCH", "DELETE", "APPLY", "DELETECOLLECTION"}
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Samples = list[tuple[str, dict[str, str], float]]


def log(message: str) -> None:
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"[{time.strftime('%H:%M:%S')} load {load}] {message}", flush=True)


def parse_metrics(text: str, prefix: str) -> Samples:
    """Prometheus text format, only samples whose name starts with ``prefix``."""
    out: Samples = []
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        match = _SAMPLE.match(line)
        if match:
            out.append((match[1], dict(_LABEL.findall(match[2] or "")), float(match[3])))
    return out


def total(samples: Samples, name: str, **labels: str | set[str]) -> float:
    def fits(have: dict[str, str]) -> bool:
        return all(have.get(k) in v if isinstance(v, set) else have.get(k) == v for k, v in labels.items())
    return sum(value for n, have, value in samples if n == name and fits(have))


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a process, in MiB."""
    out = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    return out


class Watchdogs:
    """Every pod's ``GET /watchdog`` on one listening socket: 500 for failing pod IPs, 200 otherwise."""

    def __init__(self, network: str) -> None:
        self.network = ipaddress.ip_network(network)
        self.failing: set[str] = set()
        self.answered = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # 0.0.0.0 receives connections to every 127/8 address (all local on Linux); binding the socket to
        # the loopback device keeps anything arriving on another interface out (unprivileged since 5.7).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo")
        sock.bind(("0.0.0.0", 0))
        sock.listen(4096)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self.server = await asyncio.start_server(self.handle, sock=sock)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            local = writer.get_extra_info("sockname")[0]
            if ipaddress.ip_address(local) not in self.network:
                return
            await reader.readuntil(b"\r\n\r\n")
            failing = local in self.failing
            body = b"broken" if failing else b"ok"
            status = b"500 Internal Server Error" if failing else b"200 OK"
            writer.write(b"HTTP/1.1 " + status + b"\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
                         + body)
            await writer.drain()
            self.answered += 1
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


class Api:
    """Blocking admin calls to the kube-apiserver (run in threads)."""

    def __init__(self, plane: controlplane.ControlPlane) -> None:
        self.plane = plane
        self.context = ssl.create_default_context(cafile=str(plane.pki.ca_cert))
        self.context.load_cert_chain(str(plane.pki.admin_cert), str(plane.pki.admin_key))

    def text(self, path: str) -> str:
        with urllib.request.urlopen(f"{self.plane.server}{path}", timeout=30, context=self.context) as r:
            return str(r.read().decode())

    def json(self, path: str) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.text(path))
        return decoded

    def metrics(self) -> Samples:
        return parse_metrics(self.text("/metrics"), "apiserver_request_total")


def deployment(name: str, replicas: int, port: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": replicas, "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "100%"}},
            "template": {
                "metadata": {"labels": labels, "annotations": {ANNOTATION: f"POD_IP:{port}/watchdog"}},
                "spec": {"containers": [{"name": "app", "image": "registry.example/app:1.2.3",
                                         "ports": [{"containerPort": port}]}],
                         "terminationGracePeriodSeconds": 5},
            },
        },
    }


async def create_pods(api: Api, args: argparse.Namespace, port: int) -> dict[str, Any]:
    """Create the Deployments and wait until all their pods are Ready, printing progress."""
    plane = api.plane
    await asyncio.to_thread(plane.create, "/api/v1/namespaces",
                            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    sa = f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default"
    while await asyncio.to_thread(plane.get, sa) is None:
        await asyncio.sleep(0.2)
    started = time.monotonic()
    per = [args.pods // args.deployments + (1 if i < args.pods % args.deployments else 0)
           for i in range(args.deployments)]
    for i, replicas in enumerate(per):
        await asyncio.to_thread(plane.create, f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments",
                                deployment(f"web-{i}", replicas, port))
    deadline = started + args.create_timeout
    ready = 0
    while True:
        await asyncio.sleep(5)
        plane.check_alive()
        items = (await asyncio.to_thread(api.json, f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"))["items"]
        created = sum(d.get("status", {}).get("replicas", 0) for d in items)
        ready = sum(d.get("status", {}).get("readyReplicas", 0) for d in items)
        elapsed = time.monotonic() - started
        log(f"pods: {created:>6} created, {ready:>6} Running+Ready of {args.pods} after {elapsed:5.0f}s"
            f" ({ready / elapsed:.0f}/s)")
        if ready >= args.pods or time.monotonic() > deadline:
            break
    return {"ready": ready, "seconds": round(time.monotonic() - started, 1)}


def controller_argv(args: argparse.Namespace, kubeconfig: Path, health_port: int) -> list[str]:
    return [sys.executable, "-m", "autocrane", "controller", "--kubeconfig", str(kubeconfig), "-n", NAMESPACE,
            "--no-leader-elect", "--dry-run", "--interval", str(args.interval),
            "--probe-concurrency", str(args.probe_concurrency), "--qps", str(args.qps), "--burst", str(args.qps * 2),
            "--health-host", "127.0.0.1", "--health-port", str(health_port), "--log-format", "json"]


class Controller:
    """The controller subprocess, its RSS sampled and its /metrics read."""

    def __init__(self, popen: subprocess.Popen[bytes], health_port: int) -> None:
        self.popen = popen
        self.url = f"http://127.0.0.1:{health_port}"
        self.max_rss = 0.0
        self.passes: list[tuple[float, float]] = []
        """(time.monotonic() when seen, seconds) per completed pass."""
        self._count = 0.0
        self._sum = 0.0

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""
        except OSError:
            return 0, ""

    def metrics(self) -> Samples:
        return parse_metrics(self.get("/metrics")[1], "autocrane_controller_")

    def rss(self) -> dict[str, float]:
        return proc_status(self.popen.pid)

    async def sample(self) -> None:
        """Every second: RSS, and each new pass' duration from the histogram's sum and count."""
        while True:
            if self.popen.poll() is not None:
                raise RuntimeError(f"the controller exited with {self.popen.returncode}")
            self.max_rss = max(self.max_rss, self.rss().get("VmRSS", 0.0))
            samples = await asyncio.to_thread(self.metrics)
            count = total(samples, "autocrane_controller_pass_duration_seconds_count")
            seconds = total(samples, "autocrane_controller_pass_duration_seconds_sum")
            if count > self._count:
                self.passes.append((time.monotonic(), (seconds - self._sum) / (count - self._count)))
                if len(self.passes) <= 3 or len(self.passes) % 5 == 0:
                    log(f"controller pass {int(count)}: {self.passes[-1][1]:.2f}s")
                self._count, self._sum = count, seconds
            await asyncio.sleep(1)


async def wait_until(what: str, condition: Any, timeout: float, interval: float = 1.0) -> float:
    """Await ``condition()`` (sync, run in a thread) until true; the seconds it took."""
    started = time.monotonic()
    while not await asyncio.to_thread(condition):
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        await asyncio.sleep(interval)
    return time.monotonic() - started


def pod_lists(samples: Samples) -> float:
    """Namespaced pod LISTs: in this cluster only the controller (``-n bench``) makes them."""
    return total(samples, "apiserver_request_total", verb="LIST", resource="pods", scope="namespace")


def pod_writes(samples: Samples) -> float:
    """Writes to pods (any subresource) and events, from every client."""
    return total(samples, "apiserver_request_total", verb=WRITE_VERBS, resource={"pods", "events"})


async def failure_times(api: Api, watchdogs: Watchdogs, victims: list[dict[str, Any]],
                        interval: float, timeout: float) -> list[float]:
    times = []
    for pod in victims:
        name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
        await asyncio.sleep(random.uniform(0, interval))  # a random phase against the pass loop
        watchdogs.failing.add(ip)
        failed = time.monotonic()
        path = f"/api/v1/namespaces/{NAMESPACE}/pods/{name}"
        while True:
            current = await asyncio.to_thread(api.json, path)
            value = (current["metadata"].get("annotations") or {}).get(STATUS, "")
            if value.startswith("error/"):
                break
            if time.monotonic() - failed > timeout:
                raise TimeoutError(f"{name}: no error status within {timeout:.0f}s")
            await asyncio.sleep(0.1)
        times.append(round(time.monotonic() - failed, 2))
        log(f"watchdog of {name} ({ip}) failing -> {value[:60]!r} after {times[-1]}s")
        watchdogs.failing.discard(ip)
    return times


async def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"pods": args.pods, "interval": args.interval, "qps": args.qps}
    watchdogs = Watchdogs(controlplane.DEFAULT_POD_CIDR)
    await watchdogs.start()
    nodes = max(3, math.ceil(args.pods / 1000))
    options = controlplane.Options(nodes=nodes, pods_per_node=math.ceil(args.pods * 1.2 / nodes) + 10,
                                   kube_api_qps=args.cluster_qps, kube_api_burst=args.cluster_qps * 2,
                                   start_timeout=180)
    proc: subprocess.Popen[bytes] | None = None
    sampler: asyncio.Task[None] | None = None
    log(f"starting the control plane ({nodes} KWOK nodes); watchdogs on 0.0.0.0:{watchdogs.port} (lo only)")
    with controlplane.ControlPlane.start(options, directory=workdir / "cluster") as plane:
        try:
            api = Api(plane)
            log(f"kube-apiserver {plane.version()} at {plane.server}; creating {args.pods} pods "
                f"in {args.deployments} Deployments")
            created = await create_pods(api, args, watchdogs.port)
            results["pods_ready"], results["create_seconds"] = created["ready"], created["seconds"]
            if created["ready"] < args.pods:
                log(f"only {created['ready']} of {args.pods} pods Running within --create-timeout; measuring those")
            page = await asyncio.to_thread(api.json, f"/api/v1/namespaces/{NAMESPACE}/pods?limit=500")
            running = [p for p in page["items"] if p.get("status", {}).get("podIP")]
            victims = random.sample(running, min(args.victims, len(running)))

            before = await asyncio.to_thread(api.metrics)
            health_port = controlplane.free_port()
            log_path = workdir / "controller.log"
            with log_path.open("wb") as handle:
                proc = subprocess.Popen(controller_argv(args, plane.kubeconfig, health_port), stdout=handle,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            ctl = Controller(proc, health_port)
            started = time.monotonic()
            sampler = asyncio.create_task(ctl.sample())
            log(f"controller pid {proc.pid} started (log {log_path})")

            def synced() -> bool:
                return ctl.get("/readyz")[0] == 200 and total(
                    ctl.metrics(), "autocrane_controller_informer_pods_items") >= created["ready"]
            results["sync_seconds"] = round(await wait_until("informer synced", synced, 300), 1)
            await asyncio.sleep(1)
            results["rss_synced_mib"] = round(ctl.rss().get("VmRSS", 0), 1)
            after_sync = await asyncio.to_thread(api.metrics)
            results["initial_list_requests"] = pod_lists(after_sync) - pod_lists(before)
            log(f"informer synced after {results['sync_seconds']}s: RSS {results['rss_synced_mib']} MiB, "
                f"{results['initial_list_requests']:.0f} LIST pages")

            def all_statused() -> bool:
                return total(ctl.metrics(), "autocrane_controller_pods_items", health="info") >= created["ready"]
            await wait_until("every pod has its first status", all_statused, args.timeout)
            results["first_status_seconds"] = round(time.monotonic() - started, 1)
            log(f"every pod has its first status {results['first_status_seconds']}s after the controller started")
            # the sampler sees a pass up to a second after it ended: wait for it, then for two more
            await wait_until("the first pass seen", lambda: bool(ctl.passes), 30)
            results["first_pass_seconds"] = round(ctl.passes[0][1], 1)
            seen = len(ctl.passes)
            await wait_until("two more passes", lambda: len(ctl.passes) >= seen + 2, args.interval * 4 + 300)

            ctl0, api0, t0 = ctl.metrics(), await asyncio.to_thread(api.metrics), time.monotonic()
            log(f"steady window: {args.steady_seconds:.0f}s")
            await asyncio.sleep(args.steady_seconds)
            ctl1, api1, t1 = ctl.metrics(), await asyncio.to_thread(api.metrics), time.monotonic()
            minutes = (t1 - t0) / 60

            def writes(samples: Samples) -> float:
                return total(samples, "autocrane_controller_api_requests_total",
                             verb={v.lower() for v in WRITE_VERBS})
            results["writes_per_minute"] = round((writes(ctl1) - writes(ctl0)) / minutes, 2)
            results["apiserver_pod_writes_per_minute"] = round((pod_writes(api1) - pod_writes(api0)) / minutes, 2)
            results["watch_requests_in_window"] = total(
                ctl1, "autocrane_controller_api_requests_total", verb="watch") - total(
                ctl0, "autocrane_controller_api_requests_total", verb="watch")
            steady = [s for when, s in ctl.passes if t0 <= when <= t1]
            results["steady_passes"] = len(steady)
            results["pass_seconds_median"] = round(statistics.median(steady), 2) if steady else None
            results["pass_seconds_max"] = round(max(steady), 2) if steady else None
            rss = ctl.rss()
            results["rss_steady_mib"] = round(rss.get("VmRSS", 0), 1)
            results["load_average"] = [round(x, 1) for x in os.getloadavg()]

            results["failure_to_status_seconds"] = await failure_times(
                api, watchdogs, victims, args.interval, args.interval * 3 + 120)
            end = await asyncio.to_thread(api.metrics)
            results["lists_after_sync"] = pod_lists(end) - pod_lists(after_sync)
            results["relists"] = total(ctl.metrics(), "autocrane_controller_informer_relists_total")
            results["rss_peak_mib"] = round(max(ctl.rss().get("VmHWM", 0), ctl.max_rss), 1)
            results["watchdog_answers"] = watchdogs.answered
            results["controller_seconds"] = round(time.monotonic() - started, 1)
        finally:
            if sampler is not None:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                    await sampler
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            watchdogs.close()
    return results


def table(r: dict[str, Any]) -> tuple[str, bool]:
    interval = r["interval"]
    bound = interval * 1.1 + (r.get("pass_seconds_max") or 0) + 2
    failures = r.get("failure_to_status_seconds") or []
    checks = {
        "rss": r["rss_peak_mib"] <= 200,
        "lists": r["lists_after_sync"] == 0 and r["relists"] == 1,
        "writes": r["writes_per_minute"] == 0,
        "failure": bool(failures) and max(failures) <= bound,
    }
    rows = [
        ("pods Running (created by KCM, scheduled, started by KWOK)",
         f"{r['pods_ready']} of {r['pods']} in {r['create_seconds']:.0f} s", ""),
        ("controller: informer synced (paged LIST of every pod)",
         f"{r['sync_seconds']} s, {r['initial_list_requests']:.0f} LIST requests", ""),
        ("RSS after sync / at steady state / peak (VmHWM)",
         f"{r['rss_synced_mib']} / {r['rss_steady_mib']} / {r['rss_peak_mib']} MiB", "<= 200 MiB"),
        (f"first pass (every pod's first status, --qps {r['qps']:g})",
         f"{r['first_pass_seconds']} s; all statused {r['first_status_seconds']} s after start", ""),
        (f"full probe pass at steady state (median / max of {r['steady_passes']})",
         f"{r['pass_seconds_median']} / {r['pass_seconds_max']} s", f"< interval ({interval:g} s)"),
        ("API writes per minute at steady state (controller)", f"{r['writes_per_minute']:g}", "0"),
        ("pod and event writes per minute at the apiserver (all clients)",
         f"{r['apiserver_pod_writes_per_minute']:g}", ""),
        ("pod LISTs after the initial one (apiserver; informer LISTs)",
         f"{r['lists_after_sync']:.0f}; {r['relists']:.0f} LIST (start)", "0 (no periodic full LIST)"),
        ("watches (re)opened in the steady window", f"{r['watch_requests_in_window']:.0f}", ""),
        ("watchdog failure -> error status on the pod",
         ", ".join(f"{x:g}" for x in failures) + " s", f"<= interval + pass ({bound:.1f} s)"),
        ("load average (1/5/15 min) at steady state", " ".join(map(str, r["load_average"])), ""),
    ]
    width = max(len(a) for a, _, _ in rows)
    vwidth = max(len(b) for _, b, _ in rows)
    lines = [f"{'figure':<{width}}  {'value':<{vwidth}}  target", "-" * (width + vwidth + 30)]
    lines += [f"{a:<{width}}  {b:<{vwidth}}  {c}" for a, b, c in rows]
    missed = [k for k, ok in checks.items() if not ok]
    lines.append("TARGETS MET" if not missed else f"TARGETS MISSED: {', '.join(missed)}")
    return "\n".join(lines), not missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--deployments", type=int, default=10)
    parser.add_argument("--interval", type=float, default=10.0, help="the controller's --interval")
    parser.add_argument("--qps", type=int, default=100, help="the controller's --qps (burst twice that)")
    parser.add_argument("--probe-concurrency", type=int, default=64)
    parser.add_argument("--cluster-qps", type=int, default=500,
                        help="--kube-api-qps of KCM and the scheduler (burst twice that)")
    parser.add_argument("--create-timeout", type=float, default=1800.0,
                        help="seconds to wait for the pods to be Running; then measure those that are")
    parser.add_argument("--steady-seconds", type=float, default=360.0,
                        help="steady-state window; > 6 min includes a watch the server ends (timeoutSeconds)")
    parser.add_argument("--victims", type=int, default=3, help="pods whose watchdog is made to fail, one by one")
    parser.add_argument("--timeout", type=float, default=3600.0, help="bound on the whole run, seconds")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()

    async def bounded(workdir: Path) -> dict[str, Any]:
        async with asyncio.timeout(args.timeout):
            return await bench(args, workdir)

    with tempfile.TemporaryDirectory(prefix="autocrane-kwok-bench-") as workdir:
        try:
            results = asyncio.run(bounded(Path(workdir)))
        except BaseException:
            log_file = Path(workdir) / "controller.log"
            if log_file.exists():
                print("--- controller log (tail) ---\n" + "\n".join(log_file.read_text().splitlines()[-20:]))
            raise
    if args.json:
        print(json.dumps(results))
    text, ok = table(results)
    print(text)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
