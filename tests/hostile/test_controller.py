"""Hostile pods against the controller (issue 8, defects 1, 2 and 7): a whole pass always completes,
the failing pod beside a hostile one is still evicted, and a data rollout elsewhere still steps."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import http.server
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autocrane import clock, inpod, manifests, untrusted, watchdogs
from controller import passes, pods
from controller.apiserver import informer
from controller.commands import status as status_table
from controller.datarollouts import decision as datarollout
from controller.datarollouts import loop as datarollouts
from controller.datarollouts import participants, resource
from controller.watchdogs import health, probing
from tests.controller.datarollouts.test_loop import FakeApi, FakeRepo, FakeWriter
from tests.controller.podfactory import T0, raw
from tests.hostile import controllerfakes as fakes
from tests.hostile import values


def _pass(ctl: passes.Controller) -> passes.Report:
    return asyncio.run(ctl.run_pass())


def _assert_neighbours_handled(api: fakes.Api, report: passes.Report) -> None:
    assert "ns/victim" in report.evicted and set(api.evicted()) == {"victim"}
    assert set(fakes.requested_in(api, "reader")) == {"b"}, "the rollout of namespace data must take its first step"


# --- defect 1: one pod stopped every pass -------------------------------------------------------------

@pytest.mark.parametrize("value", [f"error/{values.LATE}/m", f"error/{values.EARLY}/m"])
def test_a_status_time_out_of_range_in_utc_neither_fails_the_pass_nor_stops_another_eviction(value: str) -> None:
    api = fakes.Api()
    pod = fakes.hostile({"status.autocrane.io/posted": value, "probe.autocrane.io/x": "POD_IP:8080/w"})
    ctl = fakes.controller([pod, *fakes.neighbours()], fakes.Prober(), api)
    report = _pass(ctl)
    _assert_neighbours_handled(api, report)
    assert report.faults == 0
    (patch,) = api.pod_patches("hostile")
    assert patch["metadata"]["labels"] == {"status.autocrane.io/health": "error"}  # unreadable counts as error
    assert patch["metadata"]["annotations"]["status.autocrane.io/x"].startswith("info/")  # the probe said ok


def test_an_unexpected_error_in_one_pods_handling_is_logged_once_and_the_pass_goes_on(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    real_change = health.change

    def change(pod: pods.Pod, *args: Any) -> health.Change | None:
        if pod.name == "hostile":
            raise RuntimeError("a bug nobody foresaw")
        return real_change(pod, *args)

    monkeypatch.setattr(health, "change", change)
    api = fakes.Api()
    pod = fakes.hostile({"probe.autocrane.io/x": "POD_IP:8080/w", "data.autocrane.io/model": "models"})
    ctl = fakes.controller([pod, *fakes.neighbours()], fakes.Prober(), api)
    with caplog.at_level(logging.ERROR, logger="controller.isolation"):
        first, second = _pass(ctl), _pass(ctl)
    _assert_neighbours_handled(api, first)
    assert first.faults == second.faults == 1
    assert api.pod_patches("hostile") == [], "left out of the pass: nothing is written on it"
    lines = [r for r in caplog.records if r.name == "controller.isolation"]
    assert len(lines) == 1, "logged once, not every pass"
    assert lines[0].object == "uid-ns-hostile" and lines[0].pod == "ns/hostile" and lines[0].step == "status"
    assert "a bug nobody foresaw" in lines[0].error and lines[0].exc_info is not None


def test_an_unexpected_error_in_one_rollout_leaves_the_other_rollouts_stepping(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    real_step = datarollout.step

    def step(spec: datarollout.Spec, *args: Any, **kwargs: Any) -> datarollout.Step:
        if spec.source == "broken":
            raise ZeroDivisionError("a bug in one rollout")
        return real_step(spec, *args, **kwargs)

    monkeypatch.setattr(datarollout, "step", step)
    repo = FakeRepo()
    real_manifest = repo.manifest

    async def manifest() -> dict[str, manifests.SourceManifest]:
        found = await real_manifest()
        return found | {"broken": dataclasses.replace(found["models"], source="broken")}

    repo.manifest = manifest  # type: ignore[method-assign]
    api = fakes.Api()
    pod = fakes.hostile({"data.autocrane.io/model": "broken"}, namespace="data")
    ctl = fakes.controller([pod, *fakes.neighbours()], fakes.Prober(), api, repo=repo)
    with caplog.at_level(logging.ERROR, logger="controller.isolation"):
        report = _pass(ctl)
    _assert_neighbours_handled(api, report)
    assert report.faults == 1
    assert [r.step for r in caplog.records if r.name == "controller.isolation"] == ["rollout"]


def test_a_pod_that_cannot_be_decoded_is_left_out_of_the_store_and_the_informer_goes_on() -> None:
    def decode(obj: dict[str, Any]) -> pods.Pod:
        if obj["metadata"]["name"] == "odd":
            raise TypeError("not a pod as we know it")
        return pods.from_json(obj)

    store = informer.PodInformer(api=None, decode=decode)  # type: ignore[arg-type]
    for name in ("odd", "fine"):
        store.apply({"type": "ADDED", "object": raw(name)})
    assert list(store.store) == ["ns/fine"]
    store.apply({"type": "MODIFIED", "object": raw("odd")})
    store.apply({"type": "DELETED", "object": raw("fine")})
    assert store.store == {}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(notes=values.annotation_maps(), body=values.STATUS_BODIES, phase=st.sampled_from(["Running", "Pending"]))
def test_any_annotations_and_status_answer_of_one_pod_leave_the_pass_whole(
        notes: dict[str, str], body: bytes, phase: str) -> None:
    """Defects 1 and 2 as a property: whatever one pod carries and answers, the pass completes, handles
    the pod through the decoders (no fault reaches the isolation net), evicts the failing neighbour
    and steps the rollout of another namespace."""
    api = fakes.Api()
    pod = fakes.hostile(notes)
    pod["status"]["phase"] = phase
    ctl = fakes.controller([pod, *fakes.neighbours()], fakes.Prober(bodies={"127.16.9.9": body}), api)
    report = _pass(ctl)
    _assert_neighbours_handled(api, report)
    assert report.faults == 0
    for _, _, written in api.writes:
        assert len(json.dumps(written)) < 16_384, "nothing hostile is mirrored whole into a write"


# --- defect 2: a datadeployer's /status answer aborted the data-rollout pass ---------------------------

class _Answer(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        for start in range(0, len(self.body), 4096):  # in pieces, as a slow peer would
            self.wfile.write(self.body[start:start + 4096])
            self.wfile.flush()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def _serving(body: bytes) -> Iterator[str]:
    handler = type("Handler", (_Answer,), {"body": body})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}/status"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _get_json(url: str) -> object | None:
    async def run() -> object | None:
        async with probing.Prober(timeout=5) as prober:
            return await prober.get_json(url)

    return asyncio.run(run())


def test_a_status_answer_nested_5000_deep_is_no_answer_not_a_recursion_error() -> None:
    with _serving(values.BRACKETS_5000.encode()) as url:
        assert _get_json(url) is None


def test_a_status_answer_is_read_whole_in_pieces_and_refused_past_its_limit() -> None:
    sets = {f"set-{i}": {"version": "a", "deployedAt": "2026-03-01T10:00:00Z"} for i in range(400)}
    body = json.dumps({"sets": sets}).encode()
    assert 20_000 < len(body) < probing.MAX_STATUS_BYTES
    with _serving(body) as url:
        assert _get_json(url) == {"sets": sets}
    with _serving(b" " * probing.MAX_STATUS_BYTES + b"{}") as url:
        assert _get_json(url) is None


class _Prober:
    concurrency = 4

    def __init__(self, sets: dict[str, Any]) -> None:
        self.sets = sets

    async def datadeployer_status(self, pod: pods.Pod, port: int) -> object | None:
        return {"sets": self.sets}


def _rollouts(sets: dict[str, Any], time: clock.ManualClock) -> tuple[datarollouts.DataRollouts, FakeWriter]:
    api = FakeApi()
    fake_writer = FakeWriter(api)
    rollouts = datarollouts.DataRollouts(api, FakeRepo(), _Prober(sets), fake_writer,  # type: ignore[arg-type]
                                         policy=datarollout.Policy(stages=("100%",), bake_seconds=60),
                                         time=time)
    return rollouts, fake_writer


def _members(request: str | None = None) -> list[pods.Pod]:
    notes = {"data.autocrane.io/model": "models"}
    if request:
        notes["request.data.autocrane.io/model"] = request
    return [pods.from_json(raw("web-1", annotations=notes))]


def test_a_deployed_at_out_of_range_in_utc_is_no_time_and_the_rollout_pass_completes() -> None:
    rollouts, fake_writer = _rollouts({"model": {"version": "a", "deployedAt": values.LATE}}, clock.ManualClock(T0))
    patches: list[dict[str, str | None]] = []
    real_write = fake_writer.write_data

    async def write_data(pod: pods.Pod, changes: dict[str, str | None]) -> str:
        patches.append(changes)
        return await real_write(pod, changes)

    fake_writer.write_data = write_data  # type: ignore[method-assign]
    report = asyncio.run(rollouts.run_pass(_members(), lambda: True))
    assert report.faults == 0 and report.requests == 1
    assert json.loads(patches[0]["status.data.autocrane.io/model"] or "") == {"version": "a", "deployedAt": None}


def test_a_deployed_at_in_the_future_does_not_keep_the_stage_baking() -> None:
    time = clock.ManualClock(T0)
    future = (dt.datetime.fromtimestamp(T0, dt.UTC) + dt.timedelta(days=3650)).isoformat()
    rollouts, fake_writer = _rollouts({"model": {"version": "b", "deployedAt": future}}, time)
    asyncio.run(rollouts.run_pass(_members(), lambda: True))  # starts b: the stage's clock starts at T0
    assert fake_writer.writes[1] == ("status", "Progressing")
    time.advance(120)  # past the bake time; the pod took b and says it went live ten years from now
    asyncio.run(rollouts.run_pass(_members(manifests.DataRequest("b", "2" * 64).to_annotation()), lambda: True))
    assert fake_writer.api.rollouts[0]["status"]["phase"] == "Succeeded"


def test_a_deployed_at_within_the_clock_skew_still_counts() -> None:
    ahead = untrusted.rfc3339(T0 + inpod.MAX_CLOCK_SKEW / 2)
    (ack,) = inpod.parse_acks({"sets": {"model": {"version": "b", "deployedAt": ahead}}}, now=T0).values()
    assert ack.deployed_at == untrusted.timestamp(ahead)


def test_a_100_kb_version_or_error_is_no_acknowledgement_and_is_never_mirrored() -> None:
    body = {"sets": {"model": {"version": "v" * 100_000, "error": "e" * 100_000}}}
    (ack,) = inpod.parse_acks(body, now=T0).values()
    assert ack.version is None and len(ack.error or "") == inpod.MAX_ACK_ERROR
    assert participants.ack_annotations(_members()[0], {"model": ack}) == {}


@pytest.mark.parametrize("seconds", [1e300, -1e300, float("nan"), float("inf"), 253402300800.0, -62135596801.0])
def test_an_api_timestamp_is_written_for_any_seconds_without_raising(seconds: float) -> None:
    text = untrusted.rfc3339(seconds)
    assert untrusted.timestamp(text) is not None


def test_a_bake_time_past_year_9999_does_not_fail_the_step() -> None:
    members = _members(manifests.DataRequest("b", "2" * 64).to_annotation())
    running = datarollout.State(progress=datarollout.Progressing("b", 0, T0, T0), last_known_good="a")
    one = datarollout.step(datarollout.Spec(source="models", bake_seconds=1e300, stages=("100%",)), running,
                       asyncio.run(FakeRepo().manifest())["models"], members,
                       {members[0].uid: {"model": inpod.Ack("b", T0)}}, T0 + 10)
    assert one.state.message == "stage 1/1: baking until 9999-12-31T23:59:59Z"


def test_autocrane_status_shows_a_deep_acknowledgement_as_invalid() -> None:
    pod = raw("web-1", annotations={"data.autocrane.io/model": "models",
                                    "status.data.autocrane.io/model": values.DEEP})
    assert "model=-/invalid" in status_table.table([pod], dt.datetime.now(dt.UTC))


# --- defect 7: validators that accepted a trailing newline ---------------------------------------------

def test_a_stage_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(ValueError, match="stage"):
        datarollout.check_stages(["1\n", "100%"])


def test_a_source_with_a_trailing_newline_gets_no_object_name_with_a_newline() -> None:
    assert "\n" not in resource.object_name("models\n") and resource.object_name("models") == "models"


def test_a_watchdog_name_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(watchdogs.WatchdogError):
        watchdogs.check_name("app\n")
    assert probing.target("POD_IP:80/w", "10.0.0.1") == "http://10.0.0.1:80/w"


def test_a_request_over_4_kib_is_no_request_even_when_it_is_well_formed() -> None:
    padded = json.dumps({"version": "b", "padding": "x" * manifests.MAX_REQUEST_BYTES})
    with pytest.raises(manifests.ManifestError, match=r"request\.data\.autocrane\.io/model"):
        manifests.parse_request(padded, "request.data.autocrane.io/model")
    assert participants.requested(_members(padded)[0], "model") is None


def test_a_probe_target_is_matched_whole() -> None:
    assert isinstance(probing.target("POD_IP:80/w\nx", "10.0.0.1"), health.ProbeResult)
