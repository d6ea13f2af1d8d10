"""The parts several networking kinds share: hosts, string matches, destinations, selectors.

Each reads one field with :class:`~controlplane.networking.fields.Fields` and checks it as
istiod's validation does (pkg/config/validation), so a rule such as "a host's ``*`` may only
be its whole first label" is written once for every kind.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

from controlplane.model import Protocol, infer_protocol
from controlplane.networking.fields import Context, Fields
from controlplane.networking.model import (
    Destination,
    HeaderMatch,
    IPNetwork,
    Labels,
    MatchKind,
    StringMatch,
)
from meshlib.syntax import SyntaxProblem, parse_cidr

_HOST_LABEL = re.compile(r"[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_PROTOCOLS = {protocol.value.upper(): protocol for protocol in Protocol}
# (?= (?! (?<= (?<! and \1 .. \9 (a backslash not itself escaped)
JWT_CLAIM_PREFIX = "@request.auth.claims."
_NOT_RE2 = re.compile(r"\(\?<?[=!]|(?<!\\)\\[1-9]")
_HEADER_NAME = re.compile(r"[-!#$%&'*+.^_`|~0-9a-z]+|:[a-z]+")  # RFC 7230 token, lower case


def host_problem(host: str) -> str | None:
    """Why ``host`` is not a valid service host (``reviews``, ``*.example.com``, ``*``), or None.

    Istio's rule: at most 255 characters; labels of letters, digits and inner dashes, at
    most 63 each, none empty but for a final dot (``istio.io.``); ``*`` only as the whole
    first label; the last label not all digits (an IP address is not a host).
    """
    if not host:
        return "a host must not be empty"
    if len(host) > 255:
        return f"host {host!r} is longer than 255 characters"
    labels = host.removesuffix(".").split(".")
    if labels[-1].isdigit():
        return f"host {host!r}: the last label is all digits (an IP address is not a host)"
    if labels[0] == "*":
        labels = labels[1:]
    for label in labels:
        if not label:
            return f"host {host!r} has an empty label"
        if "*" in label:
            return f"host {host!r}: a wildcard '*' may only be the whole first label, as in *.example.com"
        if len(label) > 63 or not _HOST_LABEL.fullmatch(label):
            return f"host {host!r}: label {label!r} must be letters, digits and inner dashes, at most 63"
    return None


def is_dns1123_label(text: str) -> bool:
    """Kubernetes' name rule for namespaces, and Istio's for subset and port names."""
    return len(text) <= 63 and _DNS1123_LABEL.fullmatch(text) is not None


def check_host(ctx: Context, path: str, host: str) -> str:
    problem = host_problem(host)
    if problem:
        ctx.fail(path, problem)
    return host


def hosts(f: Fields, key: str = "hosts") -> tuple[str, ...]:
    """A required, non-empty list of valid hosts."""
    values = f.strings(key)
    if not values:
        f.fail(key, "at least one host is required")
    for i, host in enumerate(values):
        check_host(f.ctx, f"{f.at(key)}[{i}]", host)
    return values


def check_regex(ctx: Context, path: str, pattern: str) -> str:
    """A regular expression Envoy's RE2 will compile.

    Python's ``re`` checks the syntax; RE2 is nearly a subset of it, except for look-arounds
    and backreferences, which Python accepts and RE2 refuses, so those are refused here.
    """
    if _NOT_RE2.search(pattern):
        ctx.fail(path, f"{pattern!r} uses a look-around or backreference, which RE2 does not have")
    try:
        re.compile(pattern)
    except re.error as exc:
        ctx.fail(
            path, f"{pattern!r} is not a regular expression (RE2, checked with Python re): {exc}"
        )
    return pattern


def string_match(f: Fields, key: str) -> StringMatch | None:
    """The ``StringMatch`` field ``key``; None when unset."""
    raw = f.raw.get(key)
    return None if raw is None else match_value(f.ctx, f.at(key), raw)


def match_value(
    ctx: Context, path: str, raw: object, *, empty_is_presence: bool = False
) -> StringMatch | None:
    """A ``StringMatch``: exactly one of exact, prefix, regex.

    An empty ``{}`` is an error, except in header and query-parameter maps, where it means
    "present" (``empty_is_presence``; then None).
    """
    match = Fields(ctx, path, raw, [kind.value for kind in MatchKind])
    set_kinds = [kind for kind in MatchKind if kind.value in match.raw]
    if not set_kinds and empty_is_presence:
        return None
    if len(set_kinds) != 1:
        ctx.fail(path, "a string match needs exactly one of exact, prefix, regex")
    kind = set_kinds[0]
    value = match.text(kind.value)
    if kind is MatchKind.REGEX:
        check_regex(ctx, match.at(kind.value), value)
    return StringMatch(kind, value)


def header_matches(
    f: Fields, key: str, *, names_are_headers: bool = True, star_is_presence: bool = False
) -> tuple[HeaderMatch, ...]:
    """``headers`` / ``withoutHeaders`` / ``queryParams``: name -> StringMatch, sorted by name.

    Header names must be lower case (Istio refuses others: HTTP/2 sends them so and Envoy
    matches them so); query parameter names are taken as written.
    """
    raw = f.mapping(key)
    matches = []
    for name in sorted(raw):
        path = f"{f.at(key)}.{name}"
        if names_are_headers and not _matchable_header(name):
            f.ctx.fail(path, f"header name {name!r} must be a lower-case HTTP header name")
        value = raw[name]
        if star_is_presence and isinstance(value, Mapping) and value == {"regex": "*"}:
            matches.append(HeaderMatch(name, None))
            continue
        matches.append(HeaderMatch(name, match_value(f.ctx, path, value, empty_is_presence=True)))
    return tuple(matches)


def _matchable_header(name: str) -> bool:
    """A lower-case header name, or a JWT claim (``@request.auth.claims.groups``) to route on."""
    return name.startswith(JWT_CLAIM_PREFIX) or _HEADER_NAME.fullmatch(name) is not None


def header_name(ctx: Context, path: str, name: str) -> str:
    """A header name to set, add, remove or allow (any case: these are not matched)."""
    if not _HEADER_NAME.fullmatch(name.lower()):
        ctx.fail(path, f"{name!r} is not an HTTP header name")
    return name


def port_selector(f: Fields, key: str = "port") -> int | None:
    """Istio's ``PortSelector``: ``{number: N}``."""
    port = f.fields(key, ["number"])
    return None if port is None else port.port("number")


