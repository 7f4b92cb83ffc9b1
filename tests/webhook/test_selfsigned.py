"""Self-signed mode: the CA Secret, the caBundle patch, and serving-certificate renewal.

The pure patch computation is tested with plain dicts. The loop runs against a small in-memory
stand-in for the two API objects it touches, which keeps the API server's rules that matter here:
create fails with AlreadyExists, an update with a stale resourceVersion fails with Conflict, and a
JSON patch whose ``test`` fails is refused whole (applied with the ``jsonpatch`` library).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
from typing import Any

import jsonpatch
import pytest

from autocrane import errors
from tests import waiting
from tests.webhook import tlstools
from webhook import selfsigned, tls

DAY = datetime.timedelta(days=1)
NOW = tlstools.NOW
Body = dict[str, Any]


def _mwc(*bundles: bytes | None, service: str = "autocrane-webhook") -> Body:
    webhooks = []
    for index, bundle in enumerate(bundles):
        client_config: Body = {"service": {"namespace": "autocrane", "name": service, "path": "/mutate"}}
        if bundle is not None:
            client_config["caBundle"] = base64.b64encode(bundle).decode()
        webhooks.append({"name": f"w{index}.autocrane.io", "clientConfig": client_config})
    return {"metadata": {"name": "autocrane", "resourceVersion": "7"}, "webhooks": webhooks}


def _bundle(configuration: Body, index: int = 0) -> bytes:
    return base64.b64decode(configuration["webhooks"][index]["clientConfig"]["caBundle"])


# The pure patch


def test_the_patch_sets_a_missing_ca_bundle_and_tests_the_resource_version() -> None:
    ca = tlstools.new_ca(now=NOW)
    patch = selfsigned.ca_bundle_patch(_mwc(None), ca.cert_pem, namespace="autocrane", service="autocrane-webhook",
                                       now=NOW)
    assert patch[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "7"}
    assert patch[1]["op"] == "add" and patch[1]["path"] == "/webhooks/0/clientConfig/caBundle"
    assert base64.b64decode(patch[1]["value"]) == ca.cert_pem


def test_no_patch_when_every_bundle_already_holds_the_ca() -> None:
    ca = tlstools.new_ca(now=NOW)
    assert selfsigned.ca_bundle_patch(_mwc(ca.cert_pem, ca.cert_pem), ca.cert_pem, namespace="autocrane",
                                      service="autocrane-webhook", now=NOW) == []


def test_the_patch_merges_old_and_new_ca_during_a_rotation() -> None:
    old, new = tlstools.new_ca("old", now=NOW), tlstools.new_ca("new", now=NOW)
    patch = selfsigned.ca_bundle_patch(_mwc(old.cert_pem), new.cert_pem, namespace="autocrane",
                                       service="autocrane-webhook", now=NOW)
    assert base64.b64decode(patch[1]["value"]) == old.cert_pem + new.cert_pem


def test_webhooks_of_another_service_are_left_alone() -> None:
    ca = tlstools.new_ca(now=NOW)
    configuration = _mwc(None)
    configuration["webhooks"].append({"name": "url", "clientConfig": {"url": "https://elsewhere/"}})
    configuration["webhooks"].extend(_mwc(None, service="someone-else")["webhooks"])
    patch = selfsigned.ca_bundle_patch(configuration, ca.cert_pem, namespace="autocrane",
                                       service="autocrane-webhook", now=NOW)
    assert [op["path"] for op in patch[1:]] == ["/webhooks/0/clientConfig/caBundle"]


def test_a_bundle_that_is_not_base64_is_replaced() -> None:
    ca = tlstools.new_ca(now=NOW)
    configuration = _mwc(None)
    configuration["webhooks"][0]["clientConfig"]["caBundle"] = "%%%"
    patch = selfsigned.ca_bundle_patch(configuration, ca.cert_pem, namespace="autocrane",
                                       service="autocrane-webhook", now=NOW)
    assert base64.b64decode(patch[1]["value"]) == ca.cert_pem


def test_the_certificate_names_are_the_service_names_plus_extras() -> None:
    settings = selfsigned.SelfSignedSettings("autocrane", "hook", "autocrane",
                                             extra_names=("127.0.0.1", "hook.example"))
    assert settings.dns_names() == ["hook", "hook.autocrane", "hook.autocrane.svc", "hook.autocrane.svc.cluster.local",
                                    "hook.example"]
    assert settings.ip_addresses() == ["127.0.0.1"]


# The loop, against an in-memory API


class MemoryApi:
    """Secrets and MutatingWebhookConfigurations with resourceVersions (see the module docstring)."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], Body] = {}
        self.configurations: dict[str, Body] = {}
        self.version = 100
        self.patches = 0
        self.before_create: list[Body] = []  # Secrets another replica creates just before ours
        self.deployments: dict[tuple[str, str], Body] = {}

    def _bump(self, body: Body) -> Body:
        self.version += 1
        body.setdefault("metadata", {})["resourceVersion"] = str(self.version)
        return copy.deepcopy(body)

    async def get_secret(self, namespace: str, name: str) -> Body:
        if (namespace, name) not in self.secrets:
            raise errors.NotFound(f"secret {name}", status=404)
        return copy.deepcopy(self.secrets[namespace, name])

    async def create_secret(self, namespace: str, body: Body) -> Body:
        for racer in self.before_create:
            self.secrets[namespace, racer["metadata"]["name"]] = self._bump(copy.deepcopy(racer))
        self.before_create.clear()
        key = (namespace, body["metadata"]["name"])
        if key in self.secrets:
            raise errors.AlreadyExists("exists", status=409, reason="AlreadyExists")
        self.secrets[key] = self._bump(copy.deepcopy(body))
        return copy.deepcopy(self.secrets[key])

    async def replace_secret(self, namespace: str, body: Body) -> Body:
        key = (namespace, body["metadata"]["name"])
        if self.secrets[key]["metadata"]["resourceVersion"] != body["metadata"].get("resourceVersion"):
            raise errors.Conflict("stale", status=409, reason="Conflict")
        self.secrets[key] = self._bump(copy.deepcopy(body))
        return copy.deepcopy(self.secrets[key])

    async def get_deployment(self, namespace: str, name: str) -> Body:
        if (namespace, name) not in self.deployments:
            raise errors.NotFound(f"deployment {name}", status=404)
        return copy.deepcopy(self.deployments[namespace, name])

    async def get_mutating_webhook_configuration(self, name: str) -> Body:
        if name not in self.configurations:
            raise errors.NotFound(name, status=404)
        return copy.deepcopy(self.configurations[name])

    async def json_patch_mutating_webhook_configuration(self, name: str, operations: list[Body]) -> Body:
        try:
            patched = jsonpatch.apply_patch(self.configurations[name], operations)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise errors.Invalid(f"patch refused: {exc}", status=422, reason="Invalid") from None
        self.patches += 1
        self.configurations[name] = self._bump(patched)
        return copy.deepcopy(patched)


