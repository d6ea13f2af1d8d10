"""Prometheus metrics of the control plane, in a registry of its own (one per server)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controlplane.config_status import ConfigStatus

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

    def report_config_status(self, status: ConfigStatus) -> None:
        """Export what ``status`` counts (refused and unhonoured configuration), read at
        every scrape so the gauges are never behind the model."""
        self.registry.register(_ConfigStatusCollector(status))


class _ConfigStatusCollector(Collector):
    """``remora_config_invalid{kind}`` and ``remora_config_unsupported{kind, field}``.

    A label set once reported stays, at 0 once its objects are fixed or deleted: a series
    that vanished would look like a scrape gap, not like "resolved". (Named after Istio's
    ``pilot_total_rejected_configs``, which is a counter; these are gauges of what is
    refused now, which an alert can hold on.)
    """

    def __init__(self, status: ConfigStatus) -> None:
        self._status = status
        self._invalid_seen: set[str] = set()
        self._unsupported_seen: set[tuple[str, str]] = set()

    def collect(self) -> Iterator[Metric]:
        invalid = GaugeMetricFamily(
            "remora_config_invalid",
            "Configuration objects currently refused (see the log for why), by kind.",
            labels=["kind"],
        )
        counts = self._status.invalid_counts()
        self._invalid_seen.update(counts)
        for kind in sorted(self._invalid_seen):
            invalid.add_metric([kind], counts.get(kind, 0))
        yield invalid
        unsupported = GaugeMetricFamily(
            "remora_config_unsupported",
            "Valid configuration objects carrying a field Remora does not apply yet, by kind "
            'and field path (indexes as []); field="*": the whole object is not applied.',
            labels=["kind", "field"],
        )
        by_field = self._status.unsupported_counts()
        self._unsupported_seen.update(by_field)
        for labels in sorted(self._unsupported_seen):
            unsupported.add_metric(list(labels), by_field.get(labels, 0))
        yield unsupported
