"""The value syntaxes Istio's users write, parsed by one rule each for every role.

An annotation the webhook admits must never be a flag the init container then refuses in a
crash loop, and ``1m30s`` must mean the same in a mesh config, a CLI flag and an environment
variable. So each syntax lives here once:

- **booleans** as Go's ``strconv.ParseBool`` reads them (Istio parses its bool annotations,
  istio-iptables flags and ``ISTIO_*`` environment variables with it);
- **durations** as Go's ``time.ParseDuration`` reads them (``500ms``, ``1m30s``, ``1.5h``), and
  optionally a bare number of seconds where Istio's own knob is in seconds
  (``TERMINATION_DRAIN_DURATION_SECONDS``) or a CLI flag would be expected to take one;
- **lists** as Istio splits them: comma separated, empty items dropped (we also trim spaces);
- **CIDRs** as ``net.ParseCIDR``/``netip.ParsePrefix`` read them: a prefix length is required
  (Istio's injector and istio-iptables both refuse a bare ``10.0.0.1``), host bits are allowed;
- **ports** as integers 1-65535 in ASCII digits.

Each parser raises :class:`SyntaxProblem` with a message that says what was expected but not
where: the caller knows the annotation, flag or field, and names it.

Imported by the init container on every pod start: no imports at run time but ``ipaddress``,
and that one only when there is an address to parse.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ipaddress

    IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

WILDCARD = "*"
"""Istio's "every port" / "every address" in list-valued annotations and flags."""


class SyntaxProblem(ValueError):
    """A value is not in the expected syntax. The message says what was expected."""


# --- booleans ---------------------------------------------------------------------------------

_TRUE = frozenset(("1", "t", "T", "TRUE", "true", "True"))
_FALSE = frozenset(("0", "f", "F", "FALSE", "false", "False"))


def parse_bool(text: str) -> bool:
    """Go's ``strconv.ParseBool``: 1, t, T, TRUE, true, True and their false counterparts.

    Surrounding spaces are trimmed; anything else (``yes``, ``on``, ``tRuE``, empty) is
    refused, as Go refuses it. A caller for which empty means "unset" checks that first.
    """
    value = text.strip()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SyntaxProblem(f"{text!r} is not a boolean (use true or false)")


# --- durations --------------------------------------------------------------------------------

_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,  # µ MICRO SIGN
    "\u03bcs": 1e-6,  # μ GREEK SMALL LETTER MU
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_MAX_SECONDS = (2**63 - 1) / 1e9  # Go's time.Duration is int64 nanoseconds: about 292 years
_DURATION_HINT = "use e.g. 500ms, 45s or 1m30s"


def parse_duration(text: str, *, bare_seconds: bool = False) -> float:
    """Go's ``time.ParseDuration``, in float seconds; never negative, NaN or infinite.

    ``bare_seconds`` also takes a plain non-negative number as seconds (``5``, ``2.5``), for
    the places where Istio's knob is a number of seconds or a CLI user would type one. Go
    itself takes only ``0`` without a unit. Negative durations, which Go allows, mean nothing
    anywhere Remora takes one, so they are refused.
    """
    value = text.strip()
    if bare_seconds:
        seconds = _plain_number(value)
        if seconds is not None:
            return seconds
    negative = value.startswith("-")
    if value.startswith(("-", "+")):
        value = value[1:]
    if value == "0":  # Go's one unit-less duration, signed or not
        return 0.0
    if not value:
        raise SyntaxProblem(f"{text!r} is not a duration ({_DURATION_HINT})")
    total, position = 0.0, 0
    while position < len(value):
        number, position = _duration_number(value, position, text)
        unit_start = position
        while position < len(value) and not (value[position].isdigit() or value[position] == "."):
            position += 1
        unit = value[unit_start:position]
        if not unit:
            raise SyntaxProblem(f"{text!r} is missing a unit ({_DURATION_HINT})")
        if unit not in _UNIT_SECONDS:
            raise SyntaxProblem(
                f"{text!r} has the unknown unit {unit!r} (units: ns, us, ms, s, m, h)"
            )
        total += number * _UNIT_SECONDS[unit]
    if negative and total > 0:
        raise SyntaxProblem(f"{text!r} is negative: a duration must be 0 or more")
    if total > _MAX_SECONDS:
        raise SyntaxProblem(f"{text!r} is too long a duration (at most about 292 years)")
    return total


def _duration_number(value: str, position: int, text: str) -> tuple[float, int]:
    """The ``[0-9]*(\\.[0-9]*)?`` at ``position``, with at least one digit, and where it ends."""
    start = position
    while position < len(value) and value[position].isdigit():
        position += 1
    if position < len(value) and value[position] == ".":
        position += 1
        while position < len(value) and value[position].isdigit():
            position += 1
    digits = value[start:position]
    if not digits.strip(".") or not digits.isascii():
        raise SyntaxProblem(f"{text!r} is not a duration ({_DURATION_HINT})")
    return float(digits), position


def _plain_number(value: str) -> float | None:
    """``value`` as non-negative finite seconds when it is a plain decimal number, else None."""
    if not value or not value.isascii() or not value.replace(".", "", 1).isdigit():
        return None
    seconds = float(value)
    if seconds > _MAX_SECONDS:
        raise SyntaxProblem(f"{value!r} is too long a duration (at most about 292 years)")
    return seconds


# --- lists, CIDRs and ports -------------------------------------------------------------------


def split_list(text: str) -> list[str]:
    """Istio's list syntax: comma separated, empty items dropped (spaces trimmed as well)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def is_wildcard(text: str) -> bool:
    """Whether a list value is Istio's ``*`` (every port or address)."""
    return text.strip() == WILDCARD


def parse_cidr(text: str) -> IPNetwork:
    """One CIDR, IPv4 or IPv6, prefix length required (``10.0.0.1/32`` for one address)."""
    import ipaddress

    value = text.strip()
    slash = "/" in value
    if not slash:
        try:
            host = ipaddress.ip_address(value)
        except ValueError:
            raise SyntaxProblem(f"{text!r} is not a CIDR (e.g. 10.0.0.0/8 or fd00::/8)") from None
        raise SyntaxProblem(
            f"{text!r} has no prefix length: write {host}/{host.max_prefixlen} for one address"
        )
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise SyntaxProblem(
            f"{text!r} is not a CIDR (e.g. 10.0.0.0/8 or fd00::/8): {exc}"
        ) from None


def parse_cidr_list(text: str) -> tuple[IPNetwork, ...]:
    """A comma list of CIDRs, duplicates dropped in order. ``*`` is the caller's to handle."""
    networks: list[IPNetwork] = []
    for item in split_list(text):
        network = parse_cidr(item)
        if network not in networks:
            networks.append(network)
    return tuple(networks)


def parse_port(text: str) -> int:
    """A TCP/UDP port number, 1-65535, written in ASCII digits."""
    value = text.strip()
    if not (value.isascii() and value.isdecimal()):
        raise SyntaxProblem(f"{text!r} is not a port number (1-65535)")
    port = int(value)
    if not 1 <= port <= 65535:
        raise SyntaxProblem(f"{text!r} is outside the port range 1-65535")
    return port


def parse_port_list(text: str) -> tuple[int, ...]:
    """A comma list of ports, duplicates dropped in order. ``*`` is the caller's to handle."""
    return tuple(dict.fromkeys(parse_port(item) for item in split_list(text)))
