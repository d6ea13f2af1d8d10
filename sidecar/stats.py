"""Which Envoy stats exist: Istio's inclusion list, the pod's additions, and Remora's own needs.

Envoy creates ~100 stats per cluster and more per listener, route and virtual host. Most are
never read, yet each costs memory and CPU when the resource arrives: with every stat, a sidecar
given 1,000 services spends most of a full push creating stats. Istio's bootstrap therefore
ships a ``stats_config.stats_matcher`` inclusion list, and only the stats it names are
created; the others are no-ops inside Envoy. We build the same list, the same way
(``pkg/bootstrap/config.go``):

* the pod's additions: the annotations ``sidecar.istio.io/statsInclusionPrefixes``,
  ``statsInclusionSuffixes`` and ``statsInclusionRegexps`` (comma lists), or, when an
  annotation is absent, ProxyConfig ``proxyStatsMatcher.inclusionPrefixes`` /
  ``inclusionSuffixes`` / ``inclusionRegexps`` (the annotation replaces, not merges, as in
  Istio); ``{pod_ip}`` in an entry becomes one entry per pod IP (``http.{pod_ip}_`` keeps the
  inbound HCM stats; an IPv6 address with Envoy's ``_`` for ``:``);
* Istio's required entries: the prefixes readiness and the dashboards read
  (``cluster_manager``, ``listener_manager``, ``server``, ``cluster.xds-grpc``, ``wasm``,
  ``reporter=``, ``component``, ``istio``), the RBAC suffixes, ``downstream_cx_active`` when
  the drain waits for connections to close (``EXIT_ON_ZERO_ACTIVE_CONNECTIONS``), and
  route stats (``vhost.<vh>.route.<route>.*``, for routes with a ``stat_prefix``);
* Remora's own: ``control_plane`` (xDS connection state, which ``remora proxy-status`` users
  and the integration tests read), and the per-cluster request counters (``upstream_rq_total``
  and the 2xx/4xx/5xx classes): Remora has no Istio telemetry filter (``reporter=`` stats), so
  without them a mesh would have no request metrics at all. Envoy creates these counters when
  a cluster carries its first request (deferred creation, see :mod:`sidecar.bootstrap`), so
  an idle cluster costs nothing for them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PREFIXES_ANNOTATION = "sidecar.istio.io/statsInclusionPrefixes"
SUFFIXES_ANNOTATION = "sidecar.istio.io/statsInclusionSuffixes"
REGEXPS_ANNOTATION = "sidecar.istio.io/statsInclusionRegexps"

# Istio's required entries, in Istio's order ("reporter=" first, "component,istio" last).
ISTIO_PREFIXES = (
    "cluster_manager",
    "listener_manager",
    "server",
    "cluster.xds-grpc",
    "wasm",
)
ISTIO_V2_PREFIXES = ("reporter=",)
ISTIO_V2_SUFFIX_PREFIXES = ("component", "istio")
RBAC_SUFFIXES = ("rbac.allowed", "rbac.denied", "shadow_allowed", "shadow_denied")
DRAIN_SUFFIXES = ("downstream_cx_active",)
ROUTE_REGEXPS = (r"vhost\..*\.route\..*",)

# Remora's own needs (see the module docstring).
REMORA_PREFIXES = ("control_plane",)
REQUEST_SUFFIXES = ("upstream_rq_total", "upstream_rq_2xx", "upstream_rq_4xx", "upstream_rq_5xx")

POD_IP_VARIABLE = "{pod_ip}"


class StatsConfigError(ValueError):
    """A stats inclusion setting cannot be used; the message names it and the fix."""


@dataclass(frozen=True)
class StatsInclusion:
    """The stats Envoy creates: a name is kept when it matches any entry."""

    prefixes: tuple[str, ...]
    suffixes: tuple[str, ...]
    regexps: tuple[str, ...]


def _split(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


def _pod_entries(
    annotation: str | None, proxy_config: Sequence[Any] | None, where: str
) -> list[str]:
    """The pod's own entries: the annotation when set, else ProxyConfig's list."""
    if annotation and annotation.strip():
        return _split(annotation)
    if proxy_config is None:
        return []
    if isinstance(proxy_config, str) or not isinstance(proxy_config, Sequence):
        raise StatsConfigError(f'{where} must be a list of strings, e.g. ["http.{{pod_ip}}_"]')
    return [str(item).strip() for item in proxy_config if str(item).strip()]


def _with_pod_ips(entries: Sequence[str], pod_ips: Sequence[str]) -> list[str]:
    """``http.{pod_ip}_`` -> ``http.10.1.2.3_`` (one entry per pod IP), as Istio does. Envoy
    writes ``_`` for every ``:`` in stat names, so an IPv6 address is matched that way."""
    out: list[str] = []
    for entry in entries:
        if POD_IP_VARIABLE in entry:
            out.extend(entry.replace(POD_IP_VARIABLE, ip.replace(":", "_")) for ip in pod_ips)
        else:
            out.append(entry)
    return out


def _unique(entries: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(entries))


def stats_inclusion(
    *,
    annotations: Mapping[str, str],
    proxy_stats_matcher: Any,
    pod_ips: Sequence[str],
    drain_on_zero_connections: bool,
) -> StatsInclusion:
    """Decide the inclusion list (pure); raise :class:`StatsConfigError` on bad input.

    ``proxy_stats_matcher`` is ProxyConfig's ``proxyStatsMatcher`` as given (``None`` when
    unset). Regular expressions are checked here so that a typo stops the agent with the
    annotation's name instead of Envoy refusing its bootstrap (Envoy uses RE2, whose syntax
    Python's ``re`` accepts, bar a few constructs RE2 lacks and Envoy would still report).
    """
    if proxy_stats_matcher is None:
        proxy_stats_matcher = {}
    if not isinstance(proxy_stats_matcher, Mapping):
        raise StatsConfigError(
            "PROXY_CONFIG proxyStatsMatcher must be an object with inclusionPrefixes, "
            "inclusionSuffixes or inclusionRegexps"
        )
    where = "PROXY_CONFIG proxyStatsMatcher"
    prefixes = _pod_entries(
        annotations.get(PREFIXES_ANNOTATION),
        proxy_stats_matcher.get("inclusionPrefixes"),
        f"{where}.inclusionPrefixes",
    )
    suffixes = _pod_entries(
        annotations.get(SUFFIXES_ANNOTATION),
        proxy_stats_matcher.get("inclusionSuffixes"),
        f"{where}.inclusionSuffixes",
    )
    regexps = _pod_entries(
        annotations.get(REGEXPS_ANNOTATION),
        proxy_stats_matcher.get("inclusionRegexps"),
        f"{where}.inclusionRegexps",
    )
    for regexp in regexps:
        try:
            re.compile(regexp)
        except re.error as exc:
            raise StatsConfigError(
                f"{REGEXPS_ANNOTATION} (or {where}.inclusionRegexps): {regexp!r} is not a "
                f"regular expression ({exc}); separate several with commas"
            ) from exc
    return StatsInclusion(
        prefixes=_unique(
            _with_pod_ips(
                [
                    *ISTIO_V2_PREFIXES,
                    *prefixes,
                    *ISTIO_PREFIXES,
                    *ISTIO_V2_SUFFIX_PREFIXES,
                    *REMORA_PREFIXES,
                ],
                pod_ips,
            )
        ),
        suffixes=_unique(
            _with_pod_ips(
                [
                    *suffixes,
                    *RBAC_SUFFIXES,
                    *(DRAIN_SUFFIXES if drain_on_zero_connections else ()),
                    *REQUEST_SUFFIXES,
                ],
                pod_ips,
            )
        ),
        regexps=_unique(_with_pod_ips([*regexps, *ROUTE_REGEXPS], pod_ips)),
    )


def stats_matcher(inclusion: StatsInclusion) -> dict[str, Any]:
    """Envoy's ``stats_config.stats_matcher`` for the inclusion list."""
    patterns: list[dict[str, Any]] = [{"prefix": p} for p in inclusion.prefixes]
    patterns += [{"suffix": s} for s in inclusion.suffixes]
    patterns += [{"safe_regex": {"regex": r}} for r in inclusion.regexps]
    return {"inclusion_list": {"patterns": patterns}}