class Clock:
    def __init__(self, now: datetime.datetime) -> None:
        self.now = now

    def __call__(self) -> datetime.datetime:
        return self.now


def _replica(api: MemoryApi, clock: Clock, owner: str | None = None) -> selfsigned.SelfSigned:
    settings = selfsigned.SelfSignedSettings(namespace="autocrane", service="autocrane-webhook",
                                             webhook_config_name="autocrane", extra_names=("127.0.0.1",),
                                             owner_deployment=owner)
    return selfsigned.SelfSigned(api, tls.CertReloader(), settings, clock=clock)


@pytest.fixture
def api() -> MemoryApi:
    memory = MemoryApi()
    memory.configurations["autocrane"] = _mwc(None)
    return memory


def _secret_ca(api: MemoryApi) -> bytes:
    return base64.b64decode(api.secrets["autocrane", "autocrane-webhook-ca"]["data"]["ca.crt"])


def test_the_first_pass_creates_the_ca_sets_the_bundle_and_serves_a_cert_it_signed(api: MemoryApi) -> None:
    # Real time: the reloader refuses certificates that have expired by the wall clock.
    replica = _replica(api, Clock(datetime.datetime.now(datetime.UTC)))
    asyncio.run(replica.step())
    ca_pem = _secret_ca(api)
    assert _bundle(api.configurations["autocrane"]) == ca_pem
    assert replica.serving is not None and tls.signed_by(replica.serving.cert_pem, ca_pem)
    assert replica.reloader.ready()
    assert "autocrane-webhook.autocrane.svc" in replica.reloader.current.dns_names  # type: ignore[union-attr]
    assert replica.reloader.current.ip_addresses == ("127.0.0.1",)  # type: ignore[union-attr]


