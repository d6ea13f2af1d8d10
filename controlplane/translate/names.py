"""Stable, deterministic names for generated resources, following Istio's conventions.

Names double as Envoy stats prefixes and as the keys proxies subscribe by, so they must only
depend on what they name, and a name must never be reused for something different.
"""

from __future__ import annotations

from meshlib import hostport

OUTBOUND_LISTENER = "virtualOutbound"
INBOUND_LISTENER = "virtualInbound"
OUTBOUND_CAPTURE_PORT = 15001
INBOUND_CAPTURE_PORT = 15006

PASSTHROUGH_CLUSTER = "PassthroughCluster"
BLACKHOLE_CLUSTER = "BlackHoleCluster"
INBOUND_PASSTHROUGH_CLUSTER = "InboundPassthroughCluster"

# Sources the inbound side connects to the application from, so the capture rules (which
# exclude them) do not send the proxy's own traffic back into the proxy.
INBOUND_SOURCE_IPV4 = "127.0.0.6"
INBOUND_SOURCE_IPV6 = "::6"


def outbound_cluster(port: int, fqdn: str, subset: str = "") -> str:
    """``outbound|<port>|<subset>|<fqdn>``: one cluster per service port (and later subset)."""
    return f"outbound|{port}|{subset}|{fqdn}"


def inbound_cluster(port: int) -> str:
    """``inbound|<port>||``: traffic captured for the local application on ``port``."""
    return f"inbound|{port}||"


def outbound_route(port: int) -> str:
    """Outbound HTTP routes are grouped by port, like Istio's ``80`` and ``8080``."""
    return str(port)


def virtual_host(fqdn: str, port: int) -> str:
    return f"{fqdn}:{port}"


def host_port(host: str, port: int) -> str:
    """``host:port`` with IPv6 literals bracketed, as they appear in a Host header."""
    return hostport.host_port(host, port)
