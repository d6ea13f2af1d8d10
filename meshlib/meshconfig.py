"""The mesh configuration model, read from Istio's MeshConfig YAML (the ``mesh`` key of the
``istio`` ConfigMap), with Istio's defaults.

Only the fields Remora acts on are modelled; unknown fields are kept in ``extra`` so that a
user's Istio mesh config loads unchanged. Everything here is plain, frozen data.

Each modelled field is one row of a table (:data:`PROXY_FIELDS`, :data:`_MESH_FIELDS`): its
camelCase YAML name, the attribute, how its value is read and, for ProxyConfig, how it is
written back. The injector writes a pod's ProxyConfig into the proxy's ``PROXY_CONFIG`` env
with :func:`proxy_config_overrides` and the agent reads it with :func:`parse_proxy_config`, so
both directions go through the same rows. Value syntaxes (booleans, durations) are
:mod:`meshlib.syntax`'s, with the field named here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from meshlib import syntax
from meshlib.interception import INTERCEPTION_MODES, REDIRECT


class MeshConfigError(ValueError):
    """The mesh config cannot be used; the message names the field and the value."""


@dataclass(frozen=True)
class ProxyConfig:
    """Istio's ``meshConfig.defaultConfig`` (per-pod overlay: ``proxy.istio.io/config``)."""

    discovery_address: str = "istiod.istio-system.svc:15012"
    status_port: int = 15020
    proxy_admin_port: int = 15000
    interception_mode: str = REDIRECT
    hold_application_until_proxy_starts: bool = False
    concurrency: int | None = None
    drain_duration_seconds: float = 45.0
    termination_drain_duration_seconds: float = 5.0
    proxy_metadata: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MeshConfig:
    trust_domain: str = "cluster.local"
    root_namespace: str = "istio-system"
    outbound_traffic_policy: str = "ALLOW_ANY"  # or REGISTRY_ONLY
    inbound_traffic_policy: str = "PASSTHROUGH"  # or LOCALHOST
    enable_prometheus_merge: bool = True
    enable_auto_mtls: bool = True
    # ``protocolDetectionTimeout``: how long a sidecar's inspectors wait for a client's first
    # bytes. None (unset) keeps Envoy's 15 s; 0 waits for ever (Istio's default). Unset is
    # Remora's default on purpose: a server-first protocol on an inspected port then
    # connects after 15 s instead of hanging.
    protocol_detection_timeout_s: float | None = None
    default_config: ProxyConfig = field(default_factory=ProxyConfig)
    # Remora extension (YAML ``egressNamespaces``): None = every sidecar gets every service;
    # a tuple = each sidecar gets its own namespace's services plus these namespaces'.
    egress_namespaces: tuple[str, ...] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


# -- value readers: (value as YAML gave it, where) -> attribute value -------------------------

Reader = Callable[[Any, str], Any]


def parse_duration(value: Any, where: str) -> float:
    """A protobuf Duration as Istio's YAML writes it (Go syntax: ``45s``, ``1m30s``, ``500ms``),
    in seconds; a YAML number is taken as seconds. ``where`` names the field in the error."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if math.isfinite(value) and value >= 0:
            return float(value)
        raise MeshConfigError(f"{where}: {value!r} is not a duration: it must be 0 or more")
    try:
        return syntax.parse_duration(str(value))
    except syntax.SyntaxProblem as exc:
        raise MeshConfigError(f"{where}: {exc}") from None


def _as_bool(value: Any, where: str) -> bool:
    """A YAML boolean, or a string Go's ``strconv.ParseBool`` reads (``true``, ``1``, ``F`` ...)."""
    if isinstance(value, bool):
        return value
    try:
        return syntax.parse_bool(str(value))
    except syntax.SyntaxProblem as exc:
        raise MeshConfigError(f"{where}: {exc}") from None


def _as_str(value: Any, where: str) -> str:
    return str(value)


