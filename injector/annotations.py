"""Every pod annotation that changes injection, parsed and validated in one place.

:func:`pod_settings` turns a pod's annotations plus the injection config into
:class:`PodSettings`, the effective values the renderer uses. A value that cannot be used
raises :class:`AnnotationError`, whose message names the annotation and the value in Istio's
words (``invalid value '<v>' for annotation '<name>': <why>``): the webhook then refuses the pod
and ``kubectl`` shows the message.

Istio validates only some annotations and silently ignores bad values in the rest. We validate
every annotation that we act on, because a silently ignored ``proxyCPU: "lots"`` surfaces much
later as a pod the API server rejects for a reason the user did not write.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from injector.config import InjectorConfig
from meshlib.ifnames import interface_name_problem
from meshlib.meshconfig import MeshConfigError, ProxyConfig, parse_proxy_config

# -- names -----------------------------------------------------------------------------------
INJECT = "sidecar.istio.io/inject"  # label (current) and annotation (deprecated)
INTERCEPTION_MODE = "sidecar.istio.io/interceptionMode"
INCLUDE_OUTBOUND_IP_RANGES = "traffic.sidecar.istio.io/includeOutboundIPRanges"
EXCLUDE_OUTBOUND_IP_RANGES = "traffic.sidecar.istio.io/excludeOutboundIPRanges"
INCLUDE_INBOUND_PORTS = "traffic.sidecar.istio.io/includeInboundPorts"
EXCLUDE_INBOUND_PORTS = "traffic.sidecar.istio.io/excludeInboundPorts"
INCLUDE_OUTBOUND_PORTS = "traffic.sidecar.istio.io/includeOutboundPorts"
EXCLUDE_OUTBOUND_PORTS = "traffic.sidecar.istio.io/excludeOutboundPorts"
EXCLUDE_INTERFACES = "traffic.sidecar.istio.io/excludeInterfaces"
KUBEVIRT_INTERFACES = "traffic.sidecar.istio.io/kubevirtInterfaces"
REROUTE_VIRTUAL_INTERFACES = "istio.io/reroute-virtual-interfaces"
STATUS_PORT = "status.sidecar.istio.io/port"
READINESS_INITIAL_DELAY = "readiness.status.sidecar.istio.io/initialDelaySeconds"
READINESS_PERIOD = "readiness.status.sidecar.istio.io/periodSeconds"
READINESS_FAILURE_THRESHOLD = "readiness.status.sidecar.istio.io/failureThreshold"
PROXY_CPU = "sidecar.istio.io/proxyCPU"
PROXY_MEMORY = "sidecar.istio.io/proxyMemory"
PROXY_CPU_LIMIT = "sidecar.istio.io/proxyCPULimit"
PROXY_MEMORY_LIMIT = "sidecar.istio.io/proxyMemoryLimit"
PROXY_IMAGE = "sidecar.istio.io/proxyImage"
LOG_LEVEL = "sidecar.istio.io/logLevel"
COMPONENT_LOG_LEVEL = "sidecar.istio.io/componentLogLevel"
AGENT_LOG_LEVEL = "sidecar.istio.io/agentLogLevel"
PROXY_CONFIG = "proxy.istio.io/config"
NATIVE_SIDECAR = "sidecar.istio.io/nativeSidecar"
REWRITE_PROBES = "sidecar.istio.io/rewriteAppHTTPProbers"
MERGE_METRICS = "prometheus.istio.io/merge-metrics"
CAP_NET_BIND_SERVICE = "sidecar.istio.io/capNetBindService"
USER_VOLUME = "sidecar.istio.io/userVolume"
USER_VOLUME_MOUNT = "sidecar.istio.io/userVolumeMount"
TEMPLATES = "inject.istio.io/templates"
OVERRIDES = "proxy.istio.io/overrides"
REVISION = "istio.io/rev"
DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"
DEFAULT_LOGS_CONTAINER = "kubectl.kubernetes.io/default-logs-container"

CANONICAL_NAME_LABEL = "service.istio.io/canonical-name"
CANONICAL_REVISION_LABEL = "service.istio.io/canonical-revision"
NAMESPACE_INJECTION_LABEL = "istio-injection"

INTERCEPTION_MODES = ("REDIRECT", "TPROXY", "NONE")

_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?$")


class AnnotationError(ValueError):
    """An annotation's value cannot be used; the pod must be refused with this message."""

    def __init__(self, name: str, value: str, reason: str) -> None:
        super().__init__(f"invalid value '{value}' for annotation '{name}': {reason}")
        self.name = name
        self.value = value
        self.reason = reason