def destination(f: Fields, key: str = "destination") -> Destination:
    """A required ``Destination``: host, optional subset and port."""
    raw = f.fields(key, ["host", "subset", "port"])
    if raw is None:
        f.fail(key, "a destination is required")
    host = raw.text("host")
    if not host:
        raw.fail("host", "a destination host is required")
    if host == "*":
        raw.fail("host", "'*' is not a destination: name a service host")
    subset = raw.text("subset")
    if subset:
        check_label(f.ctx, raw.at("subset"), subset, "subset name")
    return Destination(
        host=check_host(f.ctx, raw.at("host"), host),
        subset=subset,
        port=port_selector(raw),
    )


def check_label(ctx: Context, path: str, text: str, what: str) -> str:
    """A DNS-1123 label (subset and port names): lower case, digits, inner dashes, <= 63."""
    if not is_dns1123_label(text):
        ctx.fail(
            path,
            f"{what} {text!r} must be lower-case letters, digits and inner dashes (at most 63)",
        )
    return text


def port_name(f: Fields, key: str = "name", *, required: bool) -> str:
    """A port's name: a DNS-1123 label, required on ServiceEntry ports, optional on Sidecars."""
    name = f.text(key)
    if not name:
        if required:
            f.fail(key, "a port needs a name")
        return name
    return check_label(f.ctx, f.at(key), name, "port name")


