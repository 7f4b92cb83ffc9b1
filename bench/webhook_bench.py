"""Admissions per second and p50/p99 latency of ``POST /mutate`` under concurrent TLS load.

Two servers are measured in one run, each in its own process on one worker, with the same
certificate and the same request:

- ``ceiling``: a bare uvicorn ASGI app that reads the body, parses the AdmissionReview and
  allows it: the most a Python webhook on uvicorn can do on this machine;
- ``webhook``: ``autocrane webhook`` as deployed (Starlette, the injector, JSON logs at info
  level to /dev/null, metrics), answering with the injection patch;
- ``http-only``: the same ``autocrane webhook`` process with ``admission.review`` replaced by a
  bare allow: what our HTTP/TLS/logging/metrics layer costs without the injection itself.

After the table, the CPU time of one admission's parts (parse, ``inject``, the JSONPatch diff,
the whole ``admission.review``) is measured in this process, single-threaded, to show where a
webhook/ceiling gap comes from.

The load generator (this process) keeps ``--concurrency`` keep-alive TLS connections, each sending
the next request as soon as the previous response is in (closed loop), with a minimal HTTP/1.1
client on asyncio streams so the client is not the bottleneck. Rounds alternate between the two
servers so background noise hits both alike. Everything is bounded (``--duration`` seconds and
``--max-requests`` per round) and stays on 127.0.0.1.

    .venv/bin/python bench/webhook_bench.py            # 3 rounds of 5 s per server
    .venv/bin/python bench/webhook_bench.py --rounds 1 --duration 2
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from webhook import tls  # noqa: E402  (after the path tweak, so this runs from a checkout)

TARGET_RATIO = 0.6
TARGET_P99_MS = 15.0


_SUFFIX_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # what the ServiceAccount admission plugin draws from


def admission_review(replica: int = 0, image_tag: str = "1.42.0") -> dict[str, Any]:
    """A pod as a ReplicaSet creates it (labels, env, probes, managedFields), opted into data and readiness.

    Replicas differ as real ones do when the webhook sees them: request uid, and the service-account
    token volume, whose name the ServiceAccount admission plugin suffixes with 5 random characters.
    """
    suffix = "".join(_SUFFIX_CHARS[(replica // len(_SUFFIX_CHARS) ** i) % len(_SUFFIX_CHARS)] for i in range(5))
    token_volume = f"kube-api-access-{suffix}"
    container = {
        "name": "web", "image": f"registry.example/shop/web:{image_tag}",
        "ports": [{"containerPort": 8080, "name": "http"}],
        "env": [{"name": f"SETTING_{i}", "value": f"value-{i}"} for i in range(8)],
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5},
        "volumeMounts": [{"name": token_volume, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                          "readOnly": True}],
    }
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": "web-7d9f8b6c5-", "namespace": "shop",
            "labels": {"app": "web", "pod-template-hash": "7d9f8b6c5", "team": "storefront"},
            "annotations": {"data.autocrane.io/catalog": "catalog/prod", "data.autocrane.io/model": "ranker/v3",
                            "store.autocrane.io/location": "/data",
                            "watchdoghealthz.autocrane.io/min-ready-seconds": "30"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8b6c5",
                                 "uid": "8c1d6f0e-0f43-4c5e-9c43-1f3f2a9b7d10", "controller": True,
                                 "blockOwnerDeletion": True}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                               "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}, "f:team": {}}},
                                            "f:spec": {"f:containers": {'k:{"name":"web"}': {"f:image": {}}}}}}],
        },
        "spec": {
            "containers": [container],
            "volumes": [{"name": token_volume, "projected": {"sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}],
            "restartPolicy": "Always", "serviceAccountName": "web", "terminationGracePeriodSeconds": 30,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        },
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": f"705ab4f5-6393-11e8-b7cc-{replica:012d}", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "shop", "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                     "groups": ["system:serviceaccounts", "system:authenticated"]},
        "object": pod, "oldObject": None, "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}}}


# ---------------------------------------------------------------------------------------------
# The ceiling server (run in its own process: `webhook_bench.py ceiling ...`).


async def ceiling_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Parse the AdmissionReview, allow it. Nothing else."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    review = orjson.loads(body)  # the same JSON library as the webhook: the ceiling measures the rest
    answer = orjson.dumps({"apiVersion": review["apiVersion"], "kind": review["kind"],
                           "response": {"uid": review["request"]["uid"], "allowed": True}})
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})


def run_ceiling(port: int, cert_file: str, key_file: str) -> None:
    import uvicorn

    uvicorn.run(ceiling_app, host="127.0.0.1", port=port, ssl_certfile=cert_file, ssl_keyfile=key_file,
                log_level="warning", access_log=False, lifespan="off", workers=1)


def run_http_only(argv: list[str]) -> int:
    """``autocrane webhook`` with the injection replaced by a bare allow (the ``http-only`` row)."""
    from webhook import admission, server

    def allow(review: dict[str, Any], settings: object) -> dict[str, Any]:
        return {"apiVersion": review["apiVersion"], "kind": review["kind"],
                "response": {"uid": review["request"]["uid"], "allowed": True}}

    admission.review = allow  # type: ignore[assignment]
    return server.main(argv)


def admission_costs(body: bytes, repeat: int = 300) -> dict[str, float]:
    """Microseconds of CPU per call for the parts of one admission, in this process."""
    from webhook import admission, inject, settings

    injector = settings.load(None, {})
    pod = json.loads(body)["request"]["object"]
    mutated = inject.inject(json.loads(body)["request"]["object"], injector).pod
    parts = {
        "orjson.loads(body)": lambda: orjson.loads(body),
        "inject.inject(pod)": lambda: inject.inject(json.loads(body)["request"]["object"], injector),
        "admission_patch (JSONPatch diff)": lambda: admission.admission_patch(pod, mutated),
        "admission.review, template seen before": lambda: admission.review(orjson.loads(body), injector),
        "admission.review, new template": lambda: (admission.CACHE.clear(),
                                                   admission.review(orjson.loads(body), injector)),
    }
    costs = {}
    for name, call in parts.items():
        for _ in range(repeat // 10):
            call()
        started = time.process_time()
        for _ in range(repeat):
            call()
        costs[name] = (time.process_time() - started) / repeat * 1e6
    return costs


# ---------------------------------------------------------------------------------------------
# The load generator.


@dataclass
class Round:
    name: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """The head and body of one HTTP/1.1 response with a Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head, await reader.readexactly(length)


