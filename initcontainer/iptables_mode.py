"""iptables-legacy or iptables-nft: which x_tables backend this pod's rules belong in.

Both backends can hold NAT rules at the same hook at once, and then whichever table the
kernel registered last decides where a connection goes (measured here; see
capture-notes.md). So we never write to both: we read each backend's ``*-save`` output and
follow the one that is already in use. Reading is done only with ``*-save``, because
``iptables-legacy -S`` creates an empty nat table as a side effect, and an empty table then
looks like "legacy is in use" to tools that count output lines (Istio issue 61020); we count
real rules (``-A`` lines) instead.
"""

from __future__ import annotations

from initcontainer.errors import CAPABILITY_HINT, CaptureError, hint_for
from initcontainer.records import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

    Mode = Literal["nft", "legacy"]
MODES: tuple[Mode, ...] = ("nft", "legacy")


class ModeProbe(NamedTuple):
    """What ``iptables-<mode>-save`` (and ``ip6tables-<mode>-save``) showed."""

    mode: Mode
    available: bool
    rules: int = 0  # every rule, ours and other tools'
    own_rules: int = 0  # rules in or into ISTIO_* chains, or carrying our marker
    error: str = ""


class ModeChoice(NamedTuple):
    mode: Mode
    reason: str


def choose_mode(forced: Mode | None, nft: ModeProbe, legacy: ModeProbe) -> ModeChoice:
    """Pick the backend. Pure: the probes are the only input.

    Order: an explicit ``--iptables-mode``; the backend that already holds our rules (a
    re-run must replace them, not add a second set elsewhere); legacy when only legacy holds
    rules (the node or CNI uses it); nft otherwise, when it works; legacy as the last resort.
    """
    if forced is not None:
        return ModeChoice(forced, f"--iptables-mode={forced} was given")
    if hint_for(nft.error) == CAPABILITY_HINT:
        # Without NET_ADMIN, nft refuses to be read while legacy reads as empty: falling back
        # to legacy would only fail later with a less useful message.
        raise CaptureError(
            f"cannot read the iptables-nft rules: {nft.error.strip()}", CAPABILITY_HINT
        )
    if nft.own_rules and legacy.own_rules:
        raise CaptureError(
            f"capture rules exist in both iptables-nft ({nft.own_rules}) and iptables-legacy "
            f"({legacy.own_rules}): which one the kernel uses depends on registration order",
            "remove both with --cleanup-only, then run again (or pass --iptables-mode)",
        )
    for probe in (nft, legacy):
        if probe.own_rules:
            return ModeChoice(
                probe.mode, f"iptables-{probe.mode} already holds {probe.own_rules} capture rules"
            )
    if legacy.rules and not nft.rules:
        return ModeChoice(
            "legacy",
            f"iptables-legacy holds {legacy.rules} rules and iptables-nft none: "
            "the node uses legacy",
        )
    if nft.available:
        if nft.rules:
            reason = f"iptables-nft holds {nft.rules} rules"
            if legacy.rules:
                reason += f" (legacy holds {legacy.rules} too; nft wins, as in Kuma)"
            return ModeChoice("nft", reason)
        return ModeChoice("nft", "no rules in either backend; nft is the default")
    if legacy.available:
        return ModeChoice("legacy", f"iptables-nft is unusable ({nft.error.strip()})")
    raise CaptureError(
        "neither iptables-nft-save nor iptables-legacy-save works "
        f"(nft: {nft.error.strip() or 'unavailable'}; "
        f"legacy: {legacy.error.strip() or 'unavailable'})",
        "install the iptables package (1.8 or later) in the init container image",
    )
