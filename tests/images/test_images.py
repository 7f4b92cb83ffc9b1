"""The images built with buildah from Dockerfile.webhook and Dockerfile.sidecar, run as pods run them.

Each command runs through the image's entrypoint as UID 65532 (the injector's and the chart's
``runAsUser``), without a network unless it serves on loopback. buildah cannot make the root
filesystem read-only, so the tests check the equivalent for a non-root user: afterwards, nothing
in the container's root filesystem belongs to that user.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from autocrane import cli
from devcluster import controlplane, downwardapi, images
from tests.images.imagekit import Container
from tests.waiting import wait_until

pytestmark = pytest.mark.images

UID = 65532
MAX_IN_POD_BYTES = 150 * 10**6

SERVES = {
    "autocrane": ("webhook", "controller", "inject", "status", "rollout", "watchdog", "version"),
    "sidecar": ("datadeployer", "watchdoghealthz", "testworkload", "version"),
    "datarepository": ("datarepository", "version"),
}
"""What each image is for (docs/design.md, "Packaging")."""

LACKS = {
    "sidecar": ("webhook", "controller", "inject", "status", "rollout", "watchdog", "datarepository"),
    "datarepository": ("webhook", "controller", "status", "rollout", "watchdog"),
}

Make = Callable[[str], Container]


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.TransportError:
        return None


def _wait(what: str, condition: Callable[[], bool], timeout: float, log: Path | None = None) -> None:
    """wait_until, and on a timeout the tail of the server's log."""
    try:
        wait_until(what, condition, timeout)
    except AssertionError as error:
        tail = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
        raise AssertionError(f"{error}\n{log}:\n{tail}" if tail else str(error)) from None


def _owned_by_the_pod_user(*paths: Path) -> None:
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, UID, UID)


def test_each_image_is_tagged_with_its_content_hash_and_archived_under_that_name(
        built: dict[str, images.Image], buildah: images.Buildah) -> None:
    for spec in images.SPECS:
        image = built[spec.name]
        assert image.ref == f"{spec.repository}:{images.content_hash(spec, images.REPO, images.base_ref())}"
        with tarfile.open(image.archive) as archive:
            index = json.load(archive.extractfile("index.json"))  # type: ignore[arg-type]
        assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]] == [image.ref]
    # One generation is kept: older archives and tags are gone.
    archives = sorted(p.name for p in images.images_dir().glob("*.oci.tar"))
    assert archives == sorted(i.archive.name for i in built.values())
    tagged = [t for t in buildah.run("images", "--noheading", "--format", "{{.Name}}:{{.Tag}}").split()
              if t != "<none>:<none>"]
    assert sorted(tagged) == sorted([images.base_ref(), *(i.ref for i in built.values())])


@pytest.mark.parametrize("name", sorted(SERVES))
def test_each_image_runs_its_commands_and_names_the_extra_of_the_others(name: str, container: Make) -> None:
    image = container(name)
    problems = []
    for command in SERVES[name]:
        done = image.run(command, "--help")
        if done.returncode != 0 or f"usage: autocrane {command}" not in done.stdout:
            problems.append(f"{command} --help: exit {done.returncode}\n{done.stdout[-300:]}{done.stderr[-600:]}")
    for command in LACKS.get(name, ()):
        done = image.run(command, "--help")
        wanted = f"it needs the extra 'autocrane[{cli.SUBCOMMANDS[command].extra}]'"
        if done.returncode != 1 or wanted not in done.stderr:
            problems.append(f"{command} --help should name its extra: exit {done.returncode}\n{done.stderr[-600:]}")
    assert not problems, "\n".join(problems)


def test_the_in_pod_image_is_small_and_has_neither_the_api_client_nor_git(built: dict[str, images.Image],
                                                                         container: Make) -> None:
    assert built["sidecar"].size <= MAX_IN_POD_BYTES, f"{built['sidecar'].size / 1e6:.0f} MB"
    probe = ("import importlib.util, shutil; "
             "print(importlib.util.find_spec('kubernetes'), shutil.which('git'), shutil.which('ssh'))")
    done = container("sidecar").run("python3", "-c", probe, entrypoint=False)
    assert done.stdout.split() == ["None", "None", "None"], done.stderr


def test_the_repository_image_runs_git_and_ssh_as_its_user(container: Make) -> None:
    image = container("datarepository")
    git = image.run("git", "--version", entrypoint=False)
    assert git.returncode == 0 and git.stdout.startswith("git version"), git.stderr
    # ssh refuses a UID without a passwd entry ("No user exists for uid"); -G only resolves its config.
    ssh = image.run("ssh", "-G", "git.example.invalid", entrypoint=False)
    assert ssh.returncode == 0, ssh.stderr
    assert "user autocrane" in ssh.stdout.splitlines()
    home = image.run("sh", "-c", 'echo "$HOME"', entrypoint=False)
    assert home.stdout.strip() == "/home/autocrane"


