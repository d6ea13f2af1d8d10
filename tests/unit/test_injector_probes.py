"""Probe rewriting edge cases that the golden files do not show."""

from __future__ import annotations

from injector.probes import rewrite_probes


def test_a_port_of_non_ascii_digits_is_a_name_that_does_not_resolve_so_the_probe_is_kept() -> None:
    probe = {"httpGet": {"path": "/ready", "port": "²"}}
    app = {"name": "app", "readinessProbe": probe, "ports": [{"containerPort": 80}]}
    assert rewrite_probes([app], status_port=15020) == {}
    assert app["readinessProbe"] == {"httpGet": {"path": "/ready", "port": "²"}}


def test_a_port_given_as_a_decimal_string_is_rewritten() -> None:
    app = {"name": "app", "readinessProbe": {"tcpSocket": {"port": "8080"}}}
    probers = rewrite_probes([app], status_port=15020)
    assert probers == {"/app-health/app/readyz": {"tcpSocket": {"port": 8080}}}
    assert app["readinessProbe"] == {"httpGet": {"path": "/app-health/app/readyz", "port": 15020}}
