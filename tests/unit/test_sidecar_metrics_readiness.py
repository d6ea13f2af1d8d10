"""Pure decisions over text: metrics merging, scrape annotations, readiness, live connections."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.promtext import AppScrape, merge_expositions, parse_scrape_annotations
from sidecar.readiness import active_connections, decide_readiness, parse_stats

ENVOY = """# TYPE envoy_cluster_upstream_cx_total counter
envoy_cluster_upstream_cx_total{envoy_cluster_name="xds-grpc"} 3
# TYPE envoy_server_live gauge
envoy_server_live{} 1
"""
APP = """# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{code="200"} 7
# HELP envoy_server_live An app that (badly) reuses an Envoy name.
# TYPE envoy_server_live gauge
envoy_server_live 0
# HELP app_latency_seconds Latency.
# TYPE app_latency_seconds histogram
app_latency_seconds_bucket{le="0.1"} 1
app_latency_seconds_bucket{le="+Inf"} 2
app_latency_seconds_sum 0.3
app_latency_seconds_count 2
# EOF
"""
AGENT = """# HELP remora_agent_ready Ready.
# TYPE remora_agent_ready gauge
remora_agent_ready 1.0
"""


def test_merge_keeps_every_source_and_drops_only_duplicate_families() -> None:
    merged = merge_expositions([ENVOY, APP, AGENT])
    families = {f.name: f for f in text_string_to_metric_families(merged.text)}
    assert set(families) == {
        "envoy_cluster_upstream_cx",
        "envoy_server_live",
        "http_requests",
        "app_latency_seconds",
        "remora_agent_ready",
    }
    # Envoy's value survives; the app's clashing family is dropped and reported.
    assert [s.value for s in families["envoy_server_live"].samples] == [1.0]
    assert merged.dropped_families == ("envoy_server_live",)
    assert "# EOF" not in merged.text
    assert len(families["app_latency_seconds"].samples) == 4


def test_merge_of_nothing_is_empty_and_missing_newlines_are_fixed() -> None:
    assert merge_expositions(["", ""]).text == ""
    merged = merge_expositions(["a 1", "b 2"])
    assert merged.text == "a 1\nb 2\n"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"scrape":"true","path":"/metrics","port":"9080"}', AppScrape(9080, "/metrics")),
        ('{"scrape":"true","port":"9080"}', AppScrape(9080, "/metrics")),
        ('{"scrape":"true","path":"stats","port":9}', AppScrape(9, "/stats")),
        ('{"scrape":"false","port":"9080"}', None),
        ('{"path":"/metrics"}', None),
        (None, None),
    ],
)
def test_scrape_annotations(raw: str | None, expected: AppScrape | None) -> None:
    assert parse_scrape_annotations(raw) == expected


STATS_READY = """cluster_manager.cds.update_rejected: 0
cluster_manager.cds.update_success: 1
listener_manager.lds.update_rejected: 1
listener_manager.lds.update_success: 0
cluster_manager.cds.update_duration: No recorded values
"""


def test_readiness_needs_live_envoy_and_first_cds_and_lds() -> None:
    stats = parse_stats(STATS_READY)
    assert stats["cluster_manager.cds.update_success"] == 1
    assert "cluster_manager.cds.update_duration" not in stats
    # A rejected LDS still means the control plane answered.
    assert decide_readiness(stats, server_state="LIVE").ready
    assert not decide_readiness(stats, server_state="LIVE", draining=True).ready
    no_lds = {**stats, "listener_manager.lds.update_rejected": 0}
    assert (
        decide_readiness(no_lds, server_state="LIVE").reason
        == "no LDS config received from the control plane yet"
    )
    # Envoy LIVE without any config (it goes live when the control plane is unreachable).
    assert "no CDS and LDS" in decide_readiness({}, server_state="LIVE").reason
    # A listener still warming (e.g. waiting for its SDS certificate) keeps Envoy initializing.
    warming = decide_readiness(stats, server_state="INITIALIZING")
    assert not warming.ready and "INITIALIZING" in warming.reason


def test_active_connections_skip_internal_listeners_and_per_thread_copies() -> None:
    stats = parse_stats(
        """listener.admin.downstream_cx_active: 2
listener.admin.main_thread.downstream_cx_active: 2
listener.health.downstream_cx_active: 1
listener.0.0.0.0_15006.downstream_cx_active: 3
listener.0.0.0.0_15006.worker_0.downstream_cx_active: 2
listener.0.0.0.0_15006.worker_1.downstream_cx_active: 1
listener.127.0.0.1_8080.downstream_cx_active: 1
http.inbound.downstream_cx_active: 9
"""
    )
    assert active_connections(stats, ["admin", "health", "prometheus"]) == 4
    assert active_connections(stats, []) == 7
