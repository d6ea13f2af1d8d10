"""``remora kube-inject``: the webhook's injection applied offline to multi-document YAML.

Pods and the pod templates of Deployment, StatefulSet, DaemonSet, ReplicaSet,
ReplicationController, Job and CronJob (also inside a ``List``) are injected with the same pure
core as the webhook. Every other document passes through unchanged, as do workloads the
decision skips (host network, opted out); the reason goes to the ``notes`` so the CLI can print
it on stderr. Malformed input raises :class:`KubeInjectError` naming the document.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from injector._data import mapping
from injector.config import InjectorConfig
from injector.decision import should_inject
from injector.errors import AnnotationError, KubeInjectError, PodError
from injector.render import inject
from injector.workload import Workload

# kind -> path from the object to its pod template
TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


@dataclass
class Result:
    documents: list[Any]
    notes: list[str] = field(default_factory=list)  # one line per document not injected


class _Loader(yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader):  # type: ignore[misc]
    """Safe loading that keeps timestamps and the like as the strings the user wrote."""


# Kubernetes objects carry strings where YAML 1.1 would see dates; keep them as written.
_Loader.add_constructor(
    "tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node)
)


class _Dumper(yaml.CSafeDumper if hasattr(yaml, "CSafeDumper") else yaml.SafeDumper):  # type: ignore[misc]
    """Block style, keys in their given order, multi-line strings as ``|`` literals."""


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_representer)


def load_documents(text: str, source: str = "<input>") -> list[Any]:
    try:
        return [doc for doc in yaml.load_all(text, Loader=_Loader) if doc is not None]
    except yaml.YAMLError as exc:
        raise KubeInjectError(f"{source} is not valid YAML: {exc}") from None


def dump_documents(documents: list[Any]) -> str:
    return yaml.dump_all(
        documents, Dumper=_Dumper, sort_keys=False, default_flow_style=False, explicit_start=False
    ).replace("\n...\n", "\n")


def _describe(obj: Mapping[str, Any], index: int) -> str:
    metadata = mapping(obj.get("metadata"))
    name = metadata.get("name") or metadata.get("generateName") or "<unnamed>"
    return f"document {index + 1} ({obj.get('kind')} {name})"


def inject_documents(
    documents: list[Any],
    config: InjectorConfig,
    *,
    namespace_labels: Mapping[str, str] | None = None,
) -> Result:
    """Inject every pod (template) in ``documents``; other documents are returned unchanged."""
    if namespace_labels is None:
        # As Istio's kube-inject: whoever runs it asks for injection, so only an explicit
        # opt-out, host networking or a system namespace skips a workload.
        config = replace(
            config, policy="enabled", never_inject_selector=(), always_inject_selector=()
        )
    result = Result(documents=[])
    for index, doc in enumerate(documents):
        result.documents.append(
            _inject_object(doc, index, config, namespace_labels, result.notes.append)
        )
    return result


def _inject_object(
    obj: Any,
    index: int,
    config: InjectorConfig,
    namespace_labels: Mapping[str, str] | None,
    note: Callable[[str], None],
) -> Any:
    if not isinstance(obj, dict):
        return obj
    kind = obj.get("kind")
    if kind == "List" and isinstance(obj.get("items"), list):
        items = [
            _inject_object(item, index, config, namespace_labels, note) for item in obj["items"]
        ]
        return {**obj, "items": items}
    where = _describe(obj, index)
    metadata = mapping(obj.get("metadata"))
    namespace = metadata.get("namespace")

    path: tuple[str, ...] = ()
    if kind == "Pod":
        template: dict[str, Any] = obj
    elif kind in TEMPLATE_PATHS:
        path = TEMPLATE_PATHS[kind]
        found = _walk(obj, path)
        if found is None:
            raise KubeInjectError(f"{where}: {'.'.join(path)} is missing or not a mapping")
        template = found
    else:
        return obj
    if not isinstance(template.get("spec"), dict):
        raise KubeInjectError(f"{where}: the pod spec is missing or not a mapping")

    decision = should_inject(template, namespace_labels, config, namespace=namespace)
    if not decision.inject:
        note(f"{where}: not injected: {decision.reason}")
        return obj
    workload = None  # a Pod names its workload through its owner references
    if path:
        workload = Workload(
            str(kind), str(obj.get("apiVersion", "")), str(metadata.get("name", ""))
        )
    try:
        injected = inject(template, config, namespace=namespace, workload=workload)
    except (AnnotationError, PodError) as exc:
        raise KubeInjectError(f"{where}: {exc}") from None
    if not path:
        return injected
    return _replace(obj, path, injected)


def _walk(obj: Mapping[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    node: Any = obj
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, dict) else None


def _replace(obj: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of ``obj`` with the node at ``path`` replaced (other branches shared)."""
    head, *rest = path
    return {**obj, head: _replace(obj[head], tuple(rest), value) if rest else value}


def kube_inject_text(
    text: str,
    config: InjectorConfig,
    *,
    source: str = "<input>",
    namespace_labels: Mapping[str, str] | None = None,
) -> tuple[str, list[str]]:
    """YAML in, injected YAML and notes out."""
    result = inject_documents(
        load_documents(text, source), config, namespace_labels=namespace_labels
    )
    return dump_documents(result.documents), result.notes


def iter_pod_templates(documents: list[Any]) -> Iterator[dict[str, Any]]:
    """Every pod or pod template in ``documents`` (used by tests and benchmarks)."""
    for doc in documents:
        if not isinstance(doc, dict):
            continue
        if doc.get("kind") == "List":
            yield from iter_pod_templates(doc.get("items") or [])
        elif doc.get("kind") == "Pod":
            yield doc
        elif doc.get("kind") in TEMPLATE_PATHS:
            template = _walk(doc, TEMPLATE_PATHS[str(doc["kind"])])
            if template is not None:
                yield template