def request_bytes(body: bytes) -> bytes:
    """``POST /mutate`` with ``body``, as the API server sends it (keep-alive)."""
    return (b"POST /mutate?timeout=10s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Accept: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


async def _client(port: int, context: ssl.SSLContext, requests: list[bytes], deadline: float, budget: list[int],
                  result: Round) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
    try:
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            started = time.perf_counter()
            writer.write(requests[budget[0] % len(requests)])
            head, body = await read_response(reader)
            result.latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 200") or b'"allowed":true' not in body.replace(b" ", b""):
                result.errors += 1
    finally:
        writer.close()


async def load(name: str, port: int, context: ssl.SSLContext, bodies: list[bytes], *, concurrency: int,
               duration: float, max_requests: int) -> Round:
    requests = [request_bytes(body) for body in bodies]
    result = Round(name)
    budget = [max_requests]
    started = time.perf_counter()
    deadline = started + duration
    await asyncio.gather(*(_client(port, context, requests, deadline, budget, result) for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result


async def first_answer(port: int, context: ssl.SSLContext, body: bytes) -> dict[str, Any]:
    result = Round("probe")
    request = (b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nConnection: close\r\n"
               b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
    writer.write(request)
    raw = await reader.read()
    writer.close()
    del result
    answer: dict[str, Any] = json.loads(raw.split(b"\r\n\r\n", 1)[1])
    return answer


# ---------------------------------------------------------------------------------------------
# Orchestration.


WEBHOOK = [sys.executable, "-c", "from autocrane import cli; cli.main()", "webhook"]
"""``autocrane webhook`` from this checkout."""


def serving_certificate(directory: Path) -> tuple[ssl.SSLContext, Path, Path]:
    """A CA-signed certificate for localhost/127.0.0.1 in ``directory``: (client context, cert, key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca = tls.generate_ca(common_name="bench-ca", now=now, validity=datetime.timedelta(days=1))
    leaf = tls.issue_serving_cert(ca, dns_names=["localhost"], ip_addresses=["127.0.0.1"], now=now,
                                  validity=datetime.timedelta(hours=2))
    cert_file, key_file = directory / "tls.crt", directory / "tls.key"
    cert_file.write_bytes(leaf.cert_pem)
    key_file.write_bytes(leaf.key_pem)
    return ssl.create_default_context(cadata=ca.cert_pem.decode()), cert_file, key_file


def webhook_command(program: list[str], port: int, cert_file: Path, key_file: Path) -> list[str]:
    """``program`` (the webhook, or a variant of it) serving TLS on ``port``, as deployed (JSON logs at info,
    to wherever its stderr goes), with no drain delay."""
    return [*program, "--host", "127.0.0.1", "--port", str(port), "--health-port", str(free_port()),
            "--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file),
            "--log-format", "json", "--log-level", "info", "--drain-delay", "0"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_listening(port: int, context: ssl.SSLContext, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise SystemExit(f"server on port {port} exited with {process.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"server on port {port} did not start within 60 s") from None
            await asyncio.sleep(0.1)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(name: str, rounds: list[Round]) -> dict[str, float]:
    latencies = [x for r in rounds for x in r.latencies]
    per_round = [len(r.latencies) / r.seconds for r in rounds]
    return {"requests": len(latencies), "errors": sum(r.errors for r in rounds),
            "rps": statistics.median(per_round), "p50": percentile(latencies, 0.5) * 1000,
            "p99": percentile(latencies, 0.99) * 1000, "max": max(latencies) * 1000}


async def bench(arguments: argparse.Namespace) -> int:
    body = json.dumps(admission_review()).encode()
    # 2,000 replicas of one template (they differ as real ReplicaSet pods do), or as many pods that
    # all differ (--distinct): the webhook's response cache then never hits.
    bodies = [json.dumps(admission_review(i, f"1.42.{i}" if arguments.distinct else "1.42.0")).encode()
              for i in range(arguments.distinct or 2000)]
    with tempfile.TemporaryDirectory(prefix="autocrane-bench-") as scratch:
        context, cert_file, key_file = serving_certificate(Path(scratch))
        ports = {"ceiling": free_port(), "webhook": free_port(), "http-only": free_port()}
        commands = {
            "ceiling": [sys.executable, __file__, "ceiling", "--port", str(ports["ceiling"]),
                        "--cert", str(cert_file), "--key", str(key_file)],
            "webhook": webhook_command(WEBHOOK, ports["webhook"], cert_file, key_file),
            "http-only": webhook_command([sys.executable, __file__, "http-only"], ports["http-only"],
                                         cert_file, key_file),
        }
        processes = {name: subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                     for name, command in commands.items()}
        try:
            for name, process in processes.items():
                await wait_listening(ports[name], context, process)
            answer = await first_answer(ports["webhook"], context, body)
            if answer["response"].get("patchType") != "JSONPatch":
                raise SystemExit(f"the webhook did not inject the benchmark pod: {answer['response']}")
            patch_bytes = len(answer["response"]["patch"])
            for name in ports:  # warm-up: connections, caches, the first JIT-less paths
                await load(name, ports[name], context, bodies, concurrency=arguments.concurrency,
                           duration=arguments.warmup, max_requests=arguments.max_requests)
            rounds: dict[str, list[Round]] = {name: [] for name in ports}
            for _ in range(arguments.rounds):
                for name in ports:
                    rounds[name].append(await load(name, ports[name], context, bodies,
                                                   concurrency=arguments.concurrency, duration=arguments.duration,
                                                   max_requests=arguments.max_requests))
        finally:
            for process in processes.values():
                process.send_signal(signal.SIGTERM)
            for process in processes.values():
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
    results = {name: summary(name, rounds[name]) for name in rounds}
    print(f"POST /mutate over TLS, {arguments.concurrency} keep-alive clients, one server worker each; "
          f"{arguments.rounds} x {arguments.duration:g} s per server, alternating; request {len(body)} bytes, "
          f"injection patch {patch_bytes} bytes (base64); {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; "
          + (f"{len(bodies)} distinct pods (no cached responses)" if arguments.distinct
             else f"{len(bodies)} replicas of one template (a ReplicaSet's burst)"))
    columns = ("requests", "errors", "admissions/s", "p50 ms", "p99 ms", "max ms")
    print(f"{'server':<10} " + " ".join(f"{column:>{max(9, len(column))}}" for column in columns))
    for name, row in results.items():
        print(f"{name:<10} {row['requests']:>9.0f} {row['errors']:>9.0f} {row['rps']:>12.0f} {row['p50']:>9.2f} "
              f"{row['p99']:>9.2f} {row['max']:>9.2f}")
    ratio = results["webhook"]["rps"] / results["ceiling"]["rps"]
    p99 = results["webhook"]["p99"]
    print(f"webhook / ceiling: {ratio:.2f}x (target >= {TARGET_RATIO}x); webhook p99 {p99:.2f} ms "
          f"(target <= {TARGET_P99_MS:g} ms); http-only / ceiling: "
          f"{results['http-only']['rps'] / results['ceiling']['rps']:.2f}x")
    print("CPU per admission, single-threaded, in the load generator's process:")
    for part, micros in admission_costs(body).items():
        print(f"  {part:<36} {micros:>9.0f} us")
    met = ratio >= TARGET_RATIO and p99 <= TARGET_P99_MS and not any(r["errors"] for r in results.values())
    print("targets met" if met else "TARGETS MISSED")
    return 0 if met else 1


def main() -> int:
    if sys.argv[1:2] == ["http-only"]:
        return run_http_only(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    ceiling = sub.add_parser("ceiling", help="(internal) run the bare uvicorn app")
    ceiling.add_argument("--port", type=int, required=True)
    ceiling.add_argument("--cert", required=True)
    ceiling.add_argument("--key", required=True)
    parser.add_argument("--concurrency", type=int, default=16, help="keep-alive clients (default %(default)s)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per round (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per server (default %(default)s)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per server (default %(default)s)")
    parser.add_argument("--distinct", type=int, default=0, metavar="N",
                        help="cycle through N pods that differ (image tag), so no admission repeats a recent "
                        "template: the webhook's response cache never hits (default: one pod, as in a ReplicaSet "
                        "burst)")
    parser.add_argument("--max-requests", type=int, default=100_000, help="cap per round (default %(default)s)")
    arguments = parser.parse_args()
    if arguments.command == "ceiling":
        run_ceiling(arguments.port, arguments.cert, arguments.key)
        return 0
    return asyncio.run(bench(arguments))


if __name__ == "__main__":
    sys.exit(main())
