"""``autocrane check-inject POD|FILE``: would this pod be injected, and if not, why not.

Each reason comes from the code the webhook runs: the namespace selector and the matchConditions
of the registration (:mod:`webhook.registration`), then :func:`webhook.inject.inject`, whose
policy names why it skipped a pod (:mod:`webhook.policy`) or which annotation it refuses.
:func:`explain` is pure; :func:`main` reads the pod (and its namespace) from the API server, or
the Pods and pod templates of a YAML file, and prints the explanation of each, with the settings
the installed injector runs with (the chart's ConfigMap) unless told otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from autocrane import errors, keys, kube, untrusted
from webhook import inject, options, policy, render
from webhook import settings as injector_settings

INJECT_LABEL = ("autocrane-inject", "enabled")
EXCLUDED_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
"""Never sent to the webhook (the chart also excludes its own release namespace)."""
DEFAULT_RELEASE, DEFAULT_RELEASE_NAMESPACE = "autocrane", "autocrane-system"
CONFIG_KEY = "injector.yaml"
"""The key of the injector's settings in the chart's ConfigMap (``charts/autocrane/templates/injector.yaml``)."""
Settings = tuple[injector_settings.InjectorSettings, str]
"""Settings to explain with, and where they came from."""


T = TypeVar("T")


def config_map_name(release: str) -> str:
    return f"{release}-injector-config"

WHY_SKIPPED = {
    policy.NOT_A_POD: "it is not a Pod or a pod template",
    policy.MIRROR_POD: "it is a mirror pod (a static pod's copy): the kubelet made it, admission cannot change it",
    policy.NOT_OPTED_IN: (f"it asks for nothing: no {keys.DATA_PREFIX}NAME and no {keys.MIN_READY_SECONDS} "
                          "annotation (the API server does not even call the webhook)"),
    policy.OPTED_OUT: f'it opted out: {keys.INJECT}: "false"',
    policy.ALREADY_INJECTED: "it is already injected (re-injecting gives back the same pod)",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Explanation:
    inject: bool
    """Whether the webhook would inject it."""
    lines: tuple[str, ...]
    """What was checked, in order, one line each: the reasons, then what it would get."""


def explain(pod: Mapping[str, Any], settings: injector_settings.InjectorSettings, *,
            namespace: str | None = None, namespace_labels: Mapping[str, str] | None = None) -> Explanation:
    """Why ``pod`` would (not) be injected; ``namespace_labels`` None: the namespace is not checked (a file)."""
    lines: list[str] = []
    would = True
    if namespace_labels is None:
        lines.append("namespace: not checked (the pod is from a file; name a namespace's pod to check it)")
    elif namespace in EXCLUDED_NAMESPACES:
        would = False
        lines.append(f"namespace {namespace}: excluded by the webhook's namespaceSelector (a system namespace)")
    elif namespace_labels.get(INJECT_LABEL[0]) != INJECT_LABEL[1]:
        would = False
        lines.append(f"namespace {namespace}: not opted in (fix: kubectl label namespace {namespace} "
                     f"{INJECT_LABEL[0]}={INJECT_LABEL[1]})")
    else:
        lines.append(f"namespace {namespace}: opted in ({INJECT_LABEL[0]}={INJECT_LABEL[1]})")
    previous = untrusted.mapping(untrusted.mapping(pod.get("metadata")).get("annotations")).get(keys.INJECTOR_STATUS)
    try:
        result = inject.inject(pod, settings)
    except (errors.AnnotationError, errors.ObjectError) as exc:
        return Explanation(False, (*lines, f"refused: the webhook would deny this pod: {exc}"))
    lines += [f"warning: {w}" for w in result.warnings]
    if result.skipped_reason == policy.ALREADY_INJECTED:
        return Explanation(would, (*lines, f"injected already: {_got(previous)}"))
    if result.skipped_reason is not None:
        why = WHY_SKIPPED.get(result.skipped_reason, result.skipped_reason)
        return Explanation(False, (*lines, f"not injected ({result.skipped_reason}): {why}"))
    status = untrusted.mapping(untrusted.mapping(result.pod.get("metadata")).get("annotations")).get(
        keys.INJECTOR_STATUS)
    images = f"; images {', '.join(_added_images(pod, result.pod))}"
    if not would:
        return Explanation(False, (*lines, f"the pod itself asks for injection and would get: {_got(status)}{images}"))
    return Explanation(True, (*lines, f"would be injected: {_got(status)}{images}"))


def _added_images(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """The images of the containers the injection added (what the node must be able to pull)."""
    def images(pod: Mapping[str, Any]) -> set[str]:
        spec = untrusted.mapping(pod.get("spec"))
        return {str(untrusted.mapping(c).get("image")) for field in ("initContainers", "containers")
                for c in spec.get(field) or () if isinstance(c, Mapping)}

    return sorted(images(after) - images(before))


def _got(status: object) -> str:
    if not isinstance(status, str):
        return "?"
    try:
        record = options.parse_status(status)
    except errors.AnnotationError:
        return "an unreadable injector.autocrane.io/status"
    parts = [f"init containers {', '.join(record.init_containers)}" if record.init_containers else "",
             f"containers {', '.join(record.containers)}" if record.containers else "",
             f"volumes {', '.join(record.volumes)}" if record.volumes else ""]
    return "; ".join(p for p in parts if p) or "nothing"


def pods_of(documents: list[Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(a name for it, the pod or pod template) of every document that holds one (a List's items too)."""
    found: list[tuple[str, Mapping[str, Any]]] = []
    for document in documents:
        if not isinstance(document, Mapping):
            continue
        kind, name = document.get("kind", "Pod"), untrusted.mapping(document.get("metadata")).get("name", "")
        if kind == "List":
            found += pods_of(list(document.get("items") or ()))
        elif kind == "Pod":
            found.append((f"Pod {name}", document))
        elif kind in render.TEMPLATE_PATHS:
            template: Any = document
            for step in render.TEMPLATE_PATHS[kind]:
                template = untrusted.mapping(template).get(step)
            if isinstance(template, Mapping):
                found.append((f"{kind} {name} (its pod template)", template))
    return found


