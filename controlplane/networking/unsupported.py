"""What a valid networking object asks for that Remora does not honour yet.

The control plane logs each path once per object and counts it in a metric, so a user sees
why a VirtualService's TLS route or a DestinationRule's locality setting has no effect,
instead of the silence Istio's users would not expect. One list, here, for every kind: when
translation learns a feature, its entry goes.
"""

from __future__ import annotations

from controlplane.networking.model import (
    MESH_GATEWAY,
    ClientTLSSettings,
    ConnectionPoolSettings,
    DestinationRule,
    PortTrafficPolicy,
    ServiceEntry,
    Sidecar,
    TLSMode,
    TrafficPolicy,
    VirtualService,
)

REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
"""The redirect codes Envoy can send (``RedirectAction.RedirectResponseCode``)."""

NetworkingConfig = VirtualService | DestinationRule | ServiceEntry | Sidecar


def unsupported(value: NetworkingConfig) -> tuple[str, ...]:
    """The field paths of ``value`` Remora accepts and will not honour yet, in object order."""
    if isinstance(value, VirtualService):
        return _virtual_service(value) + value.unmodelled
    if isinstance(value, DestinationRule):
        return _destination_rule(value) + value.unmodelled
    return value.unmodelled


def _virtual_service(vs: VirtualService) -> tuple[str, ...]:
    """What VirtualService translation (:mod:`controlplane.translate.virtual_services`)
    leaves out: gateways other than ``mesh`` (Remora has no gateways), delegates, redirect
    codes Envoy has no value for, and ``tcp`` and ``tls`` routes (sidecar routing is
    HTTP-only so far)."""
    paths = [
        f"spec.gateways[{i}]" for i, gateway in enumerate(vs.gateways) if gateway != MESH_GATEWAY
    ]
    paths += [f"spec.http[{i}].delegate" for i, route in enumerate(vs.http) if route.delegate]
    paths += [
        f"spec.http[{i}].redirect.redirectCode"
        for i, route in enumerate(vs.http)
        if route.redirect is not None and route.redirect.redirect_code not in REDIRECT_CODES
    ]
    paths += [f"spec.tcp[{i}]" for i in range(len(vs.tcp))]
    paths += [f"spec.tls[{i}]" for i in range(len(vs.tls))]
    return tuple(paths)


SYSTEM_TRUST_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
"""The trust bundle the sidecar image installs (Debian's ca-certificates): the one file TLS
origination may name, as every proxy's container has it."""


def _destination_rule(rule: DestinationRule) -> tuple[str, ...]:
    """What DestinationRule translation (:mod:`controlplane.translate.destination_rules`)
    leaves out: ``useClientProtocol``, and TLS origination from a ``credentialName`` or from
    files the proxy's container may lack (:mod:`controlplane.translate.tls_origination`)."""
    paths = list(_policy("spec.trafficPolicy", rule.traffic_policy))
    for i, subset in enumerate(rule.subsets):
        paths += _policy(f"spec.subsets[{i}].trafficPolicy", subset.traffic_policy)
    return tuple(paths)


def _policy(path: str, policy: TrafficPolicy | None) -> list[str]:
    if policy is None:
        return []
    paths = _settings(path, policy)
    for i, port in enumerate(policy.port_level_settings):
        paths += _settings(f"{path}.portLevelSettings[{i}]", port)
    return paths


def _settings(path: str, policy: TrafficPolicy | PortTrafficPolicy) -> list[str]:
    paths = []
    if _client_protocol(policy.connection_pool):
        paths.append(f"{path}.connectionPool.http.useClientProtocol")
    paths += [f"{path}.tls.{field}" for field in tls_not_honoured(policy.tls)]
    return paths


def _client_protocol(pool: ConnectionPoolSettings | None) -> bool:
    return pool is not None and pool.http is not None and pool.http.use_client_protocol


def tls_not_honoured(tls: ClientTLSSettings | None) -> tuple[str, ...]:
    """The fields of TLS origination settings (``SIMPLE``/``MUTUAL``) that keep them from
    being honoured: a Secret or a file the proxy's container may lack, which only SDS could
    bring (:mod:`controlplane.translate.tls_origination`)."""
    if tls is None or tls.mode not in (TLSMode.SIMPLE, TLSMode.MUTUAL):
        return ()
    named = (
        ("credentialName", bool(tls.credential_name)),
        ("caCertificates", tls.ca_certificates not in ("", SYSTEM_TRUST_BUNDLE)),
        ("clientCertificate", bool(tls.client_certificate)),
        ("privateKey", bool(tls.private_key)),
    )
    return tuple(field for field, set_ in named if set_)