def _int_in(low: int, high: int) -> Reader:
    """A reader of integers in ``low..high``: an int or a decimal string, never a bool or a
    fraction. Plain ``int()`` would turn ``true`` into 1 and ``15.7`` into 15, and let
    ``70000`` through to a pod spec the API server then rejects for a reason that names no
    field."""

    def read(value: Any, where: str) -> int:
        number: int | None = None
        if isinstance(value, bool):
            number = None
        elif isinstance(value, int):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str) and value.strip().isascii() and value.strip().isdecimal():
            number = int(value.strip())
        if number is None or not low <= number <= high:
            raise MeshConfigError(f"{where}: {value!r} is not an integer in {low}..{high}")
        return number

    return read


def _one_of(*choices: str) -> Reader:
    def read(value: Any, where: str) -> str:
        if str(value) not in choices:
            raise MeshConfigError(f"{where}: {value!r} is not one of {', '.join(choices)}")
        return str(value)

    return read


def _metadata(value: Any, where: str) -> dict[str, str]:
    """``proxyMetadata`` is Istio's ``map<string, string>``: a null or nested value is refused
    (``str()`` would silently turn ``A: null`` into the string ``"None"``)."""
    if not isinstance(value, Mapping):
        raise MeshConfigError(f"{where} must be a mapping of strings")
    metadata: dict[str, str] = {}
    for key, item in value.items():
        if item is None or isinstance(item, Mapping | list):
            raise MeshConfigError(f"{where}.{key}: {item!r} is not a string")
        metadata[str(key)] = str(item)
    return metadata


def _traffic_policy(*modes: str) -> Reader:
    """``{mode: X}`` with X one of ``modes`` (the first is the default when ``mode`` is unset)."""

    def read(value: Any, where: str) -> str:
        if value is not None and not isinstance(value, Mapping):
            raise MeshConfigError(f"{where} must be a mapping such as {{mode: {modes[0]}}}")
        mode = str((value or {}).get("mode", modes[0]))
        if mode not in modes:
            raise MeshConfigError(f"{where}.mode: {mode!r} is not {' or '.join(modes)}")
        return mode

    return read


def _detection_timeout(value: Any, where: str) -> float:
    seconds = parse_duration(value, where)
    if 0 < seconds < 0.001:
        raise MeshConfigError(f"{where}: {value!r} must be 0s (no timeout) or at least 1ms")
    return seconds


