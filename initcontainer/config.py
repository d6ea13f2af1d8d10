"""What the user asked for, parsed and validated: the single input of the capture plan.

Every field is explicit. The values istio-iptables derives from the machine it runs on
(whether IPv6 is on, the DNS servers in resolv.conf, the uid of a user name) are read by the
CLI *before* a :class:`CaptureConfig` exists (``initcontainer.environment``, handed to
``initcontainer.config_from_flags`` as ``MachineFacts``), so the same config always produces
the same rules, on any machine.

The parsers here read the string forms of flags and environment variables by the rules of
:mod:`meshlib.syntax`, the webhook's (lists, ports, CIDRs, ``*`` for "everything" where Istio
allows it), and name the flag when a value is wrong.
"""

# Start-up cost matters here (every pod runs this): no enum, no typing at run time
# (``records.NamedTuple``), and ``ipaddress`` only when there is an address to parse.

from __future__ import annotations

from initcontainer.errors import ConfigError
from initcontainer.records import NamedTuple
from meshlib import interception, syntax
from meshlib.ifnames import interface_name_problem
from meshlib.syntax import SyntaxProblem, is_wildcard, parse_cidr, parse_cidr_list, split_list

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ipaddress

    IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
    IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# User and group names as passwd(5)/group(5) allow them (or a numeric id). Plain string
# checks rather than regular expressions: compiling one costs ~1 ms on every pod start.
_NAME_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
# Where istio-iptables' ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR defaults to (canonical form).
DEFAULT_IPV4_LOOPBACK = "127.0.0.1/32"
# The proxy's uid and gid when nothing else is known (istio-iptables' default, Istio's 1337).
DEFAULT_PROXY_ID = "1337"
# istio-iptables caps the include owner-group list (one ``-m owner`` match per group).
MAX_OWNER_GROUPS = 64


class CidrSelection(NamedTuple):
    """A family-aware set of CIDRs, or ``*`` (all addresses of both families)."""

    everything: bool = False
    networks: tuple[IPNetwork, ...] = ()

    def for_family(self, version: int) -> tuple[IPNetwork, ...]:
        return tuple(n for n in self.networks if n.version == version)

    def has_loopback(self) -> bool:
        return any(n.network_address.is_loopback for n in self.networks)

    @property
    def empty(self) -> bool:
        return not self.everything and not self.networks


class PortSelection(NamedTuple):
    """Inbound ports to capture: ``*`` (all, minus exclusions) or an explicit list."""

    everything: bool = False
    ports: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.everything and not self.ports


class OwnerGroups(NamedTuple):
    """``ISTIO_OUTBOUND_OWNER_GROUPS[_EXCLUDE]``: which app groups' outbound traffic is captured.

    Either ``include`` is None (every group) and ``exclude`` lists groups never captured,
    or ``include`` lists the only groups whose traffic is captured.
    """

    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()


class DnsCapture(NamedTuple):
    """DNS redirection to the agent's resolver on 15053 (Istio's ``ISTIO_META_DNS_CAPTURE``)."""

    enabled: bool = False
    capture_all: bool = False
    servers: tuple[IPAddress, ...] = ()

    def servers_for_family(self, version: int) -> tuple[IPAddress, ...]:
        return tuple(s for s in self.servers if s.version == version)


class CaptureConfig(NamedTuple):
    """Everything that decides the rule set. Defaults are istio-iptables' defaults."""

    proxy_port: int = 15001
    inbound_capture_port: int = 15006
    inbound_tunnel_port: int = 15008
    proxy_uids: tuple[str, ...] = (DEFAULT_PROXY_ID,)
    proxy_gids: tuple[str, ...] = (DEFAULT_PROXY_ID,)
    mode: str = interception.REDIRECT  # one of interception.CAPTURE_MODES
    inbound_ports: PortSelection = PortSelection()
    inbound_ports_exclude: tuple[int, ...] = ()
    outbound_cidrs: CidrSelection = CidrSelection()
    outbound_cidrs_exclude: CidrSelection = CidrSelection()
    outbound_ports_include: tuple[int, ...] = ()
    outbound_ports_exclude: tuple[int, ...] = ()
    exclude_interfaces: tuple[str, ...] = ()
    reroute_interfaces: tuple[str, ...] = ()
    tproxy_mark: int = 1337
    tproxy_route_table: int = 133
    dns: DnsCapture = DnsCapture()
    drop_invalid: bool = False
    ipv6: bool = False
    owner_groups: OwnerGroups = OwnerGroups()
    ipv4_loopback_cidr: str = DEFAULT_IPV4_LOOPBACK  # canonical, e.g. 127.0.0.1/32


# --- parsers for the string forms of flags and environment variables ------------------------


def parse_port(value: str, flag: str) -> int:
    try:
        return syntax.parse_port(value)
    except SyntaxProblem as problem:
        raise ConfigError(f"{flag}: {problem}") from None


def parse_port_list(value: str, flag: str) -> tuple[int, ...]:
    """A comma list of ports, duplicates dropped in order."""
    try:
        return syntax.parse_port_list(value)
    except SyntaxProblem as problem:
        raise ConfigError(f"{flag}: {problem}") from None


def parse_inbound_ports(value: str, flag: str) -> PortSelection:
    if is_wildcard(value):
        return PortSelection(everything=True)
    return PortSelection(ports=parse_port_list(value, flag))