async def _with_api(args: argparse.Namespace, read: Callable[[kube.Kube], Awaitable[T]]) -> T:
    """``read`` over one connection to the API server of ``--kubeconfig``."""
    api = await kube.Kube.connect(args.kubeconfig)
    try:
        return await read(api)
    finally:
        await api.close()


async def _read_pod(api: kube.Kube, args: argparse.Namespace, local: Settings | None
                    ) -> tuple[Settings, Mapping[str, Any], Mapping[str, str]]:
    """The settings (``local``, else the release's), the pod and its namespace's labels."""
    settings = local or await _release_settings(api, args)
    pod = await api.get_pod(args.namespace, args.target)
    found = await api.request("GET", f"/api/v1/namespaces/{args.namespace}")
    return settings, pod, dict(untrusted.mapping(untrusted.mapping(found.get("metadata")).get("labels")))


def _local_settings(args: argparse.Namespace, from_file: bool) -> Settings | None:
    """``--config``, or the defaults for a file when no release is named; None: the release's are read."""
    if args.config is not None:
        return injector_settings.load(args.config), str(args.config)
    if args.release is None and from_file:
        return injector_settings.load(None), "the defaults (name the release with --release to use its settings)"
    return None


async def _release_settings(api: kube.Kube, args: argparse.Namespace) -> Settings:
    """The settings in the release's ConfigMap. A release named with --release must be found; the default
    one is looked for only for a pod read from the API server, and its absence (or no right to read it)
    means the defaults, said so. Raises ``errors.ConfigError``."""
    release = args.release or DEFAULT_RELEASE
    path = f"/api/v1/namespaces/{args.release_namespace}/configmaps/{config_map_name(release)}"
    where = f"ConfigMap {args.release_namespace}/{config_map_name(release)}"
    try:
        found = await api.request("GET", path)
    except (errors.NotFound, errors.Forbidden) as exc:
        if args.release is not None:
            raise errors.ConfigError(f"cannot read the injector's settings, {where}: {exc}") from None
        return injector_settings.load(None), f"the defaults ({where} not readable: {exc})"
    except errors.KubeError as exc:
        raise errors.ConfigError(f"cannot read the injector's settings, {where}: {exc}") from None
    text = untrusted.mapping(found.get("data")).get(CONFIG_KEY)
    if not isinstance(text, str):
        raise errors.ConfigError(f"{where} has no {CONFIG_KEY}")
    return injector_settings.parse(text, where), where


def _print(what: str, explanation: Explanation) -> None:
    print(f"{what}: {'would be injected' if explanation.inject else 'would NOT be injected'}")
    for line in explanation.lines:
        print(f"  {line}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="autocrane check-inject", description=(
        "Explain whether the injector webhook would inject a pod, and why not: the namespace's label, the "
        "pod's annotations, the policy's named reason or the annotation it refuses; and what it would get. "
        "POD is a pod's name (read with -n from the API server, its namespace checked too); FILE a YAML file "
        "('-' for stdin) of Pods or workloads. Exit 0: injected; 1: not (or refused); 2: nothing to read."))
    parser.add_argument("target", metavar="POD|FILE")
    parser.add_argument("--namespace", "-n", default="default", help="the pod's namespace (for POD)")
    parser.add_argument("--kubeconfig", type=Path, default=None)
    parser.add_argument("--config", type=Path, metavar="F", help=(
        "injector config file (YAML; docs/injector.md); without it, the installed injector's settings are read "
        "from its ConfigMap (for POD, or when --release is given), else the defaults are used"))
    parser.add_argument("--release", default=None, help=f"the Helm release of the injector (default {DEFAULT_RELEASE})")
    parser.add_argument("--release-namespace", default=DEFAULT_RELEASE_NAMESPACE, metavar="NS",
                        help=f"the release's namespace (default {DEFAULT_RELEASE_NAMESPACE})")
    args = parser.parse_args(argv)
    from_file = args.target == "-" or Path(args.target).is_file()
    try:
        local = _local_settings(args, from_file)
        if from_file:
            settings, source = local or asyncio.run(_with_api(args, lambda api: _release_settings(api, args)))
        else:  # one connection for the settings, the pod and its namespace
            (settings, source), pod, labels = asyncio.run(_with_api(args, lambda api: _read_pod(api, args, local)))
    except errors.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except errors.KubeError as exc:
        print(f"error: cannot read pod {args.namespace}/{args.target}: {exc}", file=sys.stderr)
        return 2
    print(f"injector settings: {source}")
    if from_file:
        try:
            text = sys.stdin.read() if args.target == "-" else Path(args.target).read_text(encoding="utf-8")
            documents = list(yaml.safe_load_all(text))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            print(f"error: cannot read {args.target}: {exc}", file=sys.stderr)
            return 2
        found = pods_of(documents)
        if not found:
            print(f"error: {args.target} holds no Pod and no workload with a pod template", file=sys.stderr)
            return 2
        explained = [(what, explain(pod, settings)) for what, pod in found]
    else:
        explained = [(f"Pod {args.namespace}/{args.target}",
                      explain(pod, settings, namespace=args.namespace, namespace_labels=labels))]
    for what, explanation in explained:
        _print(what, explanation)
    return 0 if all(e.inject for _, e in explained) else 1
