"""Small helpers for reading untrusted Kubernetes objects held as plain JSON data."""

from __future__ import annotations

from typing import Any


def mapping(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (never ``None``)."""
    return value if isinstance(value, dict) else {}


def env_value(container: dict[str, Any] | None, name: str) -> str | None:
    """The literal ``value`` of env variable ``name`` in ``container`` (None if it has none)."""
    if container is None:
        return None
    for entry in container.get("env") or ():
        if isinstance(entry, dict) and entry.get("name") == name and "value" in entry:
            return str(entry["value"])
    return None