def parse_cidrs(value: str, flag: str, *, allow_everything: bool = True) -> CidrSelection:
    """``*`` or a comma list of CIDRs, each with its prefix length (``10.0.0.1/32``).

    The rule is :func:`meshlib.syntax.parse_cidr`, the webhook's: a bare address is refused,
    as Istio's injector and istio-iptables refuse it, so an annotation the webhook admits is
    always a flag this container takes, and the other way round.
    """
    if any(is_wildcard(item) for item in split_list(value)):
        if not allow_everything:
            raise ConfigError(
                f"{flag}: '*' is not allowed here (excluding every address would disable "
                "capture; to turn outbound capture off, pass an empty -i instead)"
            )
        return CidrSelection(everything=True)
    try:
        return CidrSelection(networks=parse_cidr_list(value))
    except SyntaxProblem as problem:
        raise ConfigError(f"{flag}: {problem}") from None


def parse_owner_ids(value: str, flag: str) -> tuple[str, ...]:
    """Numeric uids/gids for ``-m owner``; numbers only, so the plan never needs NSS."""
    ids = split_list(value)
    if not ids:
        raise ConfigError(f"{flag}: at least one numeric id is required (e.g. 1337)")
    for item in ids:
        if not item.isdigit():
            raise ConfigError(
                f"{flag}: {item!r} is not a numeric id; pass the number (e.g. 1337), "
                "or leave the flag empty to look up ENVOY_USER"
            )
    return tuple(dict.fromkeys(ids))


def parse_owner_groups(value: str, flag: str) -> tuple[str, ...]:
    groups = split_list(value)
    for group in groups:
        name = group.removesuffix("$")
        if not name or name[0] in ".-" or not set(name) <= _NAME_CHARACTERS:
            raise ConfigError(f"{flag}: {group!r} is not a group name or numeric gid")
    return tuple(dict.fromkeys(groups))


def parse_interfaces(value: str, flag: str) -> tuple[str, ...]:
    """Interface names by the rule the injector admits them with (``meshlib.ifnames``)."""
    names = split_list(value)
    for name in names:
        problem = interface_name_problem(name)
        if problem is not None:
            raise ConfigError(f"{flag}: {name!r} is not a valid interface name: {problem}")
    return tuple(dict.fromkeys(names))


def parse_mode(value: str, flag: str) -> str:
    """``-m``: one of :data:`meshlib.interception.CAPTURE_MODES`, any case; empty is REDIRECT."""
    mode = value.strip().upper() or interception.REDIRECT
    if mode == interception.NONE:
        raise ConfigError(
            f"{flag}: interception mode NONE means no capture; such pods need no init "
            "container (the injector leaves it out)"
        )
    if mode not in interception.CAPTURE_MODES:
        raise ConfigError(f"{flag}: {value!r} is not {' or '.join(interception.CAPTURE_MODES)}")
    return mode


def parse_ipv4_loopback_cidr(value: str, flag: str) -> str:
    """An IPv4 loopback CIDR with its prefix length, in canonical form (``127.0.0.1/32``).

    istio-iptables' ValidateIPv4LoopbackCidr: ``netip.ParsePrefix``, an IPv4 loopback
    address, a prefix length of 8 to 32.
    """
    if value.strip() == DEFAULT_IPV4_LOOPBACK:  # every pod: no need to load ipaddress
        return DEFAULT_IPV4_LOOPBACK
    try:
        network = parse_cidr(value)
    except SyntaxProblem as problem:
        raise ConfigError(f"{flag}: {problem}") from None
    if (
        network.version != 4
        or not network.network_address.is_loopback
        or not 8 <= network.prefixlen <= 32
    ):
        raise ConfigError(
            f"{flag}: {value!r} must be inside 127.0.0.0/8 with a prefix length of 8 to 32"
        )
    return str(network)


def parse_dns_servers(values: list[str], source: str) -> tuple[IPAddress, ...]:
    import ipaddress

    servers: list[IPAddress] = []
    for value in values:
        try:
            server = ipaddress.ip_address(value.split("%", 1)[0])
        except ValueError:
            raise ConfigError(f"{source}: {value!r} is not an IP address") from None
        if server not in servers:
            servers.append(server)
    return tuple(servers)


def validate(config: CaptureConfig) -> None:
    """Cross-field checks that no single parser can make."""
    groups = config.owner_groups
    if groups.include is not None and groups.exclude:
        raise ConfigError(
            "ISTIO_OUTBOUND_OWNER_GROUPS and ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE are mutually "
            "exclusive: list the groups to capture, or the groups to skip, not both"
        )
    if groups.include is not None and len(groups.include) > MAX_OWNER_GROUPS:
        raise ConfigError(
            f"ISTIO_OUTBOUND_OWNER_GROUPS: at most {MAX_OWNER_GROUPS} groups can be listed "
            f"(got {len(groups.include)}); use ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE instead"
        )
    if groups.include == ():
        raise ConfigError("ISTIO_OUTBOUND_OWNER_GROUPS is empty: use '*' to capture every group")
    # An interface both excluded (-c) and re-routed (-k) is accepted, as istio-iptables does:
    # the re-route rules are inserted at the head of PREROUTING, so its inbound traffic is
    # captured as outbound while its outbound traffic is still left alone.
    if not 0 < config.tproxy_mark <= 0xFFFFFFFF:
        raise ConfigError(
            f"-t: the TPROXY mark {config.tproxy_mark} must be a 32-bit non-zero value"
        )
    if not 0 < config.tproxy_route_table < 0xFFFFFFFF:
        raise ConfigError(f"-r: the route table {config.tproxy_route_table} is out of range")