def test_a_second_pass_changes_nothing(api: MemoryApi) -> None:
    replica = _replica(api, Clock(datetime.datetime.now(datetime.UTC)))
    asyncio.run(replica.step())
    serial, patches = replica.reloader.current.serial, api.patches  # type: ignore[union-attr]
    asyncio.run(replica.step())
    assert replica.reloader.current.serial == serial and api.patches == patches  # type: ignore[union-attr]


def test_the_ca_secret_is_owned_by_the_webhooks_deployment_so_deleting_it_deletes_the_secret(
        api: MemoryApi) -> None:
    clock = Clock(datetime.datetime.now(datetime.UTC))
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ac-injector", "uid": "u-1"}
    unowned = _replica(api, clock)  # an older webhook made the Secret without an owner
    asyncio.run(unowned.step())
    ca = _secret_ca(api)
    assert "ownerReferences" not in api.secrets["autocrane", "autocrane-webhook-ca"]["metadata"]

    replica = _replica(api, clock, owner="ac-injector")
    asyncio.run(replica.step())  # the Deployment cannot be read yet: served all the same, no owner
    assert replica.reloader.ready()
    assert "ownerReferences" not in api.secrets["autocrane", "autocrane-webhook-ca"]["metadata"]
    api.deployments["autocrane", "ac-injector"] = {"metadata": {"name": "ac-injector", "uid": "u-1"}}
    asyncio.run(replica.step())
    secret = api.secrets["autocrane", "autocrane-webhook-ca"]
    assert secret["metadata"]["ownerReferences"] == [owner] and _secret_ca(api) == ca, "owned, same CA"
    version = secret["metadata"]["resourceVersion"]
    asyncio.run(replica.step())
    assert api.secrets["autocrane", "autocrane-webhook-ca"]["metadata"]["resourceVersion"] == version

    api.secrets.clear()  # a new install: the Secret is created owned
    asyncio.run(_replica(api, clock, owner="ac-injector").step())
    assert api.secrets["autocrane", "autocrane-webhook-ca"]["metadata"]["ownerReferences"] == [owner]


def test_two_replicas_racing_to_create_the_ca_end_up_with_the_same_one(api: MemoryApi) -> None:
    clock = Clock(datetime.datetime.now(datetime.UTC))
    first, second = _replica(api, clock), _replica(api, clock)
    asyncio.run(first.step())
    winner = copy.deepcopy(api.secrets.pop(("autocrane", "autocrane-webhook-ca")))
    api.before_create.append(winner)  # the other replica creates it between our read and our create
    asyncio.run(second.step())
    ca_pem = base64.b64decode(winner["data"]["ca.crt"])
    assert _secret_ca(api) == ca_pem
    assert second.serving is not None and tls.signed_by(second.serving.cert_pem, ca_pem)


def test_the_serving_cert_is_renewed_at_two_thirds_of_its_life(api: MemoryApi) -> None:
    clock = Clock(datetime.datetime.now(datetime.UTC))
    replica = _replica(api, clock)
    asyncio.run(replica.step())
    first = replica.serving
    assert first is not None
    clock.now = tls.renewal_time(first.cert_pem) - datetime.timedelta(seconds=1)
    assert replica.serving_cert_due(tls.KeyPair(_secret_ca(api), b""), clock.now) is None
    clock.now = tls.renewal_time(first.cert_pem)
    assert replica.serving_cert_due(tls.KeyPair(_secret_ca(api), b""), clock.now) == "2/3 of its life passed"


