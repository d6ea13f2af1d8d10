"""Prometheus metrics merging: scrape the agent, which serves Envoy's and the app's metrics.

As Istio's ``prometheus.istio.io/merge-metrics``: the pod's ``prometheus.io/scrape|path|port``
annotations are pointed at the agent's status port and ``/stats/prometheus``, and the app's own
values travel to the agent in the proxy's ``ISTIO_PROMETHEUS_ANNOTATIONS`` env so that it can
scrape the app and merge. :func:`merge` writes that marker and :func:`unmerge` reads it back to
restore the app's annotations before a re-injection, so injecting twice equals injecting once.
"""

from __future__ import annotations

import json
import re
from typing import Any

from meshlib.syntax import SyntaxProblem, parse_bool

PROMETHEUS_ENV = "ISTIO_PROMETHEUS_ANNOTATIONS"
PROMETHEUS_PATH = "/stats/prometheus"
_PARTS = ("scrape", "path", "port")


def _part(key: str) -> str | None:
    """``scrape``/``path``/``port`` for any spelling that sanitises to ``prometheus_io_<x>``."""
    sanitized = re.sub(r"[^a-zA-Z0-9_]", "_", key)
    for part in _PARTS:
        if sanitized == f"prometheus_io_{part}":
            return part
    return None


def _found(annotations: dict[str, str]) -> dict[str, str]:
    """The pod's Prometheus annotations: part -> the key it is spelled with."""
    return {part: key for key in annotations if (part := _part(key))}


def _scrapes(value: str) -> bool:
    """Istio's reading of the scrape annotation: only a Go boolean false opts out."""
    try:
        return parse_bool(value)
    except SyntaxProblem:
        return True


def merge(annotations: dict[str, str], status_port: int, proxy_env: list[dict[str, Any]]) -> None:
    """Point Prometheus at the agent on ``status_port``; the app's values go to ``proxy_env``.

    Left alone: a pod that opts out of scraping (``prometheus.io/scrape: "false"``) and one
    already pointing at the agent.
    """
    found = _found(annotations)
    if "scrape" in found and not _scrapes(annotations[found["scrape"]]):
        return
    if annotations.get(found.get("port", "")) == str(status_port):
        return
    original = {part: annotations[found[part]] for part in _PARTS if part in found}
    if original:
        proxy_env.append(
            {"name": PROMETHEUS_ENV, "value": json.dumps(original, separators=(",", ":"))}
        )
    for key in found.values():
        del annotations[key]
    annotations["prometheus.io/port"] = str(status_port)
    annotations["prometheus.io/path"] = PROMETHEUS_PATH
    annotations["prometheus.io/scrape"] = "true"


def unmerge(annotations: dict[str, str], original: str | None, status_port: int) -> None:
    """Undo :func:`merge`: restore the app's own annotations from the old proxy's env value
    ``original`` (``None`` when it had none)."""
    found = _found(annotations)
    if annotations.get(found.get("path", "")) != PROMETHEUS_PATH:
        return
    if original is None and annotations.get(found.get("port", "")) != str(status_port):
        return
    for key in found.values():
        del annotations[key]
    try:
        restored = json.loads(original) if original else {}
    except ValueError:
        restored = {}
    if isinstance(restored, dict):
        for part in _PARTS:
            if isinstance(restored.get(part), str):
                annotations[f"prometheus.io/{part}"] = restored[part]
