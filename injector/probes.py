"""Probe rewriting: the kubelet's probes go to the agent, which probes the app from inside the pod.

With mutual TLS the kubelet cannot reach the app through the sidecar (it has no mesh
certificate), so httpGet, tcpSocket and gRPC probes, and httpGet/tcpSocket lifecycle hooks, are
pointed at the agent's status port on ``/app-health/<container>/livez|readyz|startupz`` (and
``/app-lifecycle/<container>/prestopz|poststartz``). The original handlers travel to the agent
in the proxy's ``ISTIO_KUBE_APP_PROBERS`` env, a JSON map of URL to handler, exactly as Istio's
pilot-agent expects them. exec probes run inside the app container and are left alone.

:func:`restore_probes` undoes a previous rewrite from that env, so re-injection starts from the
user's own probes and the result does not depend on how often a pod was injected.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

PROBERS_ENV = "ISTIO_KUBE_APP_PROBERS"

_PROBES = (("livenessProbe", "livez"), ("readinessProbe", "readyz"), ("startupProbe", "startupz"))
_HOOKS = (("preStop", "prestopz"), ("postStart", "poststartz"))
_HANDLERS = ("httpGet", "tcpSocket", "grpc")
_REWRITTEN_PREFIXES = ("/app-health/", "/app-lifecycle/")


def prober_url(container: str, suffix: str) -> str:
    group = "app-lifecycle" if suffix in {"prestopz", "poststartz"} else "app-health"
    return f"/{group}/{container}/{suffix}"


def _resolve_port(
    port: Any, container: dict[str, Any], others: Iterable[dict[str, Any]]
) -> int | None:
    """A probe's port as a number: named ports are looked up in the container, then the pod."""
    if isinstance(port, int) and not isinstance(port, bool):
        return port
    if isinstance(port, str):
        if port.isascii() and port.isdecimal():  # not isdigit: '²' is a digit int() refuses
            return int(port)
        for candidate in (container, *others):
            for declared in candidate.get("ports") or ():
                if isinstance(declared, dict) and declared.get("name") == port:
                    number = declared.get("containerPort")
                    return number if isinstance(number, int) else None
    return None


def _captured(port: int, include: str, exclude: str) -> bool:
    """Whether inbound traffic to ``port`` goes through the sidecar (so its probe needs rewriting)."""
    if include != "*":
        return str(port) in include.split(",")
    return str(port) not in exclude.split(",")


def _handlers(container: dict[str, Any]) -> Iterable[tuple[dict[str, Any], str]]:
    """(probe-or-hook dict, url suffix) for every probe and lifecycle hook of a container."""
    for key, suffix in _PROBES:
        probe = container.get(key)
        if isinstance(probe, dict):
            yield probe, suffix
    lifecycle = container.get("lifecycle")
    if isinstance(lifecycle, dict):
        for key, suffix in _HOOKS:
            hook = lifecycle.get(key)
            if isinstance(hook, dict):
                yield hook, suffix


def rewrite_probes(
    containers: list[dict[str, Any]],
    *,
    status_port: int,
    include_inbound_ports: str = "*",
    exclude_inbound_ports: str = "",
) -> dict[str, dict[str, Any]]:
    """Rewrite the probes of ``containers`` in place; return the originals keyed by URL.

    Probes on ports the sidecar does not capture reach the app directly and are kept, as are
    probes whose named port does not resolve (the API server will report that port).
    """
    probers: dict[str, dict[str, Any]] = {}
    for container in containers:
        name = container.get("name")
        if not isinstance(name, str):
            continue
        others = [c for c in containers if c is not container]
        for handler, suffix in _handlers(container):
            kind = next((k for k in _HANDLERS if isinstance(handler.get(k), dict)), None)
            if kind is None:
                continue  # exec (or nothing we understand): runs inside the container
            if kind == "grpc" and suffix in {"prestopz", "poststartz"}:
                continue
            action = handler[kind]
            if kind == "httpGet" and str(action.get("path", "")).startswith(_REWRITTEN_PREFIXES):
                continue  # already points at the agent (its original was lost): leave it
            port = _resolve_port(action.get("port"), container, others)
            if port is None or not _captured(port, include_inbound_ports, exclude_inbound_ports):
                continue
            url = prober_url(name, suffix)
            original: dict[str, Any] = {kind: {**copy.deepcopy(action), "port": port}}
            timeout = handler.get("timeoutSeconds")
            if isinstance(timeout, int) and timeout > 0:
                original["timeoutSeconds"] = timeout
            probers[url] = original

            rewritten: dict[str, Any] = {}
            if kind == "httpGet":
                rewritten = {k: v for k, v in action.items() if k not in {"path", "port", "scheme"}}
            rewritten = {"path": url, "port": status_port, **rewritten}
            if kind == "httpGet" and action.get("scheme") not in (None, "HTTPS"):
                rewritten["scheme"] = action["scheme"]
            # Replace the handler where it stood, so the probe reads as the user wrote it.
            items = [(k, v) for k, v in handler.items()]
            handler.clear()
            for key, value in items:
                if key == kind:
                    handler["httpGet"] = rewritten
                elif key not in _HANDLERS:
                    handler[key] = value
    return probers


def restore_probes(containers: list[dict[str, Any]], probers_json: str) -> None:
    """Undo :func:`rewrite_probes` using its recorded originals (unknown entries are ignored)."""
    try:
        probers = json.loads(probers_json)
    except ValueError:
        return
    if not isinstance(probers, dict):
        return
    for container in containers:
        name = container.get("name")
        if not isinstance(name, str):
            continue
        for handler, suffix in _handlers(container):
            url = prober_url(name, suffix)
            action = handler.get("httpGet")
            original = probers.get(url)
            if not isinstance(action, dict) or action.get("path") != url:
                continue
            if not isinstance(original, dict):
                continue
            kind = next((k for k in _HANDLERS if isinstance(original.get(k), dict)), None)
            if kind is None:
                continue
            items = list(handler.items())
            handler.clear()
            for key, value in items:
                handler[kind if key == "httpGet" else key] = (
                    copy.deepcopy(original[kind]) if key == "httpGet" else value
                )


def probers_env_value(probers: dict[str, dict[str, Any]]) -> str:
    """The env value: compact JSON with sorted keys, as Go's encoder writes a map."""
    return json.dumps(probers, sort_keys=True, separators=(",", ":"))
