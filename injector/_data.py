"""Small helpers for reading untrusted Kubernetes objects held as plain JSON data."""

from __future__ import annotations

from typing import Any


def mapping(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (never ``None``)."""
    return value if isinstance(value, dict) else {}