def _namespaces(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise MeshConfigError(f"{where} must be a list of namespace names")
    return tuple(value)


def _default_config(value: Any, where: str) -> ProxyConfig:
    return parse_proxy_config(value)


# -- value writers: attribute value -> JSON value ----------------------------------------------


def _same(value: Any) -> Any:
    return value


def _duration_text(seconds: float) -> str:
    """Seconds as a Go duration string that :func:`parse_duration` reads back exactly."""
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


# -- the tables ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigField:
    """One modelled field: its YAML/JSON name, the attribute, and how to read and write it."""

    key: str  # camelCase, as in Istio's YAML
    attr: str
    read: Reader
    write: Callable[[Any], Any] = _same
    overlay: bool = False  # a map merged onto the base's instead of replacing it


PROXY_FIELDS: tuple[ConfigField, ...] = (
    ConfigField("discoveryAddress", "discovery_address", _as_str),
    # A status port of 0 disables the agent's status server (and so probe rewriting), as in
    # Istio; the admin port has no such meaning.
    ConfigField("statusPort", "status_port", _int_in(0, 65535)),
    ConfigField("proxyAdminPort", "proxy_admin_port", _int_in(1, 65535)),
    ConfigField("interceptionMode", "interception_mode", _one_of(*INTERCEPTION_MODES)),
    ConfigField("holdApplicationUntilProxyStarts", "hold_application_until_proxy_starts", _as_bool),
    # Istio's concurrency is an int32 where 0 means "one worker per CPU".
    ConfigField("concurrency", "concurrency", _int_in(0, 2**31 - 1)),
    ConfigField("drainDuration", "drain_duration_seconds", parse_duration, _duration_text),
    ConfigField(
        "terminationDrainDuration",
        "termination_drain_duration_seconds",
        parse_duration,
        _duration_text,
    ),
    ConfigField("proxyMetadata", "proxy_metadata", _metadata, dict, overlay=True),
)
"""ProxyConfig's modelled fields, read by :func:`parse_proxy_config` and written back by
:func:`proxy_config_overrides`."""

_MESH_FIELDS: tuple[ConfigField, ...] = (
    ConfigField("trustDomain", "trust_domain", _as_str),
    ConfigField("rootNamespace", "root_namespace", _as_str),
    ConfigField(
        "outboundTrafficPolicy",
        "outbound_traffic_policy",
        _traffic_policy("ALLOW_ANY", "REGISTRY_ONLY"),
    ),
    ConfigField(
        "inboundTrafficPolicy",
        "inbound_traffic_policy",
        _traffic_policy("PASSTHROUGH", "LOCALHOST"),
    ),
    ConfigField("enablePrometheusMerge", "enable_prometheus_merge", _as_bool),
    ConfigField("enableAutoMtls", "enable_auto_mtls", _as_bool),
    ConfigField("protocolDetectionTimeout", "protocol_detection_timeout_s", _detection_timeout),
    ConfigField("egressNamespaces", "egress_namespaces", _namespaces),
    ConfigField("defaultConfig", "default_config", _default_config),
)


_Config = TypeVar("_Config", ProxyConfig, MeshConfig)


def _overlay(
    raw: Mapping[str, Any], base: _Config, fields: tuple[ConfigField, ...], prefix: str
) -> _Config:
    """``base`` with the modelled fields of ``raw`` read onto it; the rest go to ``extra``."""
    by_key = {f.key: f for f in fields}
    changes: dict[str, Any] = {}
    extra = dict(base.extra)
    for key, value in raw.items():
        row = by_key.get(key)
        if row is None:
            extra[key] = value
            continue
        parsed = row.read(value, f"{prefix}{key}")
        changes[row.attr] = {**getattr(base, row.attr), **parsed} if row.overlay else parsed
    return replace(base, extra=extra, **changes)


# -- parsing and writing ---------------------------------------------------------------------


def parse_proxy_config(
    raw: Mapping[str, Any] | None, base: ProxyConfig | None = None
) -> ProxyConfig:
    """Overlay Istio ProxyConfig YAML (camelCase) onto ``base`` (defaults when omitted)."""
    cfg = base or ProxyConfig()
    if not raw:
        return cfg
    if not isinstance(raw, Mapping):
        raise MeshConfigError(f"proxy config must be a mapping, not {type(raw).__name__}")
    return _overlay(raw, cfg, PROXY_FIELDS, "defaultConfig.")


def proxy_config_overrides(proxy_config: ProxyConfig) -> dict[str, Any]:
    """The fields that differ from Istio's defaults, camelCase, plus the unmodelled ones: what
    :func:`parse_proxy_config` reads back into ``proxy_config``."""
    default = ProxyConfig()
    out: dict[str, Any] = {}
    for row in PROXY_FIELDS:
        value = getattr(proxy_config, row.attr)
        if value != getattr(default, row.attr):
            out[row.key] = row.write(value)
    out.update(proxy_config.extra)
    return out


def parse_mesh_config(raw: Mapping[str, Any] | None) -> MeshConfig:
    """Build a :class:`MeshConfig` from Istio MeshConfig YAML (already parsed), with defaults."""
    if not raw:
        return MeshConfig()
    if not isinstance(raw, Mapping):
        raise MeshConfigError(f"mesh config must be a mapping, not {type(raw).__name__}")
    return _overlay(raw, MeshConfig(), _MESH_FIELDS, "")
