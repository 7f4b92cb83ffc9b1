"""A watchdog without an answer: since when, and the policy that makes a long silence an error."""

from __future__ import annotations

from controller.watchdogs import health, unanswered
from tests.controller.podfactory import T0, pod

SILENT = health.ProbeResult("unknown", "no answer within 5s")
OK = health.ProbeResult("ok")


def test_the_first_silent_pass_is_kept_while_the_watchdog_stays_silent_and_dropped_once_it_answers() -> None:
    web = pod("web")
    since = unanswered.observe({}, [web], {web.uid: {"app": SILENT}}, T0)
    since = unanswered.observe(since, [web], {web.uid: {"app": SILENT}}, T0 + 10)
    assert since == {(web.uid, "app"): T0}
    assert unanswered.observe(since, [web], {web.uid: {"app": OK}}, T0 + 20) == {}


def test_pods_that_cannot_be_probed_or_are_gone_do_not_count() -> None:
    pending, leaving, web = pod("pending", phase="Pending"), pod("leaving", terminating=True), pod("web")
    results = {p.uid: {"app": SILENT} for p in (pending, leaving, web)}
    since = unanswered.observe({}, [pending, leaving, web], results, T0)
    assert since == {(web.uid, "app"): T0}
    assert unanswered.observe(since, [], results, T0 + 10) == {}


def test_without_the_policy_unknown_stays_unknown_however_long() -> None:
    web = pod("web")
    results = {web.uid: {"app": SILENT}}
    assert unanswered.as_errors(results, {(web.uid, "app"): T0}, T0 + 86400, None) == results


def test_with_the_policy_a_silence_of_the_limit_is_an_error_with_a_message_that_does_not_change() -> None:
    web = pod("web")
    results = {web.uid: {"app": SILENT, "other": OK}}
    since = {(web.uid, "app"): T0}
    assert unanswered.as_errors(results, since, T0 + 59, 60) == results
    at_limit = unanswered.as_errors(results, since, T0 + 60, 60)
    later = unanswered.as_errors(results, since, T0 + 600, 60)
    assert at_limit[web.uid]["app"] == later[web.uid]["app"] == health.ProbeResult(
        "error", "no answer for more than 60s (no answer within 5s)")
    assert at_limit[web.uid]["other"] == OK


def test_the_longest_silence_per_pod() -> None:
    web, db = pod("web"), pod("db")
    since = {(web.uid, "a"): T0, (web.uid, "b"): T0 + 30, ("gone", "a"): T0 - 100}
    assert unanswered.longest(since, [web, db], T0 + 60) == {web.uid: 60.0}
