"""``autocrane inject -f``: the CLI over files and stdin, multi-document, workloads, and refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from webhook import containers

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: one
  annotations:
    data.autocrane.io/models: models/resnet
spec:
  containers:
  - {name: app, image: app:1}
"""


def autocrane(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from autocrane import cli; cli.main()", *args],
                          input=stdin, capture_output=True, text=True, timeout=60)


def container_names(pod_spec: dict) -> list[str]:  # type: ignore[type-arg]
    return [c["name"] for c in pod_spec.get("initContainers", []) + pod_spec["containers"]]


def test_a_multi_document_stream_from_stdin_comes_out_as_multi_document_yaml() -> None:
    second = POD.replace("name: one", "name: two")
    result = autocrane("inject", "-f", "-", stdin=f"{POD}---\n{second}---\napiVersion: v1\nkind: Namespace\n"
                                                  "metadata: {name: ns}\n")
    assert result.returncode == 0, result.stderr
    documents = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in documents] == ["Pod", "Pod", "Namespace"]
    for pod in documents[:2]:
        assert container_names(pod["spec"]) == [containers.DATADEPLOYER_INIT, "app", containers.DATADEPLOYER]
    assert documents[2] == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}}


def test_a_deployment_file_gets_its_pod_template_injected(tmp_path: Path) -> None:
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                  "spec": {"template": yaml.safe_load(POD)}}
    (tmp_path / "web.yaml").write_text(yaml.safe_dump(deployment))
    result = autocrane("inject", "-f", str(tmp_path / "web.yaml"))
    assert result.returncode == 0, result.stderr
    (out,) = yaml.safe_load_all(result.stdout)
    assert container_names(out["spec"]["template"]["spec"]) == [containers.DATADEPLOYER_INIT, "app",
                                                                containers.DATADEPLOYER]


def test_a_cronjob_gets_its_job_template_injected_with_native_sidecars() -> None:
    template = yaml.safe_load(POD)
    template["spec"]["restartPolicy"] = "Never"
    cronjob = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
               "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": template}}}}
    result = autocrane("inject", "-f", "-", stdin=yaml.safe_dump(cronjob))
    assert result.returncode == 0, result.stderr
    spec = yaml.safe_load(result.stdout)["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert container_names(spec) == [containers.DATADEPLOYER, "app"]
    assert spec["initContainers"][0]["restartPolicy"] == "Always"


def test_an_invalid_annotation_exits_1_with_the_webhook_message_naming_the_document() -> None:
    bad = POD.replace("name: one", "name: bad") + "---\n" + POD.replace(
        "data.autocrane.io/models: models/resnet", "store.autocrane.io/location: relative\n"
        "    data.autocrane.io/models: models/resnet")
    result = autocrane("inject", "-f", "-", stdin=bad)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == ('error: document 2 (Pod one): annotation "store.autocrane.io/location": '
                                     '"relative" is not valid: expected an absolute path like /data')


def test_warnings_go_to_stderr_and_the_output_stays_clean() -> None:
    result = autocrane("inject", "-f", "-", stdin=POD.replace("annotations:", "annotations:\n    x.autocrane.io/y: z"))
    assert result.returncode == 0
    assert 'warning: document 1 (Pod one): unknown annotation "x.autocrane.io/y"' in result.stderr
    assert yaml.safe_load(result.stdout)["kind"] == "Pod"


def test_a_config_file_changes_what_is_injected(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("datadeployer_image: registry.example/sidecar:9\n")
    result = autocrane("inject", "-f", "-", "--config", str(tmp_path / "config.yaml"), stdin=POD)
    assert result.returncode == 0, result.stderr
    assert {c["image"] for c in yaml.safe_load(result.stdout)["spec"]["initContainers"]} == {
        "registry.example/sidecar:9"}


def test_bad_config_missing_files_and_bad_yaml_exit_1(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("imagee: x\n")
    assert "unknown setting 'imagee'" in autocrane("inject", "-f", "-", "--config", str(tmp_path / "config.yaml"),
                                                   stdin=POD).stderr
    missing = autocrane("inject", "-f", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    broken = autocrane("inject", "-f", "-", stdin="kind: [unclosed\n")
    assert broken.returncode == 1 and "not valid YAML" in broken.stderr


def test_help_describes_the_command() -> None:
    result = autocrane("inject", "--help")
    assert result.returncode == 0 and "usage: autocrane inject" in result.stdout


def test_a_data_source_the_datadeployer_would_refuse_exits_1_naming_the_key_and_the_form() -> None:
    for source in ('"Models/ResNet 50"', '"../../etc"'):
        result = autocrane("inject", "-f", "-", stdin=POD.replace("models/resnet", source))
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr.startswith('error: document 1 (Pod one): annotation "data.autocrane.io/models": ')
        assert "expected a data-repository source" in result.stderr
