"""The agent's own Prometheus metrics, served merged with Envoy's on ``:15020/stats/prometheus``.

A registry per agent (not the process-global one) so that tests can run agents side by side.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.startup_seconds = Gauge(
            "remora_agent_startup_duration_seconds",
            "Time from agent start until the proxy was first ready.",
            registry=self.registry,
        )
        self.ready = Gauge(
            "remora_agent_ready",
            "1 while the proxy reports ready, else 0 (as of the last readiness check).",
            registry=self.registry,
        )
        self.probes = Counter(
            "remora_agent_app_probes",
            "Application probes run on the kubelet's behalf.",
            ["probe", "result"],
            registry=self.registry,
        )
        self.probe_seconds = Histogram(
            "remora_agent_app_probe_duration_seconds",
            "Duration of application probes.",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
            registry=self.registry,
        )
        self.cert_expiry = Gauge(
            "remora_agent_cert_expiry_timestamp_seconds",
            "When the current workload certificate expires (Unix time).",
            registry=self.registry,
        )
        self.cert_renewals = Counter(
            "remora_agent_cert_requests",
            "Workload certificate requests to the CA, by result.",
            ["result"],
            registry=self.registry,
        )
        self.sds_pushes = Counter(
            "remora_agent_sds_pushes",
            "Secrets pushed to Envoy over SDS.",
            ["resource"],
            registry=self.registry,
        )
        self.scrape_failures = Counter(
            "remora_agent_scrape_failures",
            "Failed scrapes while merging metrics, by source (envoy, app).",
            ["source"],
            registry=self.registry,
        )
        self.dropped_families = Counter(
            "remora_agent_merge_conflicts",
            "Metric families dropped from a later source because an earlier one had the name.",
            registry=self.registry,
        )

    def exposition(self) -> str:
        return generate_latest(self.registry).decode()
