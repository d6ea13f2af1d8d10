"""The capture plan: a :class:`CaptureConfig` in, the ordered rules for each IP family out.

Pure: no I/O, no environment, no clock. The emission order follows istio-iptables'
``Run()`` step by step (the numbers in the comments are those steps), so that the same flags
give the same rules in the same order, and an ``iptables-save`` dump of a Remora pod reads
like one of an Istio pod. The one visible difference: rules we put into the kernel's
built-in chains carry ``-m comment --comment remora-capture`` so a re-run or a clean-up can
find them (see ``rules.OWNER_COMMENT``).

Each family is built by the same function with that family's addresses, rather than by
appending to two lists at once: a rule that exists in only one family is then an explicit
``if`` at the place it is emitted.
"""

from __future__ import annotations

from initcontainer.config import CaptureConfig
from initcontainer.records import NamedTuple
from initcontainer.rules import (
    BUILTIN_CHAINS,
    ISTIO_DIVERT,
    ISTIO_DROP,
    ISTIO_IN_REDIRECT,
    ISTIO_INBOUND,
    ISTIO_OUTPUT,
    ISTIO_OUTPUT_DNS,
    ISTIO_REDIRECT,
    ISTIO_TPROXY,
    OWNER_COMMENT,
    Family,
    Rule,
)
from meshlib import interception

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

DNS_CAPTURE_PORT = "15053"
# Envoy's inbound passthrough cluster binds its upstream connections to this source, so the
# app sees them as local and they are not captured again on the way out.
INBOUND_PASSTHROUGH_SOURCE = {Family.IPV4: "127.0.0.6/32", Family.IPV6: "::6/128"}
IPV6_LOOPBACK = "::1/128"
# istio-iptables marks the proxy's own loopback traffic with the TPROXY mark + 1.
TPROXY_OUTBOUND_MARK = "1338"
# iptables-multiport accepts at most 15 ports per rule.
MULTIPORT_LIMIT = 15


class TproxyRoute(NamedTuple):
    """Policy routing TPROXY needs: marked packets are delivered locally via table N."""

    mark: int
    table: int


class CapturePlan(NamedTuple):
    """The rules per family (``ipv6`` is None for an IPv4-only pod) and host network setup."""

    ipv4: tuple[Rule, ...]
    ipv6: tuple[Rule, ...] | None
    tproxy_route: TproxyRoute | None = None

    def families(self) -> list[tuple[Family, tuple[Rule, ...]]]:
        out = [(Family.IPV4, self.ipv4)]
        if self.ipv6 is not None:
            out.append((Family.IPV6, self.ipv6))
        return out

    @property
    def needs_ipv6_passthrough_address(self) -> bool:
        """IPv6 loopback is only ::1/128, so ::6 must be added to ``lo`` (as Istio does)."""
        return self.ipv6 is not None


def build_plan(config: CaptureConfig) -> CapturePlan:
    """The whole rule set for ``config``."""
    return CapturePlan(
        ipv4=tuple(_FamilyPlanner(config, Family.IPV4).rules()),
        ipv6=tuple(_FamilyPlanner(config, Family.IPV6).rules()) if config.ipv6 else None,
        tproxy_route=(
            TproxyRoute(mark=config.tproxy_mark, table=config.tproxy_route_table)
            if config.mode == interception.TPROXY
            else None
        ),
    )


def multiport_chunks(ports: Iterable[int]) -> list[tuple[str, ...]]:
    """Port matches for ``ports``: ``--dport P`` alone, else multiport rules of up to 15."""
    values = [str(p) for p in ports]
    if len(values) == 1:
        return [("--dport", values[0])]
    return [
        ("-m", "multiport", "--dports", ",".join(values[i : i + MULTIPORT_LIMIT]))
        for i in range(0, len(values), MULTIPORT_LIMIT)
    ]


