"""Prometheus metrics merging for ``:15020/stats/prometheus`` (pure text in, text out).

The injector points the pod's ``prometheus.io/*`` annotations at the agent and keeps the app's
own scrape settings in ``ISTIO_PROMETHEUS_ANNOTATIONS``; one scrape of the agent then returns
Envoy's metrics, the app's (when it asked to be scraped) and the agent's own.

Concatenating exposition texts is only valid if no metric family appears twice (Prometheus
rejects a second ``# TYPE`` for a name), so :func:`merge_expositions` keeps the first source's
family and drops a later duplicate, reporting which names it dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from meshlib.syntax import SyntaxProblem, parse_port
from sidecar.errors import ScrapeConfigError

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class AppScrape:
    """Where the application serves its own metrics (from its original annotations)."""

    port: int
    path: str = "/metrics"


def parse_scrape_annotations(raw: str | None) -> AppScrape | None:
    """``{"scrape":"true","path":"/metrics","port":"8080"}`` -> AppScrape; None when not scraped.

    Mirrors Prometheus' own annotation rules: no ``scrape: "true"`` or no port means the app
    did not ask to be scraped, and the path defaults to ``/metrics``.
    """
    if raw is None or not raw.strip():
        return None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ScrapeConfigError(
            f"ISTIO_PROMETHEUS_ANNOTATIONS is not valid JSON ({exc.msg} at character {exc.pos})"
        ) from exc
    if not isinstance(data, dict):
        raise ScrapeConfigError("ISTIO_PROMETHEUS_ANNOTATIONS must be a JSON object")
    if str(data.get("scrape", "")).strip().lower() != "true" or not data.get("port"):
        return None
    try:
        port = parse_port(str(data["port"]))
    except SyntaxProblem as exc:
        raise ScrapeConfigError(f"ISTIO_PROMETHEUS_ANNOTATIONS port: {exc}") from None
    path = str(data.get("path") or "/metrics")
    return AppScrape(port=port, path=path if path.startswith("/") else "/" + path)


def _family_of_comment(line: str) -> str | None:
    """The metric family a ``# HELP``/``# TYPE`` line declares, else None."""
    parts = line.split(None, 3)
    if len(parts) >= 3 and parts[0] == "#" and parts[1] in ("HELP", "TYPE"):
        return parts[2]
    return None


@dataclass(frozen=True)
class Merged:
    text: str
    dropped_families: tuple[str, ...]


def merge_expositions(sources: Iterable[str]) -> Merged:
    """Concatenate Prometheus text expositions, keeping each metric family from its first source.

    A family is the run of lines from its ``# HELP``/``# TYPE`` header to the next header.
    Sample lines before any header (untyped metrics) are kept as they are. OpenMetrics
    ``# EOF`` markers are removed, because the result is served as text format 0.0.4.
    """
    seen: set[str] = set()
    dropped: list[str] = []
    out: list[str] = []
    for text in sources:
        declared_here: set[str] = set()
        skipping = False
        for line in text.splitlines():
            if not line.strip() or line.strip() == "# EOF":
                continue
            family = _family_of_comment(line)
            if family is not None:
                if family in seen and family not in declared_here:
                    if not skipping or family not in dropped:
                        dropped.append(family)
                    skipping = True
                    continue
                skipping = False
                declared_here.add(family)
            elif skipping:
                continue
            out.append(line)
        seen |= declared_here
    return Merged(
        text="\n".join(out) + ("\n" if out else ""), dropped_families=tuple(dict.fromkeys(dropped))
    )
