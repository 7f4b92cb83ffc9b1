"""``autocrane inject -f FILE|-``: the webhook's injection, offline, on YAML files.

For debugging, CI and reviews (like ``istioctl kube-inject``): every document of the input goes
through the same ``webhook.inject.inject`` the webhook runs, and the results are printed as
multi-document YAML. Pods are injected; so are the pod templates of Deployment, StatefulSet,
DaemonSet, ReplicaSet, ReplicationController, Job, CronJob (``spec.jobTemplate.spec.template``) and
PodTemplate, and the items of a ``List``. Other kinds pass through unchanged. A malformed annotation
exits 1 with the message the webhook would deny with, prefixed by the document it is in; warnings go
to stderr.

The file is untrusted input like a pod at the webhook, and YAML can say much in few bytes: before
anything is built from it, its event stream (which PyYAML parses without recursing) is checked for
nesting past :data:`MAX_YAML_DEPTH` levels (composing, copying and dumping recurse per level) and
for aliases that expand past :data:`MAX_YAML_NODES` nodes (an alias bomb of a few hundred bytes is
a billion nodes to whatever walks it). Those, a file that is not UTF-8, and values the YAML loader
cannot build (a 5,000-digit integer, a 13th month) are ``error:`` lines and exit 1, never tracebacks.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from autocrane import errors, untrusted
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


MAX_YAML_DEPTH = 128
"""Deepest nesting accepted in the input; a pod itself is refused past ``untrusted.MAX_DEPTH`` (64), but
other kinds pass through, and a CustomResourceDefinition's schema nests deeper than any pod."""
MAX_YAML_NODES = 1_000_000
"""Most nodes the whole input may expand to, counting each alias as a copy of what it names."""


class RenderError(errors.AutocraneError):
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
        _check_size(yaml.parse(text, Loader=yaml.SafeLoader))
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise RenderError(f"the input is not valid YAML: {exc}") from None
    except ValueError as exc:  # int() or date() refusing a scalar the YAML resolver took for one
        raise RenderError(f"the input holds a value YAML cannot load: {exc}") from None
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
        text = _text(sys.stdin.buffer.read() if args.filename == "-" else Path(args.filename).read_bytes(),
                     args.filename)
        output = render_text(text, settings, warn=lambda message: print(f"warning: {message}", file=sys.stderr))
    except (RenderError, errors.ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot read {args.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    sys.stdout.write(output)
    return 0


def _text(data: bytes, filename: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        name = "the standard input" if filename == "-" else filename
        raise RenderError(f"{name} is not UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 1]!r})") from None


def _check_size(events: Iterator[yaml.Event]) -> None:
    """Refuse a stream nested past MAX_YAML_DEPTH or expanding past MAX_YAML_NODES, from its events."""
    nodes, sizes = 0, dict[str, int]()  # sizes: nodes each anchor stands for, once its node is complete
    open_nodes: list[tuple[str | None, int]] = []  # (anchor, nodes before it) of each collection open
    for event in events:
        if isinstance(event, yaml.AliasEvent):
            if event.anchor not in sizes:  # the composer says "undefined alias"; an open one recurses
                if any(anchor == event.anchor for anchor, _ in open_nodes):
                    raise RenderError(f"{_at(event)}: alias *{event.anchor} refers to a node that holds it")
                continue
            nodes += sizes[event.anchor]
        elif isinstance(event, yaml.ScalarEvent):
            nodes += 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.CollectionStartEvent):
            open_nodes.append((event.anchor, nodes))
            nodes += 1
            if len(open_nodes) > MAX_YAML_DEPTH:
                raise RenderError(f"{_at(event)}: nested deeper than {MAX_YAML_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, before = open_nodes.pop()
            if anchor is not None:
                sizes[anchor] = nodes - before
        if nodes > MAX_YAML_NODES:
            raise RenderError(f"{_at(event)}: the input expands to more than {MAX_YAML_NODES:,} nodes through its "
                              "YAML aliases")


def _at(event: yaml.Event) -> str:
    mark = event.start_mark  # the parser sets it on every event; the stubs allow None
    return "the input" if mark is None else f"line {mark.line + 1}, column {mark.column + 1}"


def _render(document: Any, where: str, settings: injector_settings.InjectorSettings,
            warn: Callable[[str], None]) -> Any:
    if not isinstance(document, dict):
        return document
    kind = document.get("kind") if isinstance(document.get("kind"), str) else None
    where = f"{where} ({_describe(document)})"
    if kind == "List" and isinstance(document.get("items"), list):
        items = [_render(item, f"{where} item {i}", settings, warn) for i, item in enumerate(document["items"], 1)]
        return {**document, "items": items}
    if kind == "Pod":
        return _inject(document, where, settings, warn)
    path = TEMPLATE_PATHS.get(kind or "")
    if path is None:
        return document
    parent: object = document
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
    """``Kind namespace/name`` for messages; what is not a string is left out, what is long is cut."""
    meta = untrusted.mapping(document.get("metadata"))

    def text(mapping: Mapping[str, Any], key: str) -> str:
        value = mapping.get(key)
        return value[:untrusted.SHOWN] if isinstance(value, str) else ""

    name = text(meta, "name") or text(meta, "generateName") or "<unnamed>"
    namespace = text(meta, "namespace")
    return f"{text(document, 'kind') or '<no kind>'} {namespace + '/' if namespace else ''}{name}"
