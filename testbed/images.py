"""Images as the stand-in kubelet knows them: an image repository names a local program.

There are no image layers here: a container runs a program of this machine, with the
entrypoint, command, working directory, environment and user its :class:`Image` says, so a
test decides what ``remora/proxy:1.0`` or ``remora-e2e/echo:1`` runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Image:
    """What the harness runs for an image: its entrypoint, working directory and environment.

    ``workdir`` None means ``/`` and no per-container directory is mounted there.
    """

    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...] = ()
    workdir: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    user: tuple[int, int] = (0, 0)


def image_repository(image: str) -> str:
    """``docker.io/remora/remora:0.1.0`` -> ``docker.io/remora/remora`` (tag and digest dropped)."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name
