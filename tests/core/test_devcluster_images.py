"""The image cache's content hash: what rebuilds an image and what does not (no buildah needed)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from devcluster import images

SPEC = images.Spec("sidecar", "localhost/autocrane-sidecar", "Dockerfile.sidecar", "sidecar")


def _context(root: Path) -> Path:
    (root / "pkg" / "__pycache__").mkdir(parents=True)
    (root / "pkg" / "mod.py").write_text("x = 1\n")
    (root / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0")
    (root / "tests").mkdir()
    (root / "tests" / "test_x.py").write_text("")
    (root / "pyproject.toml").write_text("[project]\n")
    (root / "Dockerfile.sidecar").write_text("FROM x\nCOPY pkg /pkg\n")
    (root / ".dockerignore").write_text("# comment\n**/__pycache__\ntests\n*.egg-info\n")
    return root


def test_dockerignore_patterns_match_as_docker_does() -> None:
    patterns = images.ignore_patterns(".git\n**/__pycache__\n*.egg-info\n/build/\ndocs/*.md\n")

    def ignored(path: str) -> bool:
        return any(p.fullmatch(path) for p in patterns)

    assert ignored(".git") and ignored("__pycache__") and ignored("a/b/__pycache__")
    assert ignored("autocrane.egg-info") and not ignored("sub/autocrane.egg-info")  # * stays in one element
    assert ignored("build") and ignored("docs/a.md") and not ignored("docs/sub/a.md")
    assert not ignored("autocrane/cli.py")


def test_dockerignore_exceptions_are_refused_rather_than_guessed() -> None:
    with pytest.raises(images.ImageError, match=r"line 2: exceptions \('!keep'\)"):
        images.ignore_patterns("*\n!keep\n")


def test_the_context_leaves_out_ignored_files_and_everything_under_ignored_directories(tmp_path: Path) -> None:
    assert images.context_files(_context(tmp_path)) == [".dockerignore", "Dockerfile.sidecar", "pkg/mod.py",
                                                        "pyproject.toml"]


def test_a_copied_file_its_mode_the_dockerfile_the_target_and_the_base_change_the_hash(tmp_path: Path) -> None:
    root = _context(tmp_path)
    first = images.content_hash(SPEC, root, "base:1")
    assert images.content_hash(SPEC, root, "base:1") == first
    changes = []
    (root / "pkg" / "mod.py").write_text("x = 2\n")
    changes.append(images.content_hash(SPEC, root, "base:1"))
    (root / "pkg" / "mod.py").chmod(0o755)
    changes.append(images.content_hash(SPEC, root, "base:1"))
    (root / "Dockerfile.sidecar").write_text("FROM x\nCOPY pkg /opt/pkg\n")
    changes.append(images.content_hash(SPEC, root, "base:1"))
    changes.append(images.content_hash(images.Spec("d", "r", "Dockerfile.sidecar", "datarepository"), root, "base:1"))
    changes.append(images.content_hash(SPEC, root, "base:2"))
    assert len({first, *changes}) == 6


def test_ignored_files_do_not_change_the_hash(tmp_path: Path) -> None:
    root = _context(tmp_path)
    first = images.content_hash(SPEC, root, "base:1")
    (root / "tests" / "test_x.py").write_text("assert True\n")
    (root / "pkg" / "__pycache__" / "other.pyc").write_bytes(b"\1")
    (root / "autocrane.egg-info").mkdir()
    assert images.content_hash(SPEC, root, "base:1") == first


def test_the_base_ref_follows_its_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    first = images.base_ref()
    monkeypatch.setattr(images, "BASE_MMDEBSTRAP", (*images.BASE_MMDEBSTRAP[:-1], "--include=git", "bookworm"))
    assert images.base_ref() != first and images.base_ref().startswith(images.BASE_REPOSITORY + ":")


def test_the_repository_context_holds_the_sources_and_none_of_the_working_files() -> None:
    files = images.context_files(images.REPO)
    assert {"pyproject.toml", "README.md", "autocrane/cli.py", "sidecars/watchdog.py"} <= set(files)
    top = {".git", ".venv", "test-logs", "tests", "devcluster", "docs", "bench", "charts", ".pytest_cache"}
    assert not [f for f in files if f.split("/")[0] in top or "__pycache__" in f.split("/") or ".egg-info" in f]


def test_cached_images_are_returned_without_running_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "images_dir", lambda: tmp_path)
    expected = []
    for spec in images.SPECS:
        tag = images.content_hash(spec, images.REPO, images.base_ref())
        archive = tmp_path / f"{spec.name}-{tag}.oci.tar"
        archive.write_bytes(b"archive")
        ref = f"{spec.repository}:{tag}"
        archive.with_suffix("").with_suffix(".json").write_text(json.dumps({"ref": ref, "size": 7}))
        expected.append(images.Image(spec.name, ref, archive, 7))

    def nothing_runs(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"ran {args}")

    monkeypatch.setattr(subprocess, "run", nothing_runs)
    monkeypatch.setattr(subprocess, "Popen", nothing_runs)
    assert images.ensure_images(progress=lambda message: None) == expected