class _FamilyPlanner:
    """Emits one family's rules in istio-iptables' order."""

    def __init__(self, config: CaptureConfig, family: Family) -> None:
        self.cfg = config
        self.family = family
        self._rules: list[Rule] = []
        v4 = family is Family.IPV4
        self.loopback = str(config.ipv4_loopback_cidr) if v4 else IPV6_LOOPBACK
        self.passthrough_source = INBOUND_PASSTHROUGH_SOURCE[family]
        self.host_suffix = "/32" if v4 else "/128"
        self.tproxy = config.mode == interception.TPROXY
        self.inbound_table = "mangle" if self.tproxy else "nat"
        self.dns_servers = config.dns.servers_for_family(family.version)
        self.dns_enabled = config.dns.enabled and (
            config.dns.capture_all or bool(config.dns.servers)
        )

    def _add(self, table: str, chain: str, *params: str, position: int | None = None) -> None:
        if chain in BUILTIN_CHAINS:
            params = _with_owner_comment(params)
        self._rules.append(Rule(table, chain, params, position))

    def rules(self) -> list[Rule]:
        self._interfaces()
        self._drop_invalid()
        self._inbound()
        self._outbound()
        if self.dns_enabled:
            self._dns()
        self._outbound_destinations()
        if self.tproxy:
            self._tproxy_marks()
        return self._rules

    # Steps 1-2: interfaces that bypass capture, and virtual NICs whose inbound is rerouted.
    def _interfaces(self) -> None:
        for nic in self.cfg.exclude_interfaces:
            self._add("nat", "PREROUTING", "-i", nic, "-j", "RETURN")
            self._add("nat", "OUTPUT", "-o", nic, "-j", "RETURN")
        if self.tproxy:
            for nic in self.cfg.exclude_interfaces:
                self._add("mangle", "PREROUTING", "-i", nic, "-j", "RETURN")
                self._add("mangle", "OUTPUT", "-o", nic, "-j", "RETURN")
        for nic in self.cfg.reroute_interfaces:
            self._add("nat", "PREROUTING", "-i", nic, "-j", "RETURN", position=1)

    # Step 3: drop out-of-window packets instead of letting the kernel reset the connection.
    def _drop_invalid(self) -> None:
        if self.cfg.drop_invalid:
            self._add(
                "mangle", "PREROUTING", "-m", "conntrack", "--ctstate", "INVALID", "-j", ISTIO_DROP
            )
            self._add("mangle", ISTIO_DROP, "-j", "DROP")

    # Steps 4-7: the redirect targets and the inbound capture.
    def _inbound(self) -> None:
        cfg = self.cfg
        tunnel = str(cfg.inbound_tunnel_port)
        self._add("nat", ISTIO_INBOUND, "-p", "tcp", "--dport", tunnel, "-j", "RETURN")
        self._add(
            "nat", ISTIO_REDIRECT, "-p", "tcp", "-j", "REDIRECT", "--to-ports", str(cfg.proxy_port)
        )
        self._add(
            "nat",
            ISTIO_IN_REDIRECT,
            "-p",
            "tcp",
            "-j",
            "REDIRECT",
            "--to-ports",
            str(cfg.inbound_capture_port),
        )
        if cfg.inbound_ports.empty:
            return
        table = self.inbound_table
        if self.tproxy:
            mark = str(cfg.tproxy_mark)
            self._add("mangle", ISTIO_DIVERT, "-j", "MARK", "--set-mark", mark)
            self._add("mangle", ISTIO_DIVERT, "-j", "ACCEPT")
            self._add(
                "mangle",
                ISTIO_TPROXY,
                "!",
                "-d",
                self.loopback,
                "-p",
                "tcp",
                "-j",
                "TPROXY",
                "--tproxy-mark",
                f"{mark}/0xffffffff",
                "--on-port",
                str(cfg.inbound_capture_port),
            )
        self._add(table, "PREROUTING", "-p", "tcp", "-j", ISTIO_INBOUND)
        if cfg.inbound_ports.everything:
            if cfg.inbound_ports_exclude:
                for match in multiport_chunks(cfg.inbound_ports_exclude):
                    self._add(table, ISTIO_INBOUND, "-p", "tcp", *match, "-j", "RETURN")
            if self.tproxy:
                self._add(table, ISTIO_INBOUND, "-p", "tcp", *_ESTABLISHED, "-j", ISTIO_DIVERT)
                self._add(table, ISTIO_INBOUND, "-p", "tcp", "-j", ISTIO_TPROXY)
            else:
                self._add(table, ISTIO_INBOUND, "-p", "tcp", "-j", ISTIO_IN_REDIRECT)
            return
        for port in cfg.inbound_ports.ports:
            dport = ("--dport", str(port))
            if self.tproxy:
                self._add(
                    table, ISTIO_INBOUND, "-p", "tcp", *dport, *_ESTABLISHED, "-j", ISTIO_DIVERT
                )
                self._add(table, ISTIO_INBOUND, "-p", "tcp", *dport, "-j", ISTIO_TPROXY)
            else:
                self._add(table, ISTIO_INBOUND, "-p", "tcp", *dport, "-j", ISTIO_IN_REDIRECT)

    # Steps 8-13: outbound capture and everything that must never be captured.
    def _outbound(self) -> None:
        cfg = self.cfg
        self._add("nat", "OUTPUT", "-j", ISTIO_OUTPUT)
        if cfg.outbound_ports_exclude:
            for proto in ("tcp", "udp"):
                for match in multiport_chunks(cfg.outbound_ports_exclude):
                    self._add("nat", ISTIO_OUTPUT, "-p", proto, *match, "-j", "RETURN")
        self._add("nat", ISTIO_OUTPUT, "-o", "lo", "-s", self.passthrough_source, "-j", "RETURN")
        tunnel = str(cfg.inbound_tunnel_port)
        # Envoy (the owner) calling the pod's own IP over lo goes back through inbound capture;
        # the app talking to itself over lo is left alone; everything else Envoy sends is final.
        for flag, ids in (("--uid-owner", cfg.proxy_uids), ("--gid-owner", cfg.proxy_gids)):
            for owner in ids:
                not_tunnel: tuple[str, ...] = ("!", "--dport", tunnel)
                if self.dns_enabled and flag == "--uid-owner":
                    not_tunnel = ("-m", "multiport", "!", "--dports", f"53,{tunnel}")
                self._add(
                    "nat", ISTIO_OUTPUT, "-o", "lo", "!", "-d", self.loopback, "-p", "tcp",
                    *not_tunnel, "-m", "owner", flag, owner, "-j", ISTIO_IN_REDIRECT,
                )  # fmt: skip
                if not cfg.outbound_cidrs.has_loopback():
                    not_dns = ("-p", "tcp", "!", "--dport", "53") if self.dns_enabled else ()
                    self._add(
                        "nat", ISTIO_OUTPUT, "-o", "lo", *not_dns,
                        "-m", "owner", "!", flag, owner, "-j", "RETURN",
                    )  # fmt: skip
                self._add("nat", ISTIO_OUTPUT, "-m", "owner", flag, owner, "-j", "RETURN")
        groups = cfg.owner_groups
        if groups.include is None:
            for group in groups.exclude:
                self._add("nat", ISTIO_OUTPUT, "-m", "owner", "--gid-owner", group, "-j", "RETURN")
        else:
            not_listed = [p for g in groups.include for p in ("-m", "owner", "!", "--gid-owner", g)]
            self._add("nat", ISTIO_OUTPUT, *not_listed, "-j", "RETURN")

    # Step 14: DNS to the agent's resolver, and conntrack zones that keep the two legs apart.
    def _dns(self) -> None:
        dns = self.cfg.dns
        servers = self.dns_servers
        to_port = DNS_CAPTURE_PORT
        self._add("raw", "OUTPUT", "-j", ISTIO_OUTPUT_DNS)
        if dns.capture_all or servers:
            self._add("nat", ISTIO_OUTPUT, "-j", ISTIO_OUTPUT_DNS)
        for proto, to_flag in (("tcp", "--to-ports"), ("udp", "--to-port")):
            if dns.capture_all:
                self._add(
                    "nat", ISTIO_OUTPUT_DNS, "-p", proto, "--dport", "53",
                    "-j", "REDIRECT", to_flag, to_port,
                )  # fmt: skip
                continue
            for server in servers:
                self._add(
                    "nat", ISTIO_OUTPUT_DNS, "-p", proto, "--dport", "53",
                    "-d", f"{server}{self.host_suffix}", "-j", "REDIRECT", to_flag, to_port,
                )  # fmt: skip
        for flag, ids in (
            ("--uid-owner", self.cfg.proxy_uids),
            ("--gid-owner", self.cfg.proxy_gids),
        ):
            for owner in ids:
                self._add(
                    "raw", ISTIO_OUTPUT_DNS, "-p", "udp", "--dport", "53",
                    "-m", "owner", flag, owner, "-j", "CT", "--zone", "1",
                )  # fmt: skip
                self._add(
                    "raw", ISTIO_OUTPUT_DNS, "-p", "udp", "--sport", to_port,
                    "-m", "owner", flag, owner, "-j", "CT", "--zone", "2",
                )  # fmt: skip
        if dns.capture_all:
            self._add("raw", "PREROUTING", "-j", ISTIO_INBOUND)
            self._add(
                "raw", ISTIO_OUTPUT_DNS, "-p", "udp", "--dport", "53", "-j", "CT", "--zone", "2"
            )
            self._add("raw", ISTIO_INBOUND, "-p", "udp", "--sport", "53", "-j", "CT", "--zone", "1")
        elif servers:
            self._add("raw", "PREROUTING", "-j", ISTIO_INBOUND)
            for server in servers:
                host = f"{server}{self.host_suffix}"
                self._add(
                    "raw", ISTIO_OUTPUT_DNS, "-p", "udp", "--dport", "53", "-d", host,
                    "-j", "CT", "--zone", "2",
                )  # fmt: skip
                self._add(
                    "raw", ISTIO_INBOUND, "-p", "udp", "--sport", "53", "-s", host,
                    "-j", "CT", "--zone", "1",
                )  # fmt: skip

    # Steps 15-18: which destinations go to Envoy.
    def _outbound_destinations(self) -> None:
        cfg = self.cfg
        self._add("nat", ISTIO_OUTPUT, "-d", self.loopback, "-j", "RETURN")
        for network in cfg.outbound_cidrs_exclude.for_family(self.family.version):
            self._add("nat", ISTIO_OUTPUT, "-d", str(network), "-j", "RETURN")
        for port in cfg.outbound_ports_include:
            self._add("nat", ISTIO_OUTPUT, "-p", "tcp", "--dport", str(port), "-j", ISTIO_REDIRECT)
        if cfg.outbound_cidrs.everything:
            self._add("nat", ISTIO_OUTPUT, "-j", ISTIO_REDIRECT)
            for nic in cfg.reroute_interfaces:
                self._add("nat", "PREROUTING", "-i", nic, "-j", ISTIO_REDIRECT, position=1)
            return
        for network in cfg.outbound_cidrs.for_family(self.family.version):
            for nic in cfg.reroute_interfaces:
                self._add(
                    "nat", "PREROUTING", "-i", nic, "-d", str(network), "-j", ISTIO_REDIRECT,
                    position=1,
                )  # fmt: skip
            self._add("nat", ISTIO_OUTPUT, "-d", str(network), "-j", ISTIO_REDIRECT)

    # Step 19: TPROXY keeps the proxy's marked connections local and out of inbound capture.
    def _tproxy_marks(self) -> None:
        cfg = self.cfg
        mark = str(cfg.tproxy_mark)
        self._add(
            "mangle", "PREROUTING", "-p", "tcp", "-m", "mark", "--mark", mark,
            "-j", "CONNMARK", "--save-mark",
        )  # fmt: skip
        self._add(
            "mangle", "OUTPUT", "-p", "tcp", "-o", "lo", "-m", "mark", "--mark", mark,
            "-j", "RETURN",
        )  # fmt: skip
        for flag, ids in (("--uid-owner", cfg.proxy_uids), ("--gid-owner", cfg.proxy_gids)):
            for owner in ids:
                self._add(
                    "mangle", "OUTPUT", "!", "-d", self.loopback, "-p", "tcp", "-o", "lo",
                    "-m", "owner", flag, owner, "-j", "MARK", "--set-mark", TPROXY_OUTBOUND_MARK,
                )  # fmt: skip
        self._add(
            "mangle", "OUTPUT", "-p", "tcp", "-m", "connmark", "--mark", mark,
            "-j", "CONNMARK", "--restore-mark",
        )  # fmt: skip
        if cfg.inbound_ports.empty:
            return
        self._add(
            "mangle", ISTIO_INBOUND, "-p", "tcp", "-m", "mark", "--mark", mark, "-j", "RETURN",
            position=1,
        )  # fmt: skip
        self._add(
            "mangle", ISTIO_INBOUND, "-p", "tcp", "-s", self.passthrough_source, "-i", "lo",
            "-j", "RETURN", position=2,
        )  # fmt: skip
        self._add(
            "mangle", ISTIO_INBOUND, "-p", "tcp", "-i", "lo", "-m", "mark", "!", "--mark",
            TPROXY_OUTBOUND_MARK, "-j", "RETURN", position=3,
        )  # fmt: skip


_ESTABLISHED = ("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED")


def _with_owner_comment(params: tuple[str, ...]) -> tuple[str, ...]:
    """Insert our marker comment before the target, where ``iptables-save`` prints it."""
    marker = ("-m", "comment", "--comment", OWNER_COMMENT)
    for index, token in enumerate(params):
        if token == "-j":
            return (*params[:index], *marker, *params[index:])
    return (*params, *marker)
