"""``autocrane inject -f FILE|-``: the webhook's injection, offline, on YAML files.

For debugging, CI and reviews (like ``istioctl kube-inject``): every document of the input goes
through the same ``webhook.inject.inject`` the webhook runs, and the results are printed as
multi-document YAML. Pods are injected; so are the pod templates of Deployment, StatefulSet,
DaemonSet, ReplicaSet, ReplicationController, Job, CronJob (``spec.jobTemplate.spec.template``) and
PodTemplate, and the items of a ``List``. Other kinds pass through unchanged. A malformed annotation
exits 1 with the message the webhook would deny with, prefixed by the document it is in; warnings go
to stderr.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from autocrane import errors
from webhook import inject
from webhook import settings as injector_settings

TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
    "PodTemplate": ("template",),
}
"""Where each workload kind keeps its pod template."""


class RenderError(Exception):
    """A document could not be injected; the message names the document."""


def render_documents(documents: list[Any], settings: injector_settings.InjectorSettings,
                     warn: Callable[[str], None] = lambda _: None) -> list[Any]:
    """The documents with injection applied; ``None`` (empty) documents are dropped."""
    out = []
    for number, document in enumerate(documents, start=1):
        if document is None:
            continue
        out.append(_render(copy.deepcopy(document), f"document {number}", settings, warn))
    return out


def render_text(text: str, settings: injector_settings.InjectorSettings,
                warn: Callable[[str], None] = lambda _: None) -> str:
    """Multi-document YAML in, multi-document YAML out."""
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise RenderError(f"the input is not valid YAML: {exc}") from None
    rendered = render_documents(documents, settings, warn)
    return yaml.safe_dump_all(rendered, sort_keys=False, width=2**16, explicit_start=len(rendered) > 1)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="autocrane inject",
        description="Print the objects of FILE as the injector webhook would admit them: AutoCrane's containers "
        "injected into Pods and into the pod templates of workloads (Deployment, StatefulSet, DaemonSet, "
        "ReplicaSet, Job, CronJob). Other kinds pass through unchanged. Exits 1 when an annotation is invalid.",
    )
    parser.add_argument("-f", "--filename", required=True, metavar="FILE", help="YAML file, '-' for stdin")
    parser.add_argument("--config", type=Path, metavar="F", help="injector config file (YAML; see docs/injector.md)")
    args = parser.parse_args(argv)
    try:
        settings = injector_settings.load(args.config)
        text = sys.stdin.read() if args.filename == "-" else Path(args.filename).read_text()
        output = render_text(text, settings, warn=lambda message: print(f"warning: {message}", file=sys.stderr))
    except (RenderError, errors.ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot read {args.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    sys.stdout.write(output)
    return 0


def _render(document: Any, where: str, settings: injector_settings.InjectorSettings,
            warn: Callable[[str], None]) -> Any:
    if not isinstance(document, dict):
        return document
    kind = document.get("kind")
    where = f"{where} ({_describe(document)})"
    if kind == "List" and isinstance(document.get("items"), list):
        items = [_render(item, f"{where} item {i}", settings, warn) for i, item in enumerate(document["items"], 1)]
        return {**document, "items": items}
    if kind == "Pod":
        return _inject(document, where, settings, warn)
    path = TEMPLATE_PATHS.get(str(kind))
    if path is None:
        return document
    parent = document
    for key in path[:-1]:
        parent = parent.get(key) if isinstance(parent, dict) else None
    if not isinstance(parent, dict) or not isinstance(parent.get(path[-1]), dict):
        return document  # no pod template: nothing to inject (the API server will say what is missing)
    parent[path[-1]] = _inject(parent[path[-1]], f"{where} pod template", settings, warn)
    return document


def _inject(pod: dict[str, Any], where: str, settings: injector_settings.InjectorSettings,
            warn: Callable[[str], None]) -> dict[str, Any]:
    try:
        result = inject.inject(pod, settings)
    except (errors.AnnotationError, errors.ObjectError) as exc:
        raise RenderError(f"{where}: {exc}") from None
    for message in result.warnings:
        warn(f"{where}: {message}")
    return result.pod


def _describe(document: dict[str, Any]) -> str:
    meta = document.get("metadata") if isinstance(document.get("metadata"), dict) else {}
    name = meta.get("name") or meta.get("generateName") or "<unnamed>"
    namespace = meta.get("namespace")
    return f"{document.get('kind', '<no kind>')} {namespace + '/' if namespace else ''}{name}"
