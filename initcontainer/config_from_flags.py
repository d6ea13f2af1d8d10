"""The parsed flags -> a :class:`~initcontainer.config.CaptureConfig`: what they mean.

Pure, like linkerd-proxy-init's ``BuildFirewallConfiguration``: what istio-iptables reads
from the machine (the uid of ``$ENVOY_USER``, whether the pod has an IPv6 address, the
nameservers of resolv.conf) comes in as :class:`MachineFacts`, which the CLI gathers and
logs. So the same flags and facts give the same config, in a test as in a pod, and every
plan can be reproduced elsewhere by passing the logged facts as flags.

The CLI reads only the facts the flags leave to the machine; the ``*_from_machine``
predicates say which, for the CLI and for :func:`config_from_args` alike.
"""

from __future__ import annotations

from initcontainer.config import (
    DEFAULT_PROXY_ID,
    CaptureConfig,
    DnsCapture,
    OwnerGroups,
    parse_cidrs,
    parse_dns_servers,
    parse_inbound_ports,
    parse_interfaces,
    parse_ipv4_loopback_cidr,
    parse_mode,
    parse_owner_groups,
    parse_owner_ids,
    parse_port,
    parse_port_list,
    validate,
)
from initcontainer.records import NamedTuple
from meshlib.syntax import is_wildcard, split_list

TYPE_CHECKING = False
if TYPE_CHECKING:
    from initcontainer.flags import Args


class MachineFacts(NamedTuple):
    """What istio-iptables takes from the machine; the defaults are a machine that says nothing.

    Each is used only when the flags leave it to the machine (see the predicates below).
    """

    envoy_user_uid: str = DEFAULT_PROXY_ID  # the uid of $ENVOY_USER, for an empty -u
    global_ipv6: bool = False  # the pod has a global IPv6 address, for --enable-ipv6=auto
    nameservers: tuple[str, ...] = ()  # resolv.conf's, for --redirect-dns without --dns-servers


def proxy_uid_from_machine(args: Args) -> bool:
    """An empty ``-u``: the proxy's uid is that of ``$ENVOY_USER`` (Istio's fallback)."""
    return not args.proxy_uid.strip()


def ipv6_from_machine(args: Args) -> bool:
    """``--enable-ipv6=auto`` without ``--dual-stack``: IPv6 rules when the pod has IPv6."""
    return args.enable_ipv6 == "auto" and not args.dual_stack


def nameservers_from_machine(args: Args) -> bool:
    """DNS capture of the resolv.conf servers: ``--redirect-dns``, no server list given."""
    return bool(args.redirect_dns and not args.capture_all_dns and args.dns_servers is None)


def config_from_args(args: Args, facts: MachineFacts) -> CaptureConfig:
    """The capture config the flags ask for; raises ConfigError naming the flag at fault."""
    proxy_uids, proxy_gids = _proxy_ids(args, facts)
    config = CaptureConfig(
        proxy_port=parse_port(args.envoy_port, "-p/--envoy-port"),
        inbound_capture_port=parse_port(args.inbound_capture_port, "-z/--inbound-capture-port"),
        inbound_tunnel_port=parse_port(args.inbound_tunnel_port, "-e/--inbound-tunnel-port"),
        proxy_uids=proxy_uids,
        proxy_gids=proxy_gids,
        mode=parse_mode(args.istio_inbound_interception_mode, "-m"),
        inbound_ports=parse_inbound_ports(args.istio_inbound_ports, "-b/--istio-inbound-ports"),
        inbound_ports_exclude=parse_port_list(args.istio_local_exclude_ports, "-d"),
        outbound_cidrs=parse_cidrs(args.istio_service_cidr, "-i/--istio-service-cidr"),
        outbound_cidrs_exclude=parse_cidrs(
            args.istio_service_exclude_cidr,
            "-x/--istio-service-exclude-cidr",
            allow_everything=False,
        ),
        outbound_ports_include=parse_port_list(args.istio_outbound_ports, "-q"),
        outbound_ports_exclude=parse_port_list(args.istio_local_outbound_ports_exclude, "-o"),
        exclude_interfaces=parse_interfaces(args.istio_exclude_interfaces, "-c"),
        reroute_interfaces=parse_interfaces(args.kube_virt_interfaces, "-k"),
        tproxy_mark=int(args.istio_inbound_tproxy_mark),
        tproxy_route_table=int(args.istio_inbound_tproxy_route_table),
        dns=_dns(args, facts),
        drop_invalid=args.drop_invalid,
        ipv6=(
            facts.global_ipv6
            if ipv6_from_machine(args)
            else args.dual_stack or args.enable_ipv6 == "true"
        ),
        owner_groups=_owner_groups(args),
        ipv4_loopback_cidr=parse_ipv4_loopback_cidr(
            args.outbound_ipv4_loopback_cidr, "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR"
        ),
    )
    validate(config)
    return config


def _proxy_ids(args: Args, facts: MachineFacts) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``-u`` (else the uid of ``$ENVOY_USER``) and ``-g`` (else the same as ``-u``)."""
    uids = facts.envoy_user_uid if proxy_uid_from_machine(args) else args.proxy_uid
    proxy_uids = parse_owner_ids(uids, "-u/--proxy-uid")
    if not args.proxy_gid.strip():
        return proxy_uids, proxy_uids
    return proxy_uids, parse_owner_ids(args.proxy_gid, "-g/--proxy-gid")


def _dns(args: Args, facts: MachineFacts) -> DnsCapture:
    if not args.redirect_dns:
        return DnsCapture()
    if args.capture_all_dns:
        return DnsCapture(enabled=True, capture_all=True)
    if nameservers_from_machine(args):
        servers = parse_dns_servers(list(facts.nameservers), args.resolv_conf)
    else:
        servers = parse_dns_servers(split_list(args.dns_servers), "--dns-servers")
    return DnsCapture(enabled=True, servers=servers)


def _owner_groups(args: Args) -> OwnerGroups:
    """``ISTIO_OUTBOUND_OWNER_GROUPS``: '*' (or empty) is every group."""
    include = args.outbound_owner_groups.strip()
    return OwnerGroups(
        include=(
            None
            if not include or is_wildcard(include)
            else parse_owner_groups(include, "ISTIO_OUTBOUND_OWNER_GROUPS")
        ),
        exclude=parse_owner_groups(
            args.outbound_owner_groups_exclude, "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE"
        ),
    )
