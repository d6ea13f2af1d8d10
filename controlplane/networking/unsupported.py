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

NetworkingConfig = VirtualService | DestinationRule | ServiceEntry | Sidecar


def unsupported(value: NetworkingConfig) -> tuple[str, ...]:
    """The field paths of ``value`` Remora accepts and will not honour yet, in object order."""
    if isinstance(value, VirtualService):
        return _virtual_service(value) + value.unmodelled
    return value.unmodelled


def _virtual_service(vs: VirtualService) -> tuple[str, ...]:
    paths = [
        f"spec.gateways[{i}]" for i, gateway in enumerate(vs.gateways) if gateway != MESH_GATEWAY
    ]
    paths += [f"spec.http[{i}].delegate" for i, route in enumerate(vs.http) if route.delegate]
    paths += [
        f"spec.http[{i}].fault.abort.grpcStatus"
        for i, route in enumerate(vs.http)
        if route.fault and route.fault.abort and route.fault.abort.grpc_status
    ]
    paths += [f"spec.tls[{i}]" for i in range(len(vs.tls))]
    return tuple(paths)
