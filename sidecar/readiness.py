"""When is the sidecar ready, and how many connections does it still serve (pure decisions
over Envoy's admin ``/stats`` text).

Ready means what Istio means: Envoy is ``LIVE`` (admin ``/ready``) *and* it has received its
first full configuration, i.e. at least one CDS and one LDS update (accepted or rejected: a
rejected update still means the control plane answered). Before that, the application's
outbound calls would fail, which is what ``holdApplicationUntilProxyStarts`` waits out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

READINESS_STATS_FILTER = (
    r"^(cluster_manager\.cds|listener_manager\.lds)\.(update_success|update_rejected)$"
)
_PER_THREAD = re.compile(r"\.(main_thread|worker_\d+)$")
ACTIVE_CONNECTIONS_FILTER = r"^listener\..*\.downstream_cx_active$"


def parse_stats(text: str) -> dict[str, int]:
    """Parse admin ``/stats`` text (``name: value`` lines); non-integer values are skipped."""
    stats: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, value = line.rpartition(": ")
        if sep and value.strip().lstrip("-").isdigit():
            stats[name.strip()] = int(value)
    return stats


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str


def decide_readiness(
    stats: Mapping[str, int], *, server_state: str, draining: bool = False
) -> Readiness:
    """Ready iff not draining, Envoy is LIVE, and CDS and LDS have each answered once.

    ``server_state`` is the body of Envoy's admin ``/ready`` (``LIVE``, ``INITIALIZING``...):
    Envoy stays initializing while a listener it got at start-up still warms, e.g. waiting
    for an SDS certificate.
    """
    if draining:
        return Readiness(False, "the proxy is draining")
    if server_state != "LIVE":
        return Readiness(False, f"Envoy is {server_state or 'in an unknown state'}, not LIVE")
    missing = [
        kind
        for kind, prefix in (("CDS", "cluster_manager.cds"), ("LDS", "listener_manager.lds"))
        if stats.get(f"{prefix}.update_success", 0) + stats.get(f"{prefix}.update_rejected", 0) == 0
    ]
    if missing:
        return Readiness(
            False, f"no {' and '.join(missing)} config received from the control plane yet"
        )
    return Readiness(True, "ready")


def active_connections(stats: Mapping[str, int], ignore_listeners: Iterable[str]) -> int:
    """Downstream connections still open on the app-facing listeners.

    ``ignore_listeners`` are stat prefixes of listeners that do not carry application
    traffic (the admin, health and Prometheus listeners): a kubelet probe or a scrape in
    flight must not hold the pod's shutdown.
    """
    ignored = set(ignore_listeners)
    total = 0
    for name, value in stats.items():
        if not (name.startswith("listener.") and name.endswith(".downstream_cx_active")):
            continue
        listener = name[len("listener.") : -len(".downstream_cx_active")]
        if _PER_THREAD.search(listener) or listener in ignored:
            continue  # per-thread breakdowns repeat the listener's total
        total += value
    return total
