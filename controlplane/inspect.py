"""Turning proxy state into the tables ``remora proxy-status`` and ``proxy-config`` print.

Pure functions over the JSON the monitoring endpoint (or Envoy's admin) returns, so the
CLI stays a thin HTTP client and the formatting is unit-tested.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

STATUS_TYPES = ("CDS", "LDS", "EDS", "RDS")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces, like kubectl's output."""
    text_rows = [[str(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [list(headers), *text_rows]
    ]
    return "\n".join(lines)


def proxy_status_rows(statuses: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for status in statuses:
        types = status["types"]
        nacks = [
            f"{short}: {types[short]['last_nack']['error'][:80]}"
            for short in STATUS_TYPES
            if types.get(short, {}).get("last_nack")
        ]
        rows.append(
            [
                status["proxy"],
                status["mode"],
                *(types.get(short, {}).get("status", "NOT SENT") for short in STATUS_TYPES),
                "; ".join(nacks) or "-",
            ]
        )
    return rows


def format_proxy_status(statuses: Sequence[Mapping[str, Any]]) -> str:
    return table(["NAME", "MODE", *STATUS_TYPES, "LAST NACK"], proxy_status_rows(statuses))


def _cluster_row(cluster: Mapping[str, Any]) -> list[str]:
    name = cluster.get("name", "")
    parts = name.split("|")
    if len(parts) == 4:
        direction, port, subset, fqdn = parts
    else:
        direction, port, subset, fqdn = "-", "-", "-", name
    return [
        fqdn or "-",
        port or "-",
        subset or "-",
        direction.upper() if len(parts) == 4 else "-",
        cluster.get("type", "EDS" if "edsClusterConfig" in cluster else "STATIC"),
    ]


def _chain_destination(chain: Mapping[str, Any]) -> tuple[str, str]:
    match = chain.get("filterChainMatch", {})
    ips = [r.get("addressPrefix", "") for r in match.get("prefixRanges", [])]
    shown = ", ".join(ips[:3]) + (f" (+{len(ips) - 3})" if len(ips) > 3 else "")
    return shown or "ALL", str(match.get("destinationPort", "ALL"))


def _chain_protocols(chain: Mapping[str, Any]) -> str:
    """What a chain requires of a connection beyond its address, as istioctl shows it."""
    match = chain.get("filterChainMatch", {})
    parts = []
    if "transportProtocol" in match:
        parts.append(f"Trans: {match['transportProtocol']}")
    if match.get("applicationProtocols"):
        parts.append(f"App: {','.join(match['applicationProtocols'])}")
    return "; ".join(parts) or "ALL"


def _chain_target(chain: Mapping[str, Any]) -> str:
    for network_filter in chain.get("filters", []):
        config = network_filter.get("typedConfig", {})
        if "cluster" in config:
            return f"Cluster: {config['cluster']}"
        if "rds" in config:
            return f"Route: {config['rds'].get('routeConfigName', '')}"
        if "routeConfig" in config:
            return f"Inline Route: {config['routeConfig'].get('name', '')}"
    return "-"


def _listener_rows(listener: Mapping[str, Any]) -> list[list[str]]:
    name = listener.get("name", "")
    rows = []
    for chain in listener.get("filterChains", []):
        ip, port = _chain_destination(chain)
        rows.append([name, ip, port, _chain_protocols(chain), _chain_target(chain)])
    default = listener.get("defaultFilterChain")
    if default:
        rows.append([name, "ALL", "ALL", "ALL", f"{_chain_target(default)} (no match)"])
    return rows


def _route_rows(route: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for vhost in route.get("virtualHosts", []):
        domains = vhost.get("domains", [])
        shown = (
            domains[0] + (f" (+{len(domains) - 1} more)" if len(domains) > 1 else "")
            if domains
            else "-"
        )
        targets = {
            r.get("route", {}).get("cluster")
            or (f"direct {r['directResponse'].get('status')}" if "directResponse" in r else "-")
            for r in vhost.get("routes", [])
        }
        rows.append(
            [route.get("name", ""), vhost.get("name", ""), shown, ", ".join(sorted(targets))]
        )
    return rows


def _endpoint_rows(assignment: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    cluster = assignment.get("clusterName", "")
    for group in assignment.get("endpoints", []):
        zone = group.get("locality", {}).get("zone", "-")
        for lb in group.get("lbEndpoints", []):
            address = lb.get("endpoint", {}).get("address", {}).get("socketAddress", {})
            rows.append(
                [
                    f"{address.get('address')}:{address.get('portValue')}",
                    lb.get("healthStatus", "UNKNOWN"),
                    zone,
                    cluster,
                ]
            )
    if not rows:
        rows.append(["(none)", "-", "-", cluster])
    return rows


def format_resources(kind: str, resources: Sequence[Mapping[str, Any]]) -> str:
    """A table of one type of resources (Envoy JSON, camelCase as protobuf's JSON mapping)."""
    if kind == "clusters":
        return table(
            ["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE"],
            [_cluster_row(r) for r in resources],
        )
    if kind == "listeners":
        return table(
            ["LISTENER", "DESTINATION", "PORT", "MATCH", "TARGET"],
            [row for r in resources for row in _listener_rows(r)],
        )
    if kind == "routes":
        return table(
            ["NAME", "VIRTUAL HOST", "DOMAINS", "CLUSTER"],
            [row for r in resources for row in _route_rows(r)],
        )
    if kind == "endpoints":
        return table(
            ["ENDPOINT", "STATUS", "ZONE", "CLUSTER"],
            [row for r in resources for row in _endpoint_rows(r)],
        )
    raise ValueError(f"unknown resource type {kind!r}")


_ENVOY_DUMP_SECTIONS = {
    "clusters": ("dynamic_active_clusters", "cluster"),
    "listeners": ("dynamic_listeners", "active_state"),
    "routes": ("dynamic_route_configs", "route_config"),
    "endpoints": ("dynamic_endpoint_configs", "endpoint_config"),
}


SIDECAR_CONTAINER = "istio-proxy"


def kubectl_exec_agent_request(
    pod: str, namespace: str, admin_path: str, kubeconfig: str | None = None
) -> list[str]:
    """The command that asks a pod's sidecar agent for an Envoy admin page.

    Envoy's admin listens on the pod's loopback only; ``remora proxy request`` (the agent,
    like ``pilot-agent request``) fetches it from inside the sidecar container.
    """
    command = ["kubectl"]
    if kubeconfig:
        command += ["--kubeconfig", kubeconfig]
    return [
        *command,
        "exec",
        "-n",
        namespace,
        pod,
        "-c",
        SIDECAR_CONTAINER,
        "--",
        "remora",
        "proxy",
        "request",
        "GET",
        admin_path.lstrip("/"),
    ]


def envoy_dump_path(kind: str) -> str:
    """The admin ``/config_dump`` query for one type."""
    return f"/config_dump?resource={_ENVOY_DUMP_SECTIONS[kind][0]}&include_eds"


def resources_from_envoy_dump(kind: str, dump: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Envoy's config dump entries for one type, unwrapped to the resources themselves.

    Envoy's admin prints snake_case field names; they are converted to the camelCase of
    the control plane's view so one formatter serves both.
    """
    _, key = _ENVOY_DUMP_SECTIONS[kind]
    out = []
    for entry in dump.get("configs", []):
        value = entry.get(key)
        if key == "active_state":
            value = (value or {}).get("listener")
        if value:
            out.append(_camel(value))
    return out


def _camel(value: Any) -> Any:
    if isinstance(value, dict):
        return {(_to_camel(k) if not k.startswith("@") else k): _camel(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_camel(v) for v in value]
    return value


def _to_camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)