def test_the_ca_is_rotated_at_two_thirds_of_its_life_and_the_bundle_keeps_the_old_one(api: MemoryApi) -> None:
    clock = Clock(datetime.datetime.now(datetime.UTC))
    replica = _replica(api, clock)
    asyncio.run(replica.step())
    old_ca = _secret_ca(api)
    clock.now = tls.renewal_time(old_ca) - datetime.timedelta(seconds=1)
    assert asyncio.run(replica.ensure_ca(clock.now)).cert_pem == old_ca
    clock.now = tls.renewal_time(old_ca)
    rotated = asyncio.run(replica.ensure_ca(clock.now))
    assert rotated.cert_pem != old_ca and _secret_ca(api) == rotated.cert_pem
    assert asyncio.run(replica.ensure_ca_bundle(rotated, clock.now))
    assert _bundle(api.configurations["autocrane"]) == old_ca + rotated.cert_pem


def test_a_replica_follows_a_ca_another_replica_rotated(api: MemoryApi) -> None:
    replica = _replica(api, Clock(datetime.datetime.now(datetime.UTC)))
    asyncio.run(replica.step())
    old_ca = _secret_ca(api)
    rotated = tlstools.new_ca("rotated-elsewhere")
    secret = api.secrets["autocrane", "autocrane-webhook-ca"]
    secret["data"] = {"ca.crt": base64.b64encode(rotated.cert_pem).decode(),
                      "ca.key": base64.b64encode(rotated.key_pem).decode()}
    assert replica.serving_cert_due(rotated, replica.clock()) == "the CA changed"
    asyncio.run(replica.step())
    assert _bundle(api.configurations["autocrane"]) == old_ca + rotated.cert_pem
    assert replica.serving is not None and tls.signed_by(replica.serving.cert_pem, rotated.cert_pem)


def test_a_concurrent_change_of_the_configuration_makes_the_patch_fail_and_retry(api: MemoryApi) -> None:
    replica = _replica(api, Clock(datetime.datetime.now(datetime.UTC)))
    ca = asyncio.run(replica.ensure_ca(replica.clock()))
    stale = copy.deepcopy(api.configurations["autocrane"])
    api.configurations["autocrane"]["metadata"]["resourceVersion"] = "8"  # changed after we read it
    operations = selfsigned.ca_bundle_patch(stale, ca.cert_pem, namespace="autocrane",
                                            service="autocrane-webhook", now=replica.clock())
    with pytest.raises(errors.KubeError):
        asyncio.run(api.json_patch_mutating_webhook_configuration("autocrane", operations))
    assert asyncio.run(replica.ensure_ca_bundle(ca, replica.clock()))  # the next pass reads afresh


def test_a_missing_webhook_configuration_is_not_an_error(api: MemoryApi) -> None:
    del api.configurations["autocrane"]
    replica = _replica(api, Clock(datetime.datetime.now(datetime.UTC)))
    asyncio.run(replica.step())
    assert replica.reloader.ready()


def test_the_loop_retries_a_failed_pass_until_it_serves(api: MemoryApi) -> None:
    class Flaky(MemoryApi):
        failures = 2

        async def get_secret(self, namespace: str, name: str) -> Body:
            if self.failures:
                self.failures -= 1
                raise errors.NoAnswer("connection refused")
            return await super().get_secret(namespace, name)

    flaky = Flaky()
    flaky.configurations = api.configurations
    settings = selfsigned.SelfSignedSettings(namespace="autocrane", service="autocrane-webhook",
                                             webhook_config_name="autocrane", retry_interval=0.01)
    replica = selfsigned.SelfSigned(flaky, tls.CertReloader(), settings)

    async def scenario() -> None:
        loop = asyncio.create_task(replica.run())

        async def serving() -> bool:
            return replica.reloader.ready()

        await waiting.eventually("a certificate after the failed passes", serving)
        loop.cancel()

    asyncio.run(scenario())
    assert flaky.failures == 0
