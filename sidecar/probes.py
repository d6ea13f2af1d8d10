"""The application probes the injector moved behind the agent (``ISTIO_KUBE_APP_PROBERS``).

The injector rewrites each app container's httpGet/tcpSocket/grpc probe to
``GET :15020/app-health/<container>/<livez|readyz|startupz>`` and stores the original in the
proxy's ``ISTIO_KUBE_APP_PROBERS`` env as JSON, keyed by that path::

    {"/app-health/web/readyz": {"httpGet": {"path": "/ready", "port": 8080}, "timeoutSeconds": 2},
     "/app-health/web/livez": {"tcpSocket": {"port": 8080}}}

This module parses that JSON into plain, validated data; :mod:`sidecar.prober` runs it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sidecar.errors import ProbeConfigError

PROBERS_ENV = "ISTIO_KUBE_APP_PROBERS"
# The paths pilot-agent serves; the lifecycle ones stand in for postStart/preStop hooks.
PROBE_PATH = re.compile(
    r"^/app-health/[^/]+/(livez|readyz|startupz)$|^/app-lifecycle/[^/]+/(prestopz|poststartz)$"
)
DEFAULT_TIMEOUT_S = 1.0  # Kubernetes' default timeoutSeconds


@dataclass(frozen=True)
class HttpProbe:
    port: int
    path: str = "/"
    host: str | None = None
    scheme: Literal["HTTP", "HTTPS"] = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TcpProbe:
    port: int
    host: str | None = None


@dataclass(frozen=True)
class GrpcProbe:
    port: int
    service: str = ""


@dataclass(frozen=True)
class AppProbe:
    """One rewritten probe: what the kubelet would have done, and its time limit."""

    action: HttpProbe | TcpProbe | GrpcProbe
    timeout_s: float = DEFAULT_TIMEOUT_S
    extra: Mapping[str, Any] = field(default_factory=dict)


def _port(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ProbeConfigError(f"{where}.port: {value!r} is not a port number")
    try:
        port = int(value)
    except ValueError as exc:
        raise ProbeConfigError(
            f"{where}.port: {value!r} is a named port; the injector must resolve it to a number"
        ) from exc
    if not 1 <= port <= 65535:
        raise ProbeConfigError(f"{where}.port: {port} is outside 1-65535")
    return port


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ProbeConfigError(f"{where} must be an object, not {type(value).__name__}")
    return value


def _parse_one(path: str, raw: Any) -> AppProbe:
    where = f"{PROBERS_ENV}[{path!r}]"
    if not PROBE_PATH.match(path):
        raise ProbeConfigError(
            f"{where}: the key must look like /app-health/<container>/livez|readyz|startupz"
        )
    spec = _mapping(raw, where)
    kinds = [k for k in ("httpGet", "tcpSocket", "grpc") if k in spec]
    if len(kinds) != 1:
        raise ProbeConfigError(f"{where} needs exactly one of httpGet, tcpSocket or grpc")
    kind = kinds[0]
    body = _mapping(spec[kind], f"{where}.{kind}")
    action: HttpProbe | TcpProbe | GrpcProbe
    if kind == "httpGet":
        scheme = str(body.get("scheme", "HTTP")).upper()
        if scheme not in ("HTTP", "HTTPS"):
            raise ProbeConfigError(f"{where}.httpGet.scheme: {scheme!r} is not HTTP or HTTPS")
        path_value = str(body.get("path") or "/")
        headers = []
        for i, raw_header in enumerate(body.get("httpHeaders") or ()):
            header = _mapping(raw_header, f"{where}.httpGet.httpHeaders[{i}]")
            if not header.get("name"):
                raise ProbeConfigError(f"{where}.httpGet.httpHeaders[{i}] has no name")
            headers.append((str(header["name"]), str(header.get("value", ""))))
        action = HttpProbe(
            port=_port(body.get("port"), f"{where}.httpGet"),
            path=path_value if path_value.startswith("/") else "/" + path_value,
            host=str(body["host"]) if body.get("host") else None,
            scheme="HTTPS" if scheme == "HTTPS" else "HTTP",
            headers=tuple(headers),
        )
    elif kind == "tcpSocket":
        action = TcpProbe(
            port=_port(body.get("port"), f"{where}.tcpSocket"),
            host=str(body["host"]) if body.get("host") else None,
        )
    else:
        action = GrpcProbe(
            port=_port(body.get("port"), f"{where}.grpc"), service=str(body.get("service") or "")
        )
    timeout = spec.get("timeoutSeconds", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
        raise ProbeConfigError(f"{where}.timeoutSeconds: {timeout!r} is not a positive number")
    extra = {k: v for k, v in spec.items() if k not in {kind, "timeoutSeconds"}}
    return AppProbe(action=action, timeout_s=float(timeout or DEFAULT_TIMEOUT_S), extra=extra)


def parse_app_probers(raw: str | None) -> dict[str, AppProbe]:
    """Parse the env value; empty or unset means no rewritten probes."""
    if raw is None or not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ProbeConfigError(
            f"{PROBERS_ENV} is not valid JSON ({exc.msg} at character {exc.pos})"
        ) from exc
    return {
        str(path): _parse_one(str(path), spec) for path, spec in _mapping(data, PROBERS_ENV).items()
    }


def describe(probe: AppProbe) -> dict[str, Any]:
    """A plain, JSON-ready view of a parsed probe (for golden files and ``--dry-run``)."""
    action = probe.action
    view: dict[str, Any]
    if isinstance(action, HttpProbe):
        view = {"http": {"scheme": action.scheme, "port": action.port, "path": action.path}}
        if action.host:
            view["http"]["host"] = action.host
        if action.headers:
            view["http"]["headers"] = [list(h) for h in action.headers]
    elif isinstance(action, TcpProbe):
        view = {"tcp": {"port": action.port}}
        if action.host:
            view["tcp"]["host"] = action.host
    else:
        view = {"grpc": {"port": action.port, "service": action.service}}
    view["timeoutSeconds"] = probe.timeout_s
    return view
