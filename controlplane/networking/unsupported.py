"""What a valid networking object asks for that Remora does not honour yet.

The control plane logs each path once per object and counts it in a metric, so a user sees
why a VirtualService's TLS route or a DestinationRule's locality setting has no effect,
instead of the silence Istio's users would not expect. One list, here, for every kind: when
translation learns a feature, its entry goes.
"""

from __future__ import annotations

from controlplane.networking.model import (
    MESH_GATEWAY,
    DestinationRule,
    ServiceEntry,
    Sidecar,
    VirtualService,
)

REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
"""The redirect codes Envoy can send (``RedirectAction.RedirectResponseCode``)."""

NetworkingConfig = VirtualService | DestinationRule | ServiceEntry | Sidecar


def unsupported(value: NetworkingConfig) -> tuple[str, ...]:
    """The field paths of ``value`` Remora accepts and will not honour yet, in object order."""
    if isinstance(value, VirtualService):
        return _virtual_service(value) + value.unmodelled
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