@dataclass(frozen=True)
class PodSettings:
    """The effective per-pod values: annotation if present and valid, else the config."""

    interception_mode: str
    include_ip_ranges: str
    exclude_ip_ranges: str
    include_inbound_ports: str
    exclude_inbound_ports: str
    include_outbound_ports: str | None  # None: do not pass -q at all
    exclude_outbound_ports: str | None
    reroute_interfaces: str | None
    exclude_interfaces: str | None
    status_port: int
    readiness_initial_delay: int
    readiness_period: int
    readiness_failure_threshold: int
    resources: dict[str, dict[str, str]]
    image: str
    log_level: str
    component_log_level: str
    agent_log_level: str
    proxy_config: ProxyConfig
    native_sidecar: bool
    rewrite_probes: bool
    merge_metrics: bool
    hold_application: bool
    cap_net_bind_service: bool
    user_volumes: dict[str, dict[str, Any]]
    user_volume_mounts: dict[str, dict[str, Any]]


# -- value checks ----------------------------------------------------------------------------


def _bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"true", "1", "t"}:
        return True
    if lowered in {"false", "0", "f"}:
        return False
    raise AnnotationError(name, value, "must be true or false")


def _is_decimal(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also passes '²' and other digits ``int()`` refuses."""
    return text.isascii() and text.isdecimal()


def _uint(name: str, value: str, bits: int, what: str) -> int:
    text = value.strip()
    if not _is_decimal(text) or int(text) >= 2**bits:
        raise AnnotationError(
            name, value, f"{what} invalid: must be an integer in 0..{2**bits - 1}"
        )
    return int(text)


def _ports(name: str, value: str, what: str, *, wildcard: bool) -> str:
    """A comma list of ports (spaces trimmed, empties dropped), or ``*`` where allowed."""
    if wildcard and value.strip() == "*":
        return "*"
    ports: list[str] = []
    for raw in value.split(","):
        part = raw.strip()
        if not part:
            continue
        if not _is_decimal(part) or not 0 < int(part) < 65536:
            raise AnnotationError(name, value, f"{what} invalid: {part!r} is not a port (1-65535)")
        ports.append(str(int(part)))
    return ",".join(ports)


def _cidrs(name: str, value: str, what: str, *, wildcard: bool) -> str:
    if wildcard and value.strip() == "*":
        return "*"
    cidrs: list[str] = []
    for part in value.split(","):
        if not part:
            continue
        try:
            ipaddress.ip_network(part, strict=False)
            if "/" not in part:
                raise ValueError("missing prefix length")
        except ValueError as exc:
            raise AnnotationError(name, value, f"{what} invalid: {part!r}: {exc}") from None
        cidrs.append(part)
    return ",".join(cidrs)


def _interfaces(name: str, value: str) -> str:
    names = [part.strip() for part in value.split(",") if part.strip()]
    for nic in names:
        problem = interface_name_problem(nic)
        if problem is not None:
            raise AnnotationError(
                name, value, f"{nic!r} is not a network interface name: {problem}"
            )
    return ",".join(names)


def _quantity(name: str, value: str) -> str:
    if not _QUANTITY.match(value.strip()):
        raise AnnotationError(name, value, "not a Kubernetes quantity (e.g. 100m, 1, 128Mi)")
    return value.strip()


def _json_map(name: str, value: str) -> dict[str, dict[str, Any]]:
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise AnnotationError(name, value, f"not JSON: {exc}") from None
    if not isinstance(parsed, dict) or not all(isinstance(v, dict) for v in parsed.values()):
        raise AnnotationError(name, value, "must be a JSON object of name -> object")
    return parsed


def _proxy_config(value: str, base: ProxyConfig) -> ProxyConfig:
    import yaml

    try:
        raw = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise AnnotationError(PROXY_CONFIG, value, f"not YAML or JSON: {exc}") from None
    if raw is not None and not isinstance(raw, Mapping):
        raise AnnotationError(PROXY_CONFIG, value, "must be a ProxyConfig mapping")
    try:
        return parse_proxy_config(raw, base=base)
    except MeshConfigError as exc:
        raise AnnotationError(PROXY_CONFIG, value, str(exc)) from None


def exclude_inbound_port(port: int, ports: str) -> str:
    """Append ``port`` to a comma list unless it is 0 or already there (Istio's helper)."""
    if port == 0:
        return ports
    parts = [p.strip() for p in ports.split(",") if p.strip()]
    if str(port) not in parts:
        parts.append(str(port))
    return ",".join(parts)


# -- the whole set ---------------------------------------------------------------------------


def pod_settings(annotations: Mapping[str, str], config: InjectorConfig) -> PodSettings:
    """The effective settings for a pod; raises :class:`AnnotationError` on a bad value."""
    ann = annotations
    proxy = config.proxy
    mesh_proxy = config.mesh.default_config

    proxy_config = mesh_proxy
    if PROXY_CONFIG in ann:
        proxy_config = _proxy_config(ann[PROXY_CONFIG], mesh_proxy)

    mode = proxy_config.interception_mode
    if INTERCEPTION_MODE in ann:
        mode = ann[INTERCEPTION_MODE].strip()
        if mode not in INTERCEPTION_MODES:
            raise AnnotationError(
                INTERCEPTION_MODE,
                ann[INTERCEPTION_MODE],
                "interceptionMode invalid, use REDIRECT,TPROXY,NONE",
            )

    status_port = proxy_config.status_port
    if STATUS_PORT in ann:
        # Istio's own message says excludeInboundPorts here (a copy/paste); ours names the port.
        status_port = _uint(STATUS_PORT, ann[STATUS_PORT], 16, "status port")

    def get(name: str, default: str) -> str:
        return ann.get(name, default)

    include_ip = _cidrs(
        INCLUDE_OUTBOUND_IP_RANGES,
        get(INCLUDE_OUTBOUND_IP_RANGES, proxy.include_ip_ranges),
        "includeIPRanges",
        wildcard=True,
    )
    exclude_ip = _cidrs(
        EXCLUDE_OUTBOUND_IP_RANGES,
        get(EXCLUDE_OUTBOUND_IP_RANGES, proxy.exclude_ip_ranges),
        "excludeIPRanges",
        wildcard=False,
    )
    include_in = _ports(
        INCLUDE_INBOUND_PORTS,
        get(INCLUDE_INBOUND_PORTS, proxy.include_inbound_ports),
        "includeInboundPorts",
        wildcard=True,
    )
    exclude_in = _ports(
        EXCLUDE_INBOUND_PORTS,
        get(EXCLUDE_INBOUND_PORTS, proxy.exclude_inbound_ports),
        "excludeInboundPorts",
        wildcard=False,
    )
    include_out: str | None = None
    if INCLUDE_OUTBOUND_PORTS in ann or proxy.include_outbound_ports:
        include_out = _ports(
            INCLUDE_OUTBOUND_PORTS,
            get(INCLUDE_OUTBOUND_PORTS, proxy.include_outbound_ports),
            "includeOutboundPorts",
            wildcard=False,
        )
    exclude_out: str | None = None
    if EXCLUDE_OUTBOUND_PORTS in ann or proxy.exclude_outbound_ports:
        exclude_out = _ports(
            EXCLUDE_OUTBOUND_PORTS,
            get(EXCLUDE_OUTBOUND_PORTS, proxy.exclude_outbound_ports),
            "excludeOutboundPorts",
            wildcard=False,
        )
    reroute: str | None = None
    for name in (REROUTE_VIRTUAL_INTERFACES, KUBEVIRT_INTERFACES):  # the new name wins
        if name in ann:
            reroute = _interfaces(name, ann[name])
            break
    exclude_nics = (
        _interfaces(EXCLUDE_INTERFACES, ann[EXCLUDE_INTERFACES])
        if EXCLUDE_INTERFACES in ann
        else None
    )

    readiness = [
        _uint(name, ann[name], 32, name.rsplit("/", 1)[1]) if name in ann else default
        for name, default in (
            (READINESS_INITIAL_DELAY, proxy.readiness_initial_delay_seconds),
            (READINESS_PERIOD, proxy.readiness_period_seconds),
            (READINESS_FAILURE_THRESHOLD, proxy.readiness_failure_threshold),
        )
    ]

    resource_annotations = {
        (PROXY_CPU, "requests", "cpu"),
        (PROXY_MEMORY, "requests", "memory"),
        (PROXY_CPU_LIMIT, "limits", "cpu"),
        (PROXY_MEMORY_LIMIT, "limits", "memory"),
    }
    if any(name in ann for name, _, _ in resource_annotations):
        # As in Istio: any one of the four replaces the configured resources entirely.
        resources: dict[str, dict[str, str]] = {}
        for name, kind, resource in sorted(resource_annotations, key=lambda r: (r[1], r[2])):
            if name in ann:
                resources.setdefault(kind, {})[resource] = _quantity(name, ann[name])
        resources = {k: resources[k] for k in ("limits", "requests") if k in resources}
    else:
        resources = {kind: dict(values) for kind, values in proxy.resources.items()}

    image = ann.get(PROXY_IMAGE, "").strip() or proxy.image
    if not re.fullmatch(r"[A-Za-z0-9._:/@-]+", image):
        raise AnnotationError(PROXY_IMAGE, ann.get(PROXY_IMAGE, ""), "not a container image")
    if "/" not in image:
        image = f"{proxy.hub}/{image}:{proxy.tag}"

    native = config.native_sidecars_default()
    if NATIVE_SIDECAR in ann:
        native = _bool(NATIVE_SIDECAR, ann[NATIVE_SIDECAR])
    rewrite = config.rewrite_app_http_probe
    if REWRITE_PROBES in ann:
        rewrite = _bool(REWRITE_PROBES, ann[REWRITE_PROBES])
    merge = config.mesh.enable_prometheus_merge
    if MERGE_METRICS in ann:
        merge = _bool(MERGE_METRICS, ann[MERGE_METRICS])
    cap_bind = proxy.cap_net_bind_service
    if CAP_NET_BIND_SERVICE in ann:
        cap_bind = _bool(CAP_NET_BIND_SERVICE, ann[CAP_NET_BIND_SERVICE])

    templates = [t.strip() for t in ann.get(TEMPLATES, "sidecar").split(",") if t.strip()]
    if templates != ["sidecar"]:
        raise AnnotationError(
            TEMPLATES, ann[TEMPLATES], "Remora injects only the 'sidecar' template"
        )

    return PodSettings(
        interception_mode=mode,
        include_ip_ranges=include_ip,
        exclude_ip_ranges=exclude_ip,
        include_inbound_ports=include_in,
        exclude_inbound_ports=exclude_in,
        include_outbound_ports=include_out,
        exclude_outbound_ports=exclude_out,
        reroute_interfaces=reroute,
        exclude_interfaces=exclude_nics,
        status_port=status_port,
        readiness_initial_delay=readiness[0],
        readiness_period=readiness[1],
        readiness_failure_threshold=readiness[2],
        resources=resources,
        image=image,
        log_level=ann.get(LOG_LEVEL, proxy.log_level),
        component_log_level=ann.get(COMPONENT_LOG_LEVEL, proxy.component_log_level),
        agent_log_level=ann.get(AGENT_LOG_LEVEL, proxy.agent_log_level),
        proxy_config=proxy_config,
        native_sidecar=native,
        rewrite_probes=rewrite,
        merge_metrics=merge,
        hold_application=(
            proxy_config.hold_application_until_proxy_starts
            or config.hold_application_until_proxy_starts
        ),
        cap_net_bind_service=cap_bind,
        user_volumes=_json_map(USER_VOLUME, ann[USER_VOLUME]) if USER_VOLUME in ann else {},
        user_volume_mounts=(
            _json_map(USER_VOLUME_MOUNT, ann[USER_VOLUME_MOUNT]) if USER_VOLUME_MOUNT in ann else {}
        ),
    )
