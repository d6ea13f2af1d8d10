"""Which Envoy stats exist: the inclusion list built as Istio builds it, the pod's additions first.

Envoy creates ~100 stats per cluster and more per listener, route and virtual host. Most are
never read, yet each costs memory and CPU when the resource arrives: with every stat, a sidecar
given 1,000 services spends most of a full push creating stats. Istio's bootstrap therefore
ships a ``stats_config.stats_matcher`` inclusion list, and only the stats it names are
created; the others are no-ops inside Envoy. We build the list the way Istio does
(``pkg/bootstrap/config.go``), with one difference that matters for speed:

* the pod's additions: the annotations ``sidecar.istio.io/statsInclusionPrefixes``,
  ``statsInclusionSuffixes`` and ``statsInclusionRegexps`` (comma lists), or, when an
  annotation is absent, ProxyConfig ``proxyStatsMatcher.inclusionPrefixes`` /
  ``inclusionSuffixes`` / ``inclusionRegexps`` (the annotation replaces, not merges, as in
  Istio); ``{pod_ip}`` in an entry becomes one entry per pod IP (``http.{pod_ip}_`` keeps the
  inbound HCM stats; an IPv6 address with Envoy's ``_`` for ``:``);
* the stats readiness, the dashboards and Remora's tools read, each as a prefix ending in
  ``.``: ``cluster_manager.``, ``listener_manager.``, ``server.``, ``cluster.xds-grpc.`` and
  ``wasm.`` (Istio's required prefixes), ``control_plane.`` (xDS connection state, for
  ``remora proxy-status``), ``http.`` (every HTTP connection manager's request counters and
  response classes: Remora's request metrics, per direction and port, inbound
  ``http.inbound_0.0.0.0_<port>.downstream_rq_2xx``) and ``listener.`` when the drain waits
  for connections to close (``EXIT_ON_ZERO_ACTIVE_CONNECTIONS`` counts
  ``listener.*.downstream_cx_active``).

Why only ``.``-ended prefixes by default: Envoy turns those into a check on the stat's encoded
name, and when *every* entry is one it rejects the others at once. A single suffix, regular
expression or other prefix makes it convert every stat name it creates to a string, match it,
and remember the rejection (``source/common/stats/stats_matcher_impl.cc``): at 1,000 services
that was 20-25 % of Envoy's CPU for a full push (``bench/xds_full_push.py``, measured against
``reject_all``, which the ``.``-ended list matches). So Istio's other required entries are
left out, each for a filter Remora does not run, whose stats would not exist: the telemetry
filter's ``reporter=``, ``component`` and ``istio``, the RBAC filter's ``rbac.allowed`` /
``rbac.denied`` / ``shadow_*`` suffixes (an HTTP RBAC filter's land under ``http.`` anyway),
and route ``stat_prefix`` stats (``vhost.*.route.*``; Remora sets none). Per-destination
counters (``cluster.outbound|…``) are not created by default either, as in Istio; a pod asks
for them with ``sidecar.istio.io/statsInclusionPrefixes: cluster.outbound|,cluster.inbound|``
(and pays the slower path). Envoy creates a cluster's traffic counters only when it carries
its first request (deferred creation, see :mod:`sidecar.bootstrap`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshlib.syntax import split_list
from sidecar.errors import StatsConfigError

PREFIXES_ANNOTATION = "sidecar.istio.io/statsInclusionPrefixes"
SUFFIXES_ANNOTATION = "sidecar.istio.io/statsInclusionSuffixes"
REGEXPS_ANNOTATION = "sidecar.istio.io/statsInclusionRegexps"

# Istio's required prefixes (its bootstrap lists them without the final ".", which costs
# Envoy's fast rejection; every stat they are meant for has one).
ISTIO_PREFIXES = (
    "cluster_manager.",
    "listener_manager.",
    "server.",
    "cluster.xds-grpc.",
    "wasm.",
)
# Remora's own needs (see the module docstring).
REMORA_PREFIXES = ("control_plane.", "http.")
DRAIN_PREFIXES = ("listener.",)
POD_IP_VARIABLE = "{pod_ip}"


@dataclass(frozen=True)
class StatsInclusion:
    """The stats Envoy creates: a name is kept when it matches any entry."""

    prefixes: tuple[str, ...]
    suffixes: tuple[str, ...]
    regexps: tuple[str, ...]


def _pod_entries(
    annotation: str | None, proxy_config: Sequence[Any] | None, where: str
) -> list[str]:
    """The pod's own entries: the annotation when set, else ProxyConfig's list."""
    if annotation and annotation.strip():
        return split_list(annotation)
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
                    *prefixes,
                    *ISTIO_PREFIXES,
                    *REMORA_PREFIXES,
                    *(DRAIN_PREFIXES if drain_on_zero_connections else ()),
                ],
                pod_ips,
            )
        ),
        suffixes=_unique(_with_pod_ips(suffixes, pod_ips)),
        regexps=_unique(_with_pod_ips(regexps, pod_ips)),
    )


def stats_matcher(inclusion: StatsInclusion) -> dict[str, Any]:
    """Envoy's ``stats_config.stats_matcher`` for the inclusion list."""
    patterns: list[dict[str, Any]] = [{"prefix": p} for p in inclusion.prefixes]
    patterns += [{"suffix": s} for s in inclusion.suffixes]
    patterns += [{"safe_regex": {"regex": r}} for r in inclusion.regexps]
    return {"inclusion_list": {"patterns": patterns}}
