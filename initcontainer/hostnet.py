"""The non-iptables part of capture: an address on ``lo`` and TPROXY's policy routes.

* IPv6 pods need ``::6/128`` on ``lo``: Envoy's inbound passthrough binds to it, and unlike
  127.0.0.0/8 the IPv6 loopback is a single address.
* TPROXY needs marked packets delivered locally: ``ip rule fwmark <mark> lookup <table>`` and
  a ``local`` default route in that table.

Each step is idempotent (``replace``, or delete-then-add for rules, which have no replace),
so a re-run converges, and :func:`remove_tproxy_route` undoes the routing.

Both need ``ip`` (iproute2), which an image may lack (Debian's iptables does not pull it in):
a missing ``ip`` is a :class:`CaptureError` that says what to install, and a clean-up of
REDIRECT capture does not need it at all.
"""

from __future__ import annotations

from initcontainer import process
from initcontainer.errors import CaptureError, hint_for
from initcontainer.plan import CapturePlan, TproxyRoute

IPV6_PASSTHROUGH_ADDRESS = "::6/128"
IP_INSTALL_HINT = (
    "install iproute2 in the init container's image (Debian/Ubuntu: apt-get install iproute2; "
    "Alpine: apk add iproute2; the Remora image ships it): capture needs 'ip' to add ::6 to "
    "lo for IPv6 pods and for TPROXY's policy routing"
)


def _ip(*args: str, check: bool = True, missing_ok: bool = False) -> bool:
    """Run ``ip args``. False when ``ip`` is not installed and ``missing_ok``, else True.

    ``check`` is about ``ip``'s exit status only: a tool that cannot be run at all is a
    :class:`CaptureError` either way (``missing_ok`` excuses a missing one, nothing else).
    """
    argv = ["ip", *args]
    try:
        result = process.run(argv)
    except FileNotFoundError:
        if missing_ok:
            return False
        raise CaptureError("ip is not installed", IP_INSTALL_HINT) from None
    except OSError as error:
        raise process.failure("ip", error, IP_INSTALL_HINT) from None
    if check and result.returncode != 0:
        raise CaptureError(
            f"'{' '.join(argv)}' failed: {result.stderr.strip()}", hint_for(result.stderr)
        )
    return True


def _families(plan: CapturePlan) -> list[str]:
    return ["-4", "-6"] if plan.ipv6 is not None else ["-4"]


def setup(plan: CapturePlan) -> None:
    if plan.needs_ipv6_passthrough_address:
        _ip("-6", "addr", "replace", IPV6_PASSTHROUGH_ADDRESS, "dev", "lo")
    if plan.tproxy_route is not None:
        for family in _families(plan):
            _set_route(family, plan.tproxy_route)


def _set_route(family: str, route: TproxyRoute) -> None:
    mark, table = str(route.mark), str(route.table)
    everything = "0.0.0.0/0" if family == "-4" else "::/0"
    _ip(family, "rule", "del", "fwmark", mark, "lookup", table, check=False)
    _ip(family, "rule", "add", "fwmark", mark, "lookup", table)
    _ip(family, "route", "replace", "local", everything, "dev", "lo", "table", table)


def remove_tproxy_route(mark: int, table: int, *, ip_required: bool) -> bool:
    """Undo TPROXY's policy routing for ``mark``/``table`` (absent entries are not errors).

    Returns False when ``ip`` is not installed and not ``ip_required``: without ``ip`` no
    install from this image can have added the routing, so there is nothing of ours to
    undo, and a clean-up of REDIRECT capture must not fail for want of a tool it does not
    use. A clean-up of TPROXY capture passes ``ip_required=True``: there a missing ``ip``
    is a :class:`CaptureError` that says what to install.

    ``::6`` stays on ``lo``: it is harmless without the rules, and a proxy still running
    may be bound to it.
    """
    for family in ("-4", "-6"):
        rule = (family, "rule", "del", "fwmark", str(mark), "lookup", str(table))
        if not _ip(*rule, check=False, missing_ok=not ip_required):
            return False
        _ip(family, "route", "flush", "table", str(table), check=False)
    return True