def test_the_repository_image_gives_any_other_uid_a_passwd_entry_for_git_and_ssh(container: Make,
                                                                                 tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    os.chown(work, 123456, 123456)
    probe = ("import os, pathlib, subprocess; from sidecars.datarepo import config, sources; "
             "env = sources.git_environment(config.Git('ssh://git@git.example.invalid/x.git'), pathlib.Path('/work')); "
             "done = subprocess.run(['ssh', '-G', 'git.example.invalid'], env={**os.environ, **env}, "
             "capture_output=True, text=True); print(done.returncode, done.stderr.strip()); print(done.stdout)")
    image = container("datarepository")
    without = image.run("ssh", "-G", "git.example.invalid", user="123456:123456", entrypoint=False)
    assert "No user exists for uid 123456" in without.stderr  # what the entry is for
    done = image.run("python3", "-c", probe, user="123456:123456", volumes=[f"{work}:/work"], entrypoint=False)
    assert done.stdout.startswith("0 "), done.stdout + done.stderr
    assert "user autocrane" in done.stdout.splitlines()


def test_a_git_version_goes_from_the_repository_image_into_a_pod_volume_through_the_sidecar_image(
        container: Make, tmp_path: Path) -> None:
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    (upstream / "hello.txt").write_text("hello from git")
    for args in (["init", "--quiet"], ["add", "hello.txt"],
                 ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "--quiet", "-m", "v1"]):
        subprocess.run(["git", *args], cwd=upstream, check=True, capture_output=True)
    config = tmp_path / "config"
    config.mkdir()
    (config / "sources.yaml").write_text(
        "sources:\n  - name: greetings\n    every: 0.5\n    git: {url: file:///upstream, ref: HEAD}\n")
    data, deploy, meta = tmp_path / "data", tmp_path / "deploy", tmp_path / "meta"
    _owned_by_the_pod_user(data, deploy)
    meta.mkdir()
    (meta / "annotations").write_text(downwardapi.format_annotations({"data.autocrane.io/greet": "greetings"}))

    repository, sidecar = container("datarepository"), container("sidecar")
    pristine = {c: c.files_owned_by(UID) for c in (repository, sidecar)}
    port = controlplane.free_port()
    base = f"http://127.0.0.1:{port}"
    server = repository.start("datarepository", "--config", "/config/sources.yaml", "--data-dir", "/data",
                              "--host", "127.0.0.1", "--port", str(port), log=tmp_path / "repository.log",
                              volumes=[f"{upstream}:/upstream:ro", f"{config}:/config:ro", f"{data}:/data"])
    try:
        def polled() -> bool:
            answer = _get(f"{base}/v1/sources/greetings")
            return answer is not None and answer.status_code == 200 and bool(answer.json().get("versions"))

        _wait("the repository image polled its git source", polled, 60, tmp_path / "repository.log")
        done = sidecar.run("datadeployer", "--mode", "init", "--repository", base, "--root", "/deploy",
                           "--annotations-file", "/meta/annotations", "--request-timeout", "0",
                           "--poll-seconds", "0.1", network="host",
                           volumes=[f"{deploy}:/deploy", f"{meta}:/meta:ro"])
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        server.terminate()
        server.wait(30)
    assert (deploy / "greet" / "hello.txt").read_text() == "hello from git"
    assert os.stat(deploy / "greet" / "hello.txt").st_uid == UID
    for c, before in pristine.items():
        assert c.files_owned_by(UID) == before, f"{c.image.name} wrote into its root filesystem"


def test_the_sidecar_image_serves_readiness_from_the_watchdogs_and_the_test_workload(container: Make,
                                                                                   tmp_path: Path) -> None:
    meta = tmp_path / "meta"
    meta.mkdir()
    annotations = meta / "annotations"

    def write(statuses: dict[str, str]) -> None:  # as the kubelet does: a new file, renamed into place
        (meta / "next").write_text(downwardapi.format_annotations(statuses))
        os.replace(meta / "next", annotations)

    write({"status.autocrane.io/app": "info/2026-01-02T03:04:05Z/fine"})
    healthz, workload = container("sidecar"), container("sidecar")
    pristine = {c: c.files_owned_by(UID) for c in (healthz, workload)}
    health_port, app_port = controlplane.free_port(), controlplane.free_port()
    servers = [
        healthz.start("watchdoghealthz", "--annotations-file", "/meta/annotations", "--min-ready-seconds", "0",
                      "--host", "127.0.0.1", "--port", str(health_port), "--poll-seconds", "0.1",
                      log=tmp_path / "watchdoghealthz.log", volumes=[f"{meta}:/meta:ro"]),
        workload.start("testworkload", "--host", "127.0.0.1", "--port", str(app_port),
                       log=tmp_path / "testworkload.log"),
    ]
    healthz_url, app = f"http://127.0.0.1:{health_port}/healthz", f"http://127.0.0.1:{app_port}"

    def answers(url: str, status: int) -> Callable[[], bool]:
        return lambda: (r := _get(url)) is not None and r.status_code == status

    try:
        _wait("ready while no watchdog is in error", answers(healthz_url, 200), 60, tmp_path / "watchdoghealthz.log")
        write({"status.autocrane.io/app": "error/2026-01-02T03:04:06Z/broken"})
        _wait("unready once a watchdog is in error", answers(healthz_url, 503), 30, tmp_path / "watchdoghealthz.log")
        _wait("the test workload's watchdog passes", answers(f"{app}/watchdog", 200), 60, tmp_path / "testworkload.log")
        assert httpx.post(f"{app}/fail", timeout=5).status_code == 200
        _wait("and fails on demand", answers(f"{app}/watchdog", 500), 30, tmp_path / "testworkload.log")
    finally:
        for server in servers:
            server.terminate()
            server.wait(30)
    for c, before in pristine.items():
        assert c.files_owned_by(UID) == before, f"{c.image.name} wrote into its root filesystem"
