"""The chart's values, rendered by helm: each one lands where it should (issue 11, item 2).

Rendering needs only the helm binary, no cluster. What installs and runs is in test_platform.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from autocrane import errors
from sidecars.datarepo import config
from tests.cluster import helmkit
from webhook import settings

RELEASE, NAMESPACE = "autocrane", "autocrane-system"  # the README's install
POD_KINDS = ("Deployment", "StatefulSet")


def render(*values: str, files: dict[str, Any] | None = None, tmp: Any = None) -> list[dict[str, Any]]:
    args = [a for v in values for a in ("--set", v)]
    if files is not None:
        path = tmp / "values.yaml"
        path.write_text(json.dumps(files))
        args += ["-f", str(path)]
    result = helmkit.helm("template", RELEASE, str(helmkit.CHART), "-n", NAMESPACE, *args)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def refused(*values: str) -> str:
    result = helmkit.helm("template", RELEASE, str(helmkit.CHART), "-n", NAMESPACE,
                          *[a for v in values for a in ("--set", v)])
    assert result.returncode != 0, "helm accepted it"
    return result.stderr


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def pod_spec(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] in POD_KINDS and d["metadata"]["name"] == name]
    return found["spec"]["template"]


def container(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (first, *_) = pod_spec(docs, name)["spec"]["containers"]
    return first


def injector_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    text = one(docs, "ConfigMap", "autocrane-injector-config")["data"]["injector.yaml"]
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


COMPONENTS = {"webhook": "autocrane-injector", "controller": "autocrane-controller",
              "dataRepository": "autocrane-datarepository"}


def test_the_repository_url_is_wired_into_the_injector_and_the_controller_and_is_the_injectors_default() -> None:
    docs = render()
    url = "http://autocrane-datarepository.autocrane-system.svc:8080"
    assert injector_config(docs)["data_repository_url"] == url
    args = container(docs, "autocrane-controller")["args"]
    assert f"--data-repository={url}" in args
    assert "--data-repository-token-file=/etc/autocrane/data-repository/token" in args
    assert settings.InjectorSettings().data_repository_url == url, "the README's install is the default"
    assert one(docs, "Service", "autocrane-datarepository")["spec"]["ports"][0]["port"] == 8080

    external = render("dataRepository.enabled=false", "dataRepository.externalURL=https://repo.example")
    assert injector_config(external)["data_repository_url"] == "https://repo.example"
    assert "--data-repository=https://repo.example" in container(external, "autocrane-controller")["args"]
    assert not [d for d in external if d["kind"] == "StatefulSet"]
    assert "injector.data_repository_url is set by the chart" in refused("injector.data_repository_url=http://x")


def test_a_changed_sidecar_tag_changes_the_webhooks_pod_template_and_its_pull_policy_is_used() -> None:
    def checksum(docs: list[dict[str, Any]]) -> str:
        return str(pod_spec(docs, "autocrane-injector")["metadata"]["annotations"]["checksum/config"])

    base = render()
    retagged = render("sidecarImage.tag=0.2.0")
    assert injector_config(retagged)["datadeployer_image"] == "autocrane/sidecar:0.2.0"
    assert checksum(retagged) != checksum(base), "the webhook rolls and injects the new image"
    assert checksum(render()) == checksum(base)
    assert injector_config(render("sidecarImage.pullPolicy=Always"))["image_pull_policy"] == "Always"
    digest = "sha256:" + "ab" * 32
    pinned = render(f"sidecarImage.digest={digest}", f"image.digest={digest}", f"dataRepositoryImage.digest={digest}")
    assert injector_config(pinned)["datadeployer_image"] == f"autocrane/sidecar@{digest}"
    assert container(pinned, "autocrane-injector")["image"] == f"autocrane/autocrane@{digest}"
    assert container(pinned, "autocrane-datarepository")["image"] == f"autocrane/datarepository@{digest}"
    assert "digest" in refused("image.digest=latest")


def test_a_changed_datadeployer_status_port_reaches_the_controller() -> None:
    assert not [a for a in container(render(), "autocrane-controller")["args"] if "datadeployer-port" in a]
    docs = render("injector.datadeployer_status_port=8099")
    assert "--datadeployer-port=8099" in container(docs, "autocrane-controller")["args"]
    assert injector_config(docs)["datadeployer_status_port"] == 8099


@pytest.mark.parametrize("replicas, budget", [(1, False), (2, True), (3, True)])
def test_a_single_replica_has_no_pdb_that_would_block_drains(replicas: int, budget: bool) -> None:
    docs = render(f"webhook.replicas={replicas}", f"controller.replicas={replicas}")
    budgets = {d["metadata"]["name"] for d in docs if d["kind"] == "PodDisruptionBudget"}
    assert budgets == ({"autocrane-injector", "autocrane-controller"} if budget else set())


def test_crds_are_templates_behind_install_and_keep() -> None:
    crds = {d["metadata"]["name"]: d for d in render() if d["kind"] == "CustomResourceDefinition"}
    assert set(crds) == {"datarollouts.autocrane.io", "approllouts.autocrane.io"}
    for crd in crds.values():
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert crd["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
    crd = crds["datarollouts.autocrane.io"]
    assert crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["required"] == ["source"]
    dropped = [d for d in render("crds.keep=false") if d["kind"] == "CustomResourceDefinition"]
    assert len(dropped) == 2 and all("annotations" not in d["metadata"] for d in dropped)
    assert not [d for d in render("crds.install=false") if d["kind"] == "CustomResourceDefinition"]
    assert not (helmkit.CHART / "crds").exists(), "helm never upgrades crds/"


def test_every_component_takes_the_pod_values(tmp_path: Any) -> None:
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["system"]}]}]}}}
    spread = [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule"}]
    common = {"podAnnotations": {"example.com/team": "platform"}, "podLabels": {"team": "platform"},
              "affinity": affinity, "topologySpreadConstraints": spread,
              "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
              "extraVolumes": [{"name": "extra", "emptyDir": {}}],
              "extraVolumeMounts": [{"name": "extra", "mountPath": "/extra"}],
              "serviceAccount": {"annotations": {"iam.example.com/role": "autocrane"}},
              "priorityClassName": "system-cluster-critical"}
    docs = render(files={"imagePullSecrets": ["registry"], **{c: common for c in COMPONENTS}}, tmp=tmp_path)
    for name in COMPONENTS.values():
        template = pod_spec(docs, name)
        spec, box = template["spec"], container(docs, name)
        assert template["metadata"]["annotations"]["example.com/team"] == "platform", name
        assert template["metadata"]["labels"]["team"] == "platform", name
        assert spec["imagePullSecrets"] == [{"name": "registry"}] and spec["affinity"] == affinity, name
        assert spec["priorityClassName"] == "system-cluster-critical" and spec["enableServiceLinks"] is False, name
        (constraint,) = spec["topologySpreadConstraints"]
        assert constraint["topologyKey"] == "topology.kubernetes.io/zone", name
        assert constraint["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE, name
        assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in box["env"], name
        assert {"name": "extra", "emptyDir": {}} in spec["volumes"], name
        assert {"name": "extra", "mountPath": "/extra"} in box["volumeMounts"], name
        account = one(docs, "ServiceAccount", spec["serviceAccountName"])
        assert account["metadata"]["annotations"] == {"iam.example.com/role": "autocrane"}, name
    defaults = render()
    (spread_default,) = pod_spec(defaults, "autocrane-injector")["spec"]["topologySpreadConstraints"]
    assert spread_default["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "injector"
    labels = pod_spec(render("webhook.podLabels.app\\.kubernetes\\.io/component=other"),
                      "autocrane-injector")["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "injector", "pod labels never break the selector"


def test_the_data_repository_is_a_restricted_single_replica_statefulset_with_a_volume_and_its_token(
        tmp_path: Any) -> None:
    sources = [{"name": "models", "every": 30, "git": {
        "url": "https://git.example.com/models.git", "tokenFile": "/etc/autocrane/credentials/git/token"}}]
    docs = render(files={"dataRepository": {"sources": sources, "credentialSecrets": ["git"], "persistence": {
        "size": "5Gi", "storageClass": "fast", "keepOnUninstall": False}, "staleAfterSeconds": 600}}, tmp=tmp_path)
    (statefulset,) = [d for d in docs if d["kind"] == "StatefulSet"]
    spec = statefulset["spec"]
    assert spec["replicas"] == 1 and spec["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi" and claim["spec"]["storageClassName"] == "fast"
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["fsGroup"] == 65532 and pod["securityContext"]["runAsNonRoot"]
    assert pod["automountServiceAccountToken"] is False
    box = pod["containers"][0]
    assert box["securityContext"]["readOnlyRootFilesystem"] and box["securityContext"]["capabilities"] == {
        "drop": ["ALL"]}
    assert box["readinessProbe"]["httpGet"]["path"] == "/readyz" and box["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert box["resources"]["limits"]["memory"] == "512Mi"
    assert {"--write-token-file=/etc/autocrane/token/token", "--stale-after=600"} <= set(box["args"])
    assert not [a for a in box["args"] if a.startswith("--token-file")], "reads stay open: datadeployers have no token"
    mounts = {m["mountPath"]: m for m in box["volumeMounts"]}
    assert mounts["/etc/autocrane/credentials/git"]["readOnly"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/etc/autocrane/credentials/git"]["name"]]["secret"]["secretName"] == "git"
    written = yaml.safe_load(one(docs, "ConfigMap", "autocrane-datarepository-sources")["data"]["sources.yaml"])
    (parsed,) = config.parse(written)
    assert parsed.name == "models" and str(parsed.kind.token_file) == "/etc/autocrane/credentials/git/token"  # type: ignore[union-attr]
    token = one(docs, "Secret", "autocrane-datarepository-token")
    assert len(token["data"]["token"]) >= 64
    controller = pod_spec(docs, "autocrane-controller")["spec"]
    (mounted,) = [v for v in controller["volumes"] if v["name"] == "repository-token"]
    assert mounted["secret"]["secretName"] == "autocrane-datarepository-token"

    theirs = render("dataRepository.token.existingSecret=mine")
    assert not [d for d in theirs if d["kind"] == "Secret"]
    for name in ("autocrane-controller", "autocrane-datarepository"):
        assert {"secretName": "mine", "items": [{"key": "token", "path": "token"}]} in [
            v.get("secret") for v in pod_spec(theirs, name)["spec"]["volumes"]]
    assert "defined twice" in refused("dataRepository.sources[0].name=a", "dataRepository.sources[0].directory.path=/a",
                                      "dataRepository.sources[1].name=a", "dataRepository.sources[1].directory.path=/b")


# The schema checks sources as the repository's own parser does: every case, both verdicts.
SOURCES = [
    ({"name": "models", "git": {"url": "https://g/x.git", "ref": "main"}}, True),
    ({"name": "team/models", "every": 0.5, "keep": 3, "directory": {"path": "/data"}}, True),
    ({"name": "words", "http": {"url": "https://e/w.tar.gz", "format": "archive", "tokenFile": "/t"}}, True),
    ({"name": "Models", "directory": {"path": "/d"}}, False),
    ({"name": "a", "git": {"url": "x"}, "http": {"url": "https://y"}}, False),
    ({"name": "a"}, False),
    ({"name": "a", "http": {"url": "ftp://x"}}, False),
    ({"name": "a", "git": {"url": "x", "branch": "main"}}, False),
    ({"name": "a", "directory": {"path": "/x"}, "every": 0}, False),
    ({"name": "a", "directory": {"path": "/x"}, "keep": 0}, False),
    ({"name": "a", "directory": {}}, False),
    ({"name": "a", "git": {"url": "x", "usernameFile": "/u"}}, False),
    ({"name": "a", "http": {"url": "https://x/y", "filename": "a/b"}}, False),
    ({"name": "a", "directory": {"path": "/x"}, "extra": 1}, False),
]


@pytest.mark.parametrize("source, valid", SOURCES)
def test_the_schema_and_the_repository_agree_on_sources(source: dict[str, Any], valid: bool, tmp_path: Any) -> None:
    try:
        config.parse({"sources": [source]})
        parsed = True
    except errors.ConfigError:
        parsed = False
    assert parsed == valid, "the case list is wrong"
    path = tmp_path / "values.yaml"
    path.write_text(json.dumps({"dataRepository": {"sources": [source]}}))
    result = helmkit.helm("template", RELEASE, str(helmkit.CHART), "-n", NAMESPACE, "-f", str(path))
    assert (result.returncode == 0) == valid, result.stderr


def test_the_helm_test_pod_is_restricted_and_uses_the_ca_the_webhook_serves_with() -> None:
    docs = render()
    (pod,) = [d for d in docs if d["kind"] == "Pod"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["automountServiceAccountToken"] is False
    (box,) = pod["spec"]["containers"]
    assert box["securityContext"]["runAsNonRoot"] and box["securityContext"]["readOnlyRootFilesystem"]
    (ca,) = [v for v in pod["spec"]["volumes"] if v["name"] == "ca"]
    assert ca["secret"] == {"secretName": "autocrane-injector-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    own = render("tls.mode=secret", "tls.secretName=s", "tls.caBundle=PEM")
    (configmap,) = [d for d in own if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "autocrane-test"]
    assert configmap["data"]["ca.crt"] == "PEM"
    assert not [d for d in render("tests.enabled=false") if d["kind"] == "Pod"]


def test_the_webhook_owns_its_ca_secret_with_the_least_rbac_that_needs() -> None:
    docs = render()
    assert "--ca-secret-owner-deployment=autocrane-injector" in container(docs, "autocrane-injector")["args"]
    role = one(docs, "Role", "autocrane-injector")
    assert {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["autocrane-injector"],
            "verbs": ["get"]} in role["rules"]
    lease_role = one(docs, "Role", "autocrane-controller-lease")
    assert lease_role["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                                    "resourceNames": ["autocrane-controller"], "verbs": ["get", "update"]}]
    assert one(docs, "Lease", "autocrane-controller")["spec"] == {}, "the chart's, so uninstall removes it"
