"""Asking a pod's Envoy through its admin endpoint (loopback-only: asked inside the pod).

:func:`stat` reads a counter or gauge and refuses to read a missing one as 0
(:class:`MissingStat`); :func:`served_serials` says which workload certificates Envoy holds;
:func:`virtual_host` and :func:`active_clusters` show the routes and clusters it got over xDS.
"""

from __future__ import annotations

import difflib
import json
import re
import urllib.parse
from typing import Any

from sidecar.config import Ports
from testbed.running_pod import RunningPod

ADMIN_PORT = Ports().admin  # the sidecar's Envoy admin, on the pod's loopback only


class MissingStat(AssertionError):
    """An Envoy stat a test reads does not exist in the pod's Envoy."""


def stat(pod: RunningPod, name: str, *, missing_ok: bool = False) -> int:
    """A counter or gauge from the pod's Envoy admin (loopback-only: asked inside the pod).

    A stat that does not exist raises :class:`MissingStat`: with the stats inclusion list
    (:data:`harness.mesh_workloads.STATS_ANNOTATIONS`) a misspelled or filtered-out name
    would otherwise read 0 forever, and an assertion that nothing changed would pass without
    measuring anything.
    ``missing_ok=True`` reads absence as 0, and is right only where absence means zero:
    a cluster's traffic stats (``upstream_rq_*``, ``upstream_cx_*``) are created on its first
    request (``enable_deferred_creation_stats`` in :mod:`sidecar.bootstrap`), so before
    traffic they are legitimately missing.
    """
    exact = urllib.parse.quote(f"^{re.escape(name)}$")
    stats = json.loads(pod.http_get(ADMIN_PORT, f"/stats?format=json&filter={exact}"))
    values = [int(s.get("value", 0)) for s in stats.get("stats", []) if s.get("name") == name]
    if values:
        return values[0]
    if missing_ok:
        return 0
    raise MissingStat(_missing_stat_message(pod, name))


def stat_names(pod: RunningPod, prefix: str) -> list[str]:
    """The names of the counters and gauges of the pod's Envoy that begin with ``prefix``."""
    starts = urllib.parse.quote(f"^{re.escape(prefix)}")
    stats = json.loads(pod.http_get(ADMIN_PORT, f"/stats?format=json&filter={starts}"))
    return sorted(s["name"] for s in stats.get("stats", []) if "name" in s)


def _missing_stat_message(pod: RunningPod, name: str) -> str:
    """Why ``name`` may be missing, and the names that exist near it (spelling, family)."""
    every = [
        s["name"]
        for s in json.loads(pod.http_get(ADMIN_PORT, "/stats?format=json")).get("stats", [])
        if "name" in s
    ]
    similar = difflib.get_close_matches(name, every, n=8, cutoff=0.6)
    family = name.rsplit(".", 1)[0] + "."
    similar += [n for n in every if n.startswith(family) and n not in similar][:12]
    return (
        f"Envoy stat {name!r} does not exist in {pod.name}'s Envoy: misspelled, left out by "
        f"the stats inclusion list (add its prefix to STATS_ANNOTATIONS), or a cluster "
        f"traffic stat created only on the cluster's first request (then pass "
        f"missing_ok=True where that means 0). Similar names: "
        f"{', '.join(similar) if similar else f'none among {len(every)} stats'}"
    )


def served_serials(pod: RunningPod) -> set[str]:
    """Serial numbers of the workload certificates Envoy holds (``/certs``, SDS ``default``)."""
    certs = json.loads(pod.http_get(ADMIN_PORT, "/certs"))
    serials = set()
    for entry in certs.get("certificates", []):
        for cert in entry.get("cert_chain", []):
            if any(
                san.get("uri", "").startswith("spiffe://")
                for san in cert.get("subject_alt_names", [])
            ):
                serials.add(cert["serial_number"])
    return serials


def route_configs(pod: RunningPod) -> dict[str, dict[str, Any]]:
    """The route configurations the pod's Envoy got over RDS, by name (``80``, ...)."""
    dump = json.loads(pod.http_get(ADMIN_PORT, "/config_dump?resource=dynamic_route_configs"))
    configs = (entry.get("route_config") for entry in dump.get("configs", []))
    return {config["name"]: config for config in configs if config and "name" in config}


def virtual_host(pod: RunningPod, route: str, domain: str) -> dict[str, Any] | None:
    """The virtual host of route configuration ``route`` that serves ``domain``, or None."""
    for host in route_configs(pod).get(route, {}).get("virtual_hosts", []):
        if domain in host.get("domains", []):
            return dict(host)
    return None


def active_clusters(pod: RunningPod) -> dict[str, dict[str, Any]]:
    """The clusters the pod's Envoy got over CDS and has warmed, by name."""
    dump = json.loads(pod.http_get(ADMIN_PORT, "/config_dump?resource=dynamic_active_clusters"))
    clusters = (entry.get("cluster") for entry in dump.get("configs", []))
    return {cluster["name"]: cluster for cluster in clusters if cluster and "name" in cluster}
