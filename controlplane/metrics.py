"""Prometheus metrics of the control plane, in a registry of its own (one per server)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Istio's pilot_proxy_convergence_time buckets start at 100 ms; ours start lower because
# the goal is a p99 under 200 ms.
CONVERGENCE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 3, 5, 10, 30)
PUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class ControlPlaneMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.connected_proxies = Gauge(
            "remora_xds_connected_proxies", "Proxies with an open ADS stream.", ["mode"], registry=r
        )
        self.pushes = Counter(
            "remora_xds_pushes_total", "xDS responses sent, by type.", ["type"], registry=r
        )
        self.pushed_resources = Counter(
            "remora_xds_pushed_resources_total",
            "Resources sent (delta: changed ones only).",
            ["type"],
            registry=r,
        )
        self.push_build_seconds = Histogram(
            "remora_push_build_seconds",
            "Time to compute every connected proxy's configuration for one push.",
            buckets=PUSH_BUCKETS,
            registry=r,
        )
        self.convergence_seconds = Histogram(
            "remora_proxy_convergence_seconds",
            "From a config change (debounce included) to a proxy ACKing all of its configuration.",
            buckets=CONVERGENCE_BUCKETS,
            registry=r,
        )
        self.push_errors = Counter(
            "remora_push_errors_total",
            "Pushes that failed inside the control plane (a bug: see the log).",
            registry=r,
        )
        self.nacks = Counter(
            "remora_xds_nacks_total", "Responses Envoy rejected, by type.", ["type"], registry=r
        )
        self.stale_requests = Counter(
            "remora_xds_stale_requests_total",
            "Requests ignored for quoting an outdated nonce.",
            ["type"],
            registry=r,
        )
        self.config_events = Counter(
            "remora_config_events_total",
            "Model changes applied, by source and kind.",
            ["source", "kind"],
            registry=r,
        )
        self.watch_events = Counter(
            "remora_watch_events_total",
            "Kubernetes watch events received (changing the model or not), by kind and type.",
            ["kind", "type"],
            registry=r,
        )
        self.watch_restarts = Counter(
            "remora_watch_restarts_total",
            "Kubernetes watches restarted, by kind and reason.",
            ["kind", "reason"],
            registry=r,
        )
        self.model_objects = Gauge(
            "remora_model_objects", "Objects in the mesh model, by kind.", ["kind"], registry=r
        )
