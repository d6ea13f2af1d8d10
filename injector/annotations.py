"""Every pod annotation that changes injection, parsed and validated in one place.

:func:`pod_settings` turns a pod's annotations plus the injection config into
:class:`PodSettings`, the effective values the renderer uses. A value that cannot be used
raises :class:`AnnotationError`, whose message names the annotation and the value in Istio's
words (``invalid value '<v>' for annotation '<name>': <why>``): the webhook then refuses the pod
and ``kubectl`` shows the message.

Istio validates only some annotations and silently ignores bad values in the rest. We validate
every annotation that we act on, because a silently ignored ``proxyCPU: "lots"`` surfaces much
later as a pod the API server rejects for a reason the user did not write.

Like Istio's ``AnnotationValidation`` map, :data:`SETTINGS` is a table: one row per annotation,
with the parser of its value, where the default comes from when the pod does not carry it, and
the :class:`PodSettings` field it sets. Value syntaxes (booleans, ports, CIDRs) are
:mod:`meshlib.syntax`'s, so the webhook admits exactly what the init container accepts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from injector.config import InjectorConfig, ProxySettings
from injector.errors import AnnotationError
from meshlib.ifnames import interface_name_problem
from meshlib.interception import INTERCEPTION_MODES
from meshlib.meshconfig import MeshConfigError, ProxyConfig, parse_proxy_config
from meshlib.syntax import (
    WILDCARD,
    SyntaxProblem,
    is_wildcard,
    parse_bool,
    parse_cidr_list,
    parse_port,
    split_list,
)

__all__ = ["AnnotationError", "PodSettings", "pod_settings"]

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

_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?$")
_IMAGE = re.compile(r"[A-Za-z0-9._:/@-]+")


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


# -- value parsers: annotation text -> setting; a SyntaxProblem says why not -------------------

Parser = Callable[[str], Any]


def _interception_mode(text: str) -> str:
    mode = text.strip()
    if mode not in INTERCEPTION_MODES:
        raise SyntaxProblem(f"interceptionMode invalid, use {','.join(INTERCEPTION_MODES)}")
    return mode


def _uint(bits: int, what: str) -> Parser:
    """An unsigned integer of ``bits`` bits, in ASCII digits (Go's ``strconv.ParseUint``)."""

    def parse(text: str) -> int:
        value = text.strip()
        if not (value.isascii() and value.isdecimal()) or int(value) >= 2**bits:
            raise SyntaxProblem(f"{what} invalid: must be an integer in 0..{2**bits - 1}")
        return int(value)

    return parse


def _ports(what: str, *, wildcard: bool) -> Parser:
    """A comma list of ports, as the init container's flag takes it; ``*`` where allowed."""

    def parse(text: str) -> str:
        if wildcard and is_wildcard(text):
            return WILDCARD
        try:
            return ",".join(str(parse_port(item)) for item in split_list(text))
        except SyntaxProblem as problem:
            raise SyntaxProblem(f"{what} invalid: {problem}") from None

    return parse


def _cidrs(what: str, *, wildcard: bool) -> Parser:
    """A comma list of CIDRs, prefix lengths required (Istio's ``validateCIDRList``); ``*``
    where allowed. Passed on as written, as Istio hands the annotation to istio-iptables."""

    def parse(text: str) -> str:
        if wildcard and is_wildcard(text):
            return WILDCARD
        try:
            parse_cidr_list(text)
        except SyntaxProblem as problem:
            raise SyntaxProblem(f"{what} invalid: {problem}") from None
        return ",".join(split_list(text))

    return parse


def _interfaces(text: str) -> str:
    names = split_list(text)
    for nic in names:
        problem = interface_name_problem(nic)
        if problem is not None:
            raise SyntaxProblem(f"{nic!r} is not a network interface name: {problem}")
    return ",".join(names)


def _quantity(text: str) -> str:
    if not _QUANTITY.match(text.strip()):
        raise SyntaxProblem("not a Kubernetes quantity (e.g. 100m, 1, 128Mi)")
    return text.strip()


def _json_map(text: str) -> dict[str, dict[str, Any]]:
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise SyntaxProblem(f"not JSON: {exc}") from None
    if not isinstance(parsed, dict) or not all(isinstance(v, dict) for v in parsed.values()):
        raise SyntaxProblem("must be a JSON object of name -> object")
    return parsed


def _as_written(text: str) -> str:
    return text


def _sidecar_template_only(text: str) -> None:
    if split_list(text) != ["sidecar"]:
        raise SyntaxProblem("Remora injects only the 'sidecar' template")


# -- where a default comes from when the pod has no annotation --------------------------------

Default = Callable[[InjectorConfig, ProxyConfig], Any]


def _proxy_setting(attr: str) -> Default:
    """The injection config's ``proxy.<attr>``."""
    return lambda config, _proxy_config: getattr(config.proxy, attr)


def _proxy_setting_if_set(attr: str) -> Default:
    """The injection config's ``proxy.<attr>``, or None (flag left out) when it is empty."""
    return lambda config, _proxy_config: getattr(config.proxy, attr) or None


def _proxy_config(attr: str) -> Default:
    """The pod's ProxyConfig field: the mesh default overlaid by ``proxy.istio.io/config``."""
    return lambda _config, proxy_config: getattr(proxy_config, attr)


def _injector_setting(read: Callable[[InjectorConfig], Any]) -> Default:
    return lambda config, _proxy_config: read(config)


def _none(_config: InjectorConfig, _proxy_config: ProxyConfig) -> None:
    """No default: the setting is left out unless the pod asks for it."""


def _no_user_volumes(_config: InjectorConfig, _proxy_config: ProxyConfig) -> dict[str, Any]:
    return {}


# -- the table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One annotation: how its value is read, where its default comes from, the field it sets."""

    annotation: str
    parse: Parser
    default: Default
    field: str | None  # the PodSettings attribute; None when the row only checks the value
    # The default is text in the annotation's own syntax (the config's port and CIDR lists),
    # read by the same parser; a bad one is reported under the annotation's name.
    text_default: bool = False
    old_name: str | None = None  # a renamed annotation's old name, read when the new is absent

    @property
    def names(self) -> tuple[str, ...]:
        """The annotation's names, the current one first."""
        return (self.annotation,) if self.old_name is None else (self.annotation, self.old_name)


SETTINGS: tuple[Setting, ...] = (
    # annotation, parser, default when the pod has none, PodSettings field
    Setting(INTERCEPTION_MODE, _interception_mode, _proxy_config("interception_mode"),
            "interception_mode"),
    # Istio's own message says excludeInboundPorts here (a copy/paste); ours names the port.
    # 0 is allowed: no status server, so no probe rewriting and no metrics merge.
    Setting(STATUS_PORT, _uint(16, "status port"), _proxy_config("status_port"), "status_port"),
    Setting(INCLUDE_OUTBOUND_IP_RANGES, _cidrs("includeIPRanges", wildcard=True),
            _proxy_setting("include_ip_ranges"), "include_ip_ranges", text_default=True),
    Setting(EXCLUDE_OUTBOUND_IP_RANGES, _cidrs("excludeIPRanges", wildcard=False),
            _proxy_setting("exclude_ip_ranges"), "exclude_ip_ranges", text_default=True),
    Setting(INCLUDE_INBOUND_PORTS, _ports("includeInboundPorts", wildcard=True),
            _proxy_setting("include_inbound_ports"), "include_inbound_ports", text_default=True),
    Setting(EXCLUDE_INBOUND_PORTS, _ports("excludeInboundPorts", wildcard=False),
            _proxy_setting("exclude_inbound_ports"), "exclude_inbound_ports", text_default=True),
    Setting(INCLUDE_OUTBOUND_PORTS, _ports("includeOutboundPorts", wildcard=False),
            _proxy_setting_if_set("include_outbound_ports"), "include_outbound_ports",
            text_default=True),
    Setting(EXCLUDE_OUTBOUND_PORTS, _ports("excludeOutboundPorts", wildcard=False),
            _proxy_setting_if_set("exclude_outbound_ports"), "exclude_outbound_ports",
            text_default=True),
    Setting(REROUTE_VIRTUAL_INTERFACES, _interfaces, _none, "reroute_interfaces",
            old_name=KUBEVIRT_INTERFACES),
    Setting(EXCLUDE_INTERFACES, _interfaces, _none, "exclude_interfaces"),
    Setting(READINESS_INITIAL_DELAY, _uint(32, "initialDelaySeconds"),
            _proxy_setting("readiness_initial_delay_seconds"), "readiness_initial_delay"),
    Setting(READINESS_PERIOD, _uint(32, "periodSeconds"),
            _proxy_setting("readiness_period_seconds"), "readiness_period"),
    Setting(READINESS_FAILURE_THRESHOLD, _uint(32, "failureThreshold"),
            _proxy_setting("readiness_failure_threshold"), "readiness_failure_threshold"),
    Setting(PROXY_CPU, _quantity, _none, None),  # checked here, used by _resources
    Setting(PROXY_MEMORY, _quantity, _none, None),
    Setting(PROXY_CPU_LIMIT, _quantity, _none, None),
    Setting(PROXY_MEMORY_LIMIT, _quantity, _none, None),
    Setting(LOG_LEVEL, _as_written, _proxy_setting("log_level"), "log_level"),
    Setting(COMPONENT_LOG_LEVEL, _as_written, _proxy_setting("component_log_level"),
            "component_log_level"),
    Setting(AGENT_LOG_LEVEL, _as_written, _proxy_setting("agent_log_level"), "agent_log_level"),
    Setting(NATIVE_SIDECAR, parse_bool, _injector_setting(InjectorConfig.native_sidecars_default),
            "native_sidecar"),
    Setting(REWRITE_PROBES, parse_bool,
            _injector_setting(lambda config: config.rewrite_app_http_probe), "rewrite_probes"),
    Setting(MERGE_METRICS, parse_bool,
            _injector_setting(lambda config: config.mesh.enable_prometheus_merge),
            "merge_metrics"),
    Setting(CAP_NET_BIND_SERVICE, parse_bool, _proxy_setting("cap_net_bind_service"),
            "cap_net_bind_service"),
    Setting(TEMPLATES, _sidecar_template_only, _none, None),
    Setting(USER_VOLUME, _json_map, _no_user_volumes, "user_volumes"),
    Setting(USER_VOLUME_MOUNT, _json_map, _no_user_volumes, "user_volume_mounts"),
)  # fmt: skip
"""Every annotation read by a parser of its own, in the order they are checked. Booleans are
read as Go's ``strconv.ParseBool`` reads them, as Istio reads its boolean annotations."""

_RESOURCES = (  # annotation, kind, resource; in the order Istio writes them
    (PROXY_CPU_LIMIT, "limits", "cpu"),
    (PROXY_MEMORY_LIMIT, "limits", "memory"),
    (PROXY_CPU, "requests", "cpu"),
    (PROXY_MEMORY, "requests", "memory"),
)


# -- the whole set ---------------------------------------------------------------------------


def pod_settings(annotations: Mapping[str, str], config: InjectorConfig) -> PodSettings:
    """The effective settings for a pod; raises :class:`AnnotationError` on a bad value."""
    proxy_config = _pod_proxy_config(annotations, config.mesh.default_config)
    values: dict[str, Any] = {}
    for row in SETTINGS:
        value = _value(row, annotations, config, proxy_config)
        if row.field is not None:  # else the row only checks its annotation
            values[row.field] = value
    return PodSettings(
        **values,
        resources=_resources(annotations, config.proxy),
        image=_image(annotations, config.proxy),
        proxy_config=proxy_config,
        # Either one asks for it, as in Istio.
        hold_application=(
            proxy_config.hold_application_until_proxy_starts
            or config.hold_application_until_proxy_starts
        ),
    )


def _value(
    row: Setting, annotations: Mapping[str, str], config: InjectorConfig, proxy_config: ProxyConfig
) -> Any:
    """The row's annotation read by its parser, else its default."""
    name = next((name for name in row.names if name in annotations), None)
    if name is not None:
        text = annotations[name]
    else:
        default = row.default(config, proxy_config)
        if not row.text_default or default is None:
            return default
        name, text = row.annotation, default
    try:
        return row.parse(text)
    except SyntaxProblem as problem:
        raise AnnotationError(name, text, str(problem)) from None


def _pod_proxy_config(annotations: Mapping[str, str], base: ProxyConfig) -> ProxyConfig:
    """The mesh's default ProxyConfig, overlaid by the pod's ``proxy.istio.io/config``."""
    if PROXY_CONFIG not in annotations:
        return base
    import yaml

    value = annotations[PROXY_CONFIG]
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


def _resources(annotations: Mapping[str, str], proxy: ProxySettings) -> dict[str, dict[str, str]]:
    """As in Istio: any one of the four resource annotations replaces the configured resources
    entirely (the values were checked by their rows in :data:`SETTINGS`)."""
    if not any(name in annotations for name, _, _ in _RESOURCES):
        return {kind: dict(values) for kind, values in proxy.resources.items()}
    resources: dict[str, dict[str, str]] = {}
    for name, kind, resource in _RESOURCES:
        if name in annotations:
            resources.setdefault(kind, {})[resource] = annotations[name].strip()
    return resources


def _image(annotations: Mapping[str, str], proxy: ProxySettings) -> str:
    """The proxy image; a bare name (no ``/``) is completed with the config's hub and tag."""
    image = annotations.get(PROXY_IMAGE, "").strip() or proxy.image
    if not _IMAGE.fullmatch(image):
        raise AnnotationError(
            PROXY_IMAGE, annotations.get(PROXY_IMAGE, ""), "not a container image"
        )
    if "/" not in image:
        image = f"{proxy.hub}/{image}:{proxy.tag}"
    return image
