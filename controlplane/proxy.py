"""Who is on the other end of an xDS stream: the proxy's identity, from Envoy's node.

This is the contract with the sidecar agent, which writes the bootstrap (see
docs/controlplane.md). Like Istio, the agent turns ``ISTIO_META_<KEY>`` environment
variables into node metadata ``<KEY>``; Remora reads:

==================  ==========================================  ========================
metadata key        meaning                                     fallback
==================  ==========================================  ========================
``NAME``            pod name (``POD_NAME`` also accepted)       node id ``<pod>.<ns>``
``NAMESPACE``       pod namespace (``POD_NAMESPACE`` too)       node id ``<pod>.<ns>``
``INSTANCE_IPS``    comma-separated pod IPs                     node id ``<ip>``
``SERVICE_ACCOUNT`` the pod's service account                   ``default``
``LABELS``          the pod's labels (a struct)                 the Pod from the API
==================  ==========================================  ========================

The node id has Istio's shape ``sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controlplane.errors import ProxyIdentityError


@dataclass(frozen=True)
class ProxyIdentity:
    node_id: str
    pod_name: str
    namespace: str
    ips: tuple[str, ...]
    service_account: str = "default"
    labels: tuple[tuple[str, str], ...] = ()
    proxy_type: str = "sidecar"

    @property
    def pod_ref(self) -> str:
        """``<pod>.<namespace>``: what ``remora proxy-status`` prints and ``proxy-config`` takes."""
        return f"{self.pod_name}.{self.namespace}"

    # ``ips`` are validated and normalised at parse time: a colon means IPv6.
    @property
    def has_ipv4(self) -> bool:
        return any(":" not in ip for ip in self.ips) or not self.ips

    @property
    def has_ipv6(self) -> bool:
        return any(":" in ip for ip in self.ips)


def _first(metadata: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = metadata.get(key)
        if value:
            return str(value)
    return None


def parse_proxy_identity(node_id: str, metadata: Mapping[str, Any]) -> ProxyIdentity:
    """Build the identity from the node id and metadata (already converted to plain Python)."""
    parts = node_id.split("~")
    id_ip, id_pod, id_ns = None, None, None
    proxy_type = "sidecar"
    if len(parts) == 4:
        proxy_type, id_ip = parts[0] or "sidecar", parts[1] or None
        if "." in parts[2]:
            id_pod, id_ns = parts[2].rsplit(".", 1)
    pod = _first(metadata, "NAME", "POD_NAME") or id_pod
    namespace = _first(metadata, "NAMESPACE", "POD_NAMESPACE") or id_ns
    if not pod or not namespace:
        raise ProxyIdentityError(
            f"node {node_id!r} names no pod: set node metadata NAME and NAMESPACE "
            "(ISTIO_META_NAME/ISTIO_META_NAMESPACE) or use the node id "
            "sidecar~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local"
        )
    ips_text = _first(metadata, "INSTANCE_IPS") or id_ip or ""
    ips = []
    for raw in ips_text.split(","):
        candidate = raw.strip()
        if not candidate:
            continue
        try:
            ips.append(str(ipaddress.ip_address(candidate)))
        except ValueError as exc:
            raise ProxyIdentityError(
                f"node {node_id!r}: INSTANCE_IPS has {candidate!r}, not an IP"
            ) from exc
    labels = metadata.get("LABELS") or {}
    return ProxyIdentity(
        node_id=node_id,
        pod_name=pod,
        namespace=namespace,
        ips=tuple(ips),
        service_account=_first(metadata, "SERVICE_ACCOUNT") or "default",
        labels=tuple(sorted((str(k), str(v)) for k, v in dict(labels).items())),
        proxy_type=proxy_type,
    )
