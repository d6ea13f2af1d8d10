"""The mesh configuration model, read from Istio's MeshConfig YAML (the ``mesh`` key of the
``istio`` ConfigMap), with Istio's defaults.

Only the fields Remora acts on are modelled; unknown fields are kept in ``extra`` so that a
user's Istio mesh config loads unchanged. Everything here is plain, frozen data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any


class MeshConfigError(ValueError):
    """The mesh config cannot be used; the message names the field and the value."""


@dataclass(frozen=True)
class ProxyConfig:
    """Istio's ``meshConfig.defaultConfig`` (per-pod overlay: ``proxy.istio.io/config``)."""

    discovery_address: str = "istiod.istio-system.svc:15012"
    status_port: int = 15020
    proxy_admin_port: int = 15000
    interception_mode: str = "REDIRECT"
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


_PROXY_FIELDS = {
    "discoveryAddress": ("discovery_address", str),
    "interceptionMode": ("interception_mode", str),
    "holdApplicationUntilProxyStarts": ("hold_application_until_proxy_starts", bool),
}
# Integer fields and their inclusive ranges. A status port of 0 disables the agent's status
# server (and so probe rewriting), as in Istio; the admin port has no such meaning. Istio's
# concurrency is an int32 where 0 means "one worker per CPU".
_PROXY_INT_FIELDS = {
    "statusPort": ("status_port", 0, 65535),
    "proxyAdminPort": ("proxy_admin_port", 1, 65535),
    "concurrency": ("concurrency", 0, 2**31 - 1),
}
_INTERCEPTION_MODES = {"REDIRECT", "TPROXY", "NONE"}


