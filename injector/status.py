"""``sidecar.istio.io/status``: what an injection added, written by the injector and read back
by un-injection to remove exactly that before injecting again."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

_MEMBERS = (  # JSON member -> attribute, in the order Istio's Go encoder writes them
    ("initContainers", "init_containers"),
    ("containers", "containers"),
    ("volumes", "volumes"),
    ("imagePullSecrets", "image_pull_secrets"),
)


@dataclass(frozen=True)
class InjectionStatus:
    """The names of what one injection added to a pod."""

    init_containers: tuple[str, ...] = ()
    containers: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    image_pull_secrets: tuple[str, ...] = ()

    def encode(self, revision: str) -> str:
        """The annotation value, byte-for-byte as Istio's Go encoder writes it (an empty list
        is ``null``)."""
        status = {member: list(getattr(self, attr)) or None for member, attr in _MEMBERS}
        return json.dumps({**status, "revision": revision}, separators=(",", ":"))

    @classmethod
    def decode(cls, raw: str, fallback: InjectionStatus) -> InjectionStatus:
        """The status in ``raw``: ``fallback`` where a member is missing or not a list, and
        wholly when ``raw`` is not a JSON object (an injection we cannot read is assumed to
        have added what ours adds)."""
        try:
            parsed = json.loads(raw)
        except ValueError:
            return fallback
        if not isinstance(parsed, dict):
            return fallback
        found: dict[str, tuple[str, ...]] = {}
        for member, attr in _MEMBERS:
            value = parsed.get(member, getattr(fallback, attr))
            if value is None:
                value = ()
            if not isinstance(value, list | tuple):
                value = getattr(fallback, attr)
            found[attr] = tuple(str(v) for v in value)
        return replace(fallback, **found)