def protocol(f: Fields, name: str, key: str = "protocol") -> Protocol:
    """A port's protocol, case-insensitive as Istio parses it (``http``, ``HTTP``).

    Unset, Istio sniffs the protocol; Remora does not sniff, so it takes the protocol from
    the port name as it does for Kubernetes Services (``http-web`` is HTTP, else TCP).
    """
    text = f.text(key)
    if not text:
        return infer_protocol(name, None)
    found = _PROTOCOLS.get(text.upper())
    if found is None:
        f.fail(key, f"{text!r} is not one of {', '.join(p.value for p in Protocol)}")
    return found


def percent(f: Fields, key: str) -> float | None:
    """Istio's ``Percent`` message, ``{value: 0-100}`` as a double."""
    raw = f.fields(key, ["value"])
    if raw is None:
        return None
    value = raw.number("value", 0, 100)
    return 0.0 if value is None else value


def workload_selector(f: Fields, labels_key: str) -> Labels | None:
    """``workloadSelector``; None when unset (the resource covers every workload).

    Istio spells it two ways: ``{matchLabels: ...}`` (istio.type.v1beta1, DestinationRule)
    and ``{labels: ...}`` (networking's own, ServiceEntry and Sidecar). A selector without
    labels selects every workload of the namespace: istiod warns and admits it, so it is
    kept as ``()``, which differs from None for a ServiceEntry (no workload endpoints).
    """
    raw = f.fields("workloadSelector", [labels_key])
    if raw is None:
        return None
    labels = raw.string_map(labels_key)
    for key, value in labels:
        if not key or "*" in key or "*" in value:
            raw.fail(
                labels_key, f"{key}={value}: selectors take exact labels (no empty key, no '*')"
            )
    return labels


def export_to(f: Fields, namespace: str, *, none_allowed: bool = False) -> tuple[str, ...]:
    """``exportTo``: ``.`` (own namespace), ``*`` (all) or namespace names, each once.

    ``~`` (no namespace: only the service's own proxies see it) exists for ServiceEntries
    only (``none_allowed``). ``*`` and ``~`` stand alone, as istiod requires.
    """
    values = f.strings("exportTo")
    specials = (".", "*", "~") if none_allowed else (".", "*")
    seen: set[str] = set()
    for i, value in enumerate(values):
        path = f"{f.at('exportTo')}[{i}]"
        if value not in specials and not is_dns1123_label(value):
            choices = "'.', '*', '~'" if none_allowed else "'.', '*'"
            f.ctx.fail(path, f"{value!r} is not {choices} or a namespace name")
        key = namespace if value == "." else value
        if key in seen:
            f.ctx.fail(path, f"{value!r} repeats namespace {key} ('.' is this object's own)")
        seen.add(key)
    for special in ("*", "~"):
        if special in values and len(values) > 1:
            f.fail("exportTo", f"{special!r} cannot be combined with other values")
    return values


def is_ip(text: str) -> bool:
    """Whether ``text`` is one IPv4 or IPv6 address (endpoint addresses, listener binds)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def subnet(ctx: Context, path: str, text: str) -> IPNetwork:
    """An IP address or CIDR: Istio's ``addresses`` and ``destinationSubnets`` take both.

    A bare address is its own /32 (or /128); the CIDR form goes through the shared syntax.
    """
    try:
        if "/" in text:
            return parse_cidr(text)
        return ipaddress.ip_network(ipaddress.ip_address(text))
    except (SyntaxProblem, ValueError):
        ctx.fail(path, f"{text!r} is not an IP address or CIDR (e.g. 10.0.0.1 or 10.0.0.0/8)")


def subnets(f: Fields, key: str) -> tuple[IPNetwork, ...]:
    return tuple(subnet(f.ctx, path, str(item)) for path, item in f.items(key))