def parse_duration(value: Any, where: str) -> float:
    """Parse an Istio/protobuf duration such as ``"45s"``, ``"1m30s"``, ``"500ms"`` or a number."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6, "ns": 1e-9}
    total, number = 0.0, ""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = text[i : i + 2] if text[i : i + 2] in units else ch
        if unit not in units or not number:
            raise MeshConfigError(f"{where}: {value!r} is not a duration (use e.g. 45s or 1m30s)")
        total += float(number) * units[unit]
        number = ""
        i += len(unit)
    if number:
        raise MeshConfigError(f"{where}: {value!r} is missing a unit (use e.g. 45s)")
    return total


def _as_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in {"true", "1", "yes"}:
        return True
    if str(value).lower() in {"false", "0", "no"}:
        return False
    raise MeshConfigError(f"{where}: {value!r} is not a boolean")


def _as_int(value: Any, where: str, low: int, high: int) -> int:
    """An integer in ``low..high``: an int or a decimal string, never a bool or a fraction.

    Plain ``int()`` would turn ``true`` into 1 and ``15.7`` into 15, and let ``70000``
    through to a pod spec the API server then rejects for a reason that names no field.
    """
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdecimal():
        number = int(value.strip())
    else:
        number = None
    if number is None or not low <= number <= high:
        raise MeshConfigError(f"{where}: {value!r} is not an integer in {low}..{high}")
    return number


def _metadata(value: Mapping[Any, Any], where: str) -> dict[str, str]:
    """``proxyMetadata`` is Istio's ``map<string, string>``: a null or nested value is refused
    (``str()`` would silently turn ``A: null`` into the string ``"None"``)."""
    metadata: dict[str, str] = {}
    for key, item in value.items():
        if item is None or isinstance(item, Mapping | list):
            raise MeshConfigError(f"{where}.{key}: {item!r} is not a string")
        metadata[str(key)] = str(item)
    return metadata


def parse_proxy_config(
    raw: Mapping[str, Any] | None, base: ProxyConfig | None = None
) -> ProxyConfig:
    """Overlay Istio ProxyConfig YAML (camelCase) onto ``base`` (defaults when omitted)."""
    cfg = base or ProxyConfig()
    if not raw:
        return cfg
    if not isinstance(raw, Mapping):
        raise MeshConfigError(f"proxy config must be a mapping, not {type(raw).__name__}")
    changes: dict[str, Any] = {}
    extra = dict(cfg.extra)
    for key, value in raw.items():
        where = f"defaultConfig.{key}"
        if key in _PROXY_FIELDS:
            attr, kind = _PROXY_FIELDS[key]
            try:
                changes[attr] = _as_bool(value, where) if kind is bool else kind(value)
            except (TypeError, ValueError) as exc:
                raise MeshConfigError(f"{where}: {value!r} is not a valid {kind.__name__}") from exc
        elif key in _PROXY_INT_FIELDS:
            attr, low, high = _PROXY_INT_FIELDS[key]
            changes[attr] = _as_int(value, where, low, high)
        elif key == "drainDuration":
            changes["drain_duration_seconds"] = parse_duration(value, where)
        elif key == "terminationDrainDuration":
            changes["termination_drain_duration_seconds"] = parse_duration(value, where)
        elif key == "proxyMetadata":
            if not isinstance(value, Mapping):
                raise MeshConfigError(f"{where} must be a mapping of strings")
            changes["proxy_metadata"] = {**cfg.proxy_metadata, **_metadata(value, where)}
        else:
            extra[key] = value
    if changes.get("interception_mode", cfg.interception_mode) not in _INTERCEPTION_MODES:
        raise MeshConfigError(
            f"defaultConfig.interceptionMode: {changes['interception_mode']!r} is not one of "
            f"{sorted(_INTERCEPTION_MODES)}"
        )
    return replace(cfg, extra=extra, **changes)


def parse_mesh_config(raw: Mapping[str, Any] | None) -> MeshConfig:
    """Build a :class:`MeshConfig` from Istio MeshConfig YAML (already parsed), with defaults."""
    if not raw:
        return MeshConfig()
    if not isinstance(raw, Mapping):
        raise MeshConfigError(f"mesh config must be a mapping, not {type(raw).__name__}")
    mesh = MeshConfig()
    changes: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "trustDomain":
            changes["trust_domain"] = str(value)
        elif key == "rootNamespace":
            changes["root_namespace"] = str(value)
        elif key == "outboundTrafficPolicy":
            mode = str((value or {}).get("mode", "ALLOW_ANY"))
            if mode not in {"ALLOW_ANY", "REGISTRY_ONLY"}:
                raise MeshConfigError(
                    f"outboundTrafficPolicy.mode: {mode!r} is not ALLOW_ANY or REGISTRY_ONLY"
                )
            changes["outbound_traffic_policy"] = mode
        elif key == "inboundTrafficPolicy":
            mode = str((value or {}).get("mode", "PASSTHROUGH"))
            if mode not in {"PASSTHROUGH", "LOCALHOST"}:
                raise MeshConfigError(
                    f"inboundTrafficPolicy.mode: {mode!r} is not PASSTHROUGH or LOCALHOST"
                )
            changes["inbound_traffic_policy"] = mode
        elif key == "enablePrometheusMerge":
            changes["enable_prometheus_merge"] = _as_bool(value, key)
        elif key == "enableAutoMtls":
            changes["enable_auto_mtls"] = _as_bool(value, key)
        elif key == "protocolDetectionTimeout":
            seconds = parse_duration(value, key)
            if seconds < 0 or 0 < seconds < 0.001:
                raise MeshConfigError(
                    f"protocolDetectionTimeout: {value!r} must be 0s (no timeout) or at least 1ms"
                )
            changes["protocol_detection_timeout_s"] = seconds
        elif key == "egressNamespaces":
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise MeshConfigError("egressNamespaces must be a list of namespace names")
            changes["egress_namespaces"] = tuple(value)
        elif key == "defaultConfig":
            changes["default_config"] = parse_proxy_config(value)
        else:
            extra[key] = value
    return replace(mesh, extra=extra, **changes)
