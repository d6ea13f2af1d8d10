"""Reading the envelope every Kubernetes object shares: its kind, name, namespace and age.

Every converter (:mod:`controlplane.convert` for the core objects,
:mod:`controlplane.networking.parse` for Istio's networking API) names an object the same way
in its errors and orders objects by the same creation time, so the rules live here once.
Pure: no Kubernetes client, no YAML.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from controlplane.errors import ObjectError

Object = Mapping[str, Any]
"""A Kubernetes object as the API serves it (JSON, camelCase) or a YAML file holds it."""


def object_ref(obj: Object) -> str:
    """``Kind namespace/name`` for log lines and errors."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    name = meta.get("name", "?")
    return f"{obj.get('kind', '?')} {ns}/{name}" if ns else f"{obj.get('kind', '?')} {name}"


def namespace_and_name(obj: Object) -> tuple[str, str]:
    """The object's namespace (``default`` when unset, as kubectl applies it) and name."""
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not name:
        raise ObjectError(f"{object_ref(obj)}: metadata.name is missing")
    return str(meta.get("namespace") or "default"), str(name)


def creation_timestamp(obj: Object) -> str:
    """The creationTimestamp as UTC ISO text (sorts by time); "" when absent (sorts first).

    The API serves ``2024-05-01T10:00:00Z``; YAML files may hand over a parsed datetime.
    Istio breaks ties between equally specific objects by age, oldest first, so every
    converter keeps this text on its value as ``created``.
    """
    raw = (obj.get("metadata") or {}).get("creationTimestamp")
    if raw is None or raw == "":
        return ""
    try:
        when = raw if isinstance(raw, datetime) else datetime.fromisoformat(str(raw))
    except ValueError:
        raise ObjectError(
            f"{object_ref(obj)}: metadata.creationTimestamp {raw!r} is not RFC 3339"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat()
