"""istio-iptables' flags, one row each: name, short form, environment variables, default,
value syntax, help.

The names, short forms and environment bindings are istio-iptables' own, so the arguments
the injector renders and the commands in Istio's documentation work unchanged. Like
istio-iptables (``pkg/flag.BindEnv``), a flag reads the UPPER_SNAKE form of its name from the
environment, a few also read Istio's proxy-metadata names (``ISTIO_META_DNS_CAPTURE``), and
an explicit flag beats its environment variable. :mod:`initcontainer.cmdline` reads this
table; :mod:`initcontainer.config_from_flags` turns the values into a capture config.

Most values stay text here (``PORT``, ``CIDRS``, ...) and are checked when the config is
built, where the error names the flag and says how to fix it. Booleans, durations and IP
addresses are parsed at once, by the rules in :mod:`meshlib.syntax` (Go's
``strconv.ParseBool`` and ``time.ParseDuration``, as istio-iptables reads them).
"""

from __future__ import annotations

from initcontainer.errors import FlagValueError
from meshlib.syntax import SyntaxProblem, parse_bool, parse_duration

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    # The parsed flags, argparse.Namespace or cmdline.Parsed: one attribute per flag, named
    # by its ``dest`` (``args.envoy_port``).
    Args = Any

RESOLV_CONF = "/etc/resolv.conf"  # where istio-iptables reads the DNS servers to capture


class Value:
    """A flag's value syntax: how its text is read, and how ``--help`` shows it."""

    __slots__ = ("choices", "metavar", "parse")

    def __init__(
        self,
        parse: Callable[[str], Any],
        metavar: str | None = None,
        choices: tuple[str, ...] | None = None,
    ) -> None:
        self.parse = parse
        self.metavar = metavar
        self.choices = choices


def seconds(text: str) -> float:
    """A Go duration (``500ms``, ``1m30s``) or a plain number of seconds, as ``--probe-timeout``."""
    return parse_duration(text, bare_seconds=True)


def ip_address(text: str) -> str:
    """An IP address, checked while parsing so a typo fails before anything is changed."""
    import ipaddress

    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise FlagValueError(f"{text!r} is not an IP address") from None


# Text, checked when the config is built (the error then names the flag and the fix).
PORT = Value(str, "PORT")
PORTS = Value(str, "PORTS")
UIDS = Value(str, "UIDS")
GIDS = Value(str, "GIDS")
GROUP_NAMES = Value(str, "GROUPS")
MODE = Value(str, "MODE")
CIDR = Value(str, "CIDR")
CIDRS = Value(str, "CIDRS")
NICS = Value(str, "NICS")
IPS = Value(str, "IPS")
PATH = Value(str, "PATH")
LEVEL = Value(str, "LEVEL")
# Parsed at once: argparse reports a bad value after the flag's name.
MARK = Value(int, "MARK")
ROUTE_TABLE = Value(int, "TABLE")
BOOL = Value(parse_bool, "BOOL")
DURATION = Value(seconds, "DURATION")
IP = Value(ip_address, "IP")
IPV6_CHOICES = Value(str, None, ("auto", "true", "false"))
BACKENDS = Value(str, None, ("iptables-restore", "python-iptables"))
IPTABLES_MODES = Value(str, None, ("auto", "nft", "legacy"))


class Flag:
    """One command-line flag and the environment variables it also reads."""

    __slots__ = ("default", "envs", "help", "long", "short", "value")

    def __init__(
        self,
        long: str,
        short: str | None,
        envs: tuple[str, ...],
        default: Any,
        value: Value,
        help: str,
    ) -> None:
        self.long = long
        self.short = short
        self.envs = envs
        self.default = default
        self.value = value
        self.help = help

    @property
    def dest(self) -> str:
        """The attribute name in the parsed arguments: ``--envoy-port`` -> ``envoy_port``."""
        return self.long.replace("-", "_")

    @property
    def is_bool(self) -> bool:
        """A boolean: ``--flag`` alone means true, and an empty environment value is unset."""
        return self.value is BOOL

    def parse(self, text: str) -> Any:
        """The value of ``text``, or FlagValueError (a ValueError) saying what was expected."""
        try:
            value = self.value.parse(text)
        except SyntaxProblem as problem:
            raise FlagValueError(str(problem)) from None
        if self.value.choices is not None and value not in self.value.choices:
            raise FlagValueError(f"{text!r} is not one of {self.value.choices}")
        return value

    def __repr__(self) -> str:
        return f"Flag(--{self.long})"


# One flag per row:  --long name, -short, environment variables, default, value syntax,
# then the help. Grouped as ``--help`` shows them.
# fmt: off
FLAG_GROUPS: tuple[tuple[str, tuple[Flag, ...]], ...] = (
    ("ports and identity", (
        Flag("envoy-port",                         "p",  (),                                         "15001",            PORT,
             "outbound capture port (Envoy's virtualOutbound)"),
        Flag("inbound-capture-port",               "z",  ("INBOUND_CAPTURE_PORT",),                  "15006",            PORT,
             "inbound capture port (Envoy's virtualInbound)"),
        Flag("inbound-tunnel-port",                "e",  ("INBOUND_TUNNEL_PORT",),                   "15008",            PORT,
             "HBONE tunnel port: never captured inbound"),
        Flag("proxy-uid",                          "u",  ("PROXY_UID",),                             "",                 UIDS,
             "uid(s) of the proxy, comma separated; its traffic is never captured (empty: the "
             "uid of $ENVOY_USER, else 1337)"),
        Flag("proxy-gid",                          "g",  ("PROXY_GID",),                             "",                 GIDS,
             "gid(s) of the proxy (empty: same as the uid)"),
    )),
    ("inbound", (
        Flag("istio-inbound-interception-mode",    "m",  ("ISTIO_INBOUND_INTERCEPTION_MODE",),       "REDIRECT",         MODE,
             "REDIRECT (nat) or TPROXY (mangle, keeps the client address)"),
        Flag("istio-inbound-ports",                "b",  ("ISTIO_INBOUND_PORTS",),                   "",                 PORTS,
             "inbound ports to capture: '*' for all, a comma list, or empty for none"),
        Flag("istio-local-exclude-ports",          "d",  ("ISTIO_LOCAL_EXCLUDE_PORTS",),             "",                 PORTS,
             "inbound ports never captured (with -b '*')"),
    )),
    ("outbound", (
        Flag("istio-service-cidr",                 "i",  ("ISTIO_SERVICE_CIDR",),                    "",                 CIDRS,
             "destinations to capture: '*' for all, comma CIDRs, or empty for none"),
        Flag("istio-service-exclude-cidr",         "x",  ("ISTIO_SERVICE_EXCLUDE_CIDR",),            "",                 CIDRS,
             "destinations never captured, comma CIDRs"),
        Flag("istio-outbound-ports",               "q",  ("ISTIO_OUTBOUND_PORTS",),                  "",                 PORTS,
             "ports always captured, whatever the destination"),
        Flag("istio-local-outbound-ports-exclude", "o",  ("ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE",),    "",                 PORTS,
             "ports never captured (TCP and UDP)"),
        Flag("outbound-owner-groups",              None, ("ISTIO_OUTBOUND_OWNER_GROUPS",),           "*",                GROUP_NAMES,
             "only capture traffic of these groups (names or gids; '*' all)"),
        Flag("outbound-owner-groups-exclude",      None, ("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE",),   "",                 GROUP_NAMES,
             "never capture traffic of these groups"),
        Flag("outbound-ipv4-loopback-cidr",        None, ("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR",),     "127.0.0.1/32",     CIDR,
             "IPv4 loopback range treated as the pod itself"),
    )),
    ("interfaces", (
        Flag("istio-exclude-interfaces",           "c",  ("ISTIO_EXCLUDE_INTERFACES",),              "",                 NICS,
             "interfaces whose traffic is never captured"),
        Flag("kube-virt-interfaces",               "k",  ("KUBE_VIRT_INTERFACES",),                  "",                 NICS,
             "virtual (VM) interfaces whose inbound traffic is captured as outbound"),
    )),
    ("TPROXY", (
        Flag("istio-inbound-tproxy-mark",          "t",  ("ISTIO_INBOUND_TPROXY_MARK",),             "1337",             MARK,
             "packet mark for TPROXY"),
        Flag("istio-inbound-tproxy-route-table",   "r",  ("ISTIO_INBOUND_TPROXY_ROUTE_TABLE",),      "133",              ROUTE_TABLE,
             "route table for TPROXY's local delivery"),
    )),
    ("DNS and packet hygiene", (
        Flag("redirect-dns",                       None, ("REDIRECT_DNS", "ISTIO_META_DNS_CAPTURE"), False,              BOOL,
             "send DNS (port 53) for the resolv.conf servers to the agent on 15053"),
        Flag("capture-all-dns",                    None, ("CAPTURE_ALL_DNS",),                       False,              BOOL,
             "with --redirect-dns: capture DNS to any server"),
        Flag("dns-servers",                        None, ("REMORA_DNS_SERVERS",),                    None,               IPS,
             "DNS servers to capture (default: the nameservers in --resolv-conf)"),
        Flag("resolv-conf",                        None, ("REMORA_RESOLV_CONF",),                    RESOLV_CONF,        PATH,
             "where to read DNS servers from"),
        Flag("drop-invalid",                       None, ("DROP_INVALID", "INVALID_DROP"),           False,              BOOL,
             "drop conntrack-INVALID packets instead of letting them reset connections"),
    )),
    ("IPv6", (
        Flag("dual-stack",                         None, ("DUAL_STACK", "ISTIO_DUAL_STACK"),         False,              BOOL,
             "install IPv6 rules too (implies --enable-ipv6=true)"),
        Flag("enable-ipv6",                        None, ("REMORA_ENABLE_IPV6",),                    "auto",             IPV6_CHOICES,
             "install IPv6 rules: auto = when the pod has a global IPv6 address"),
    )),
    ("backend", (
        Flag("backend",                            None, ("REMORA_CAPTURE_BACKEND",),                "iptables-restore", BACKENDS,
             "how rules reach the kernel"),
        Flag("iptables-mode",                      None, ("REMORA_IPTABLES_MODE",),                  "auto",             IPTABLES_MODES,
             "nft or legacy iptables (auto: the one holding the node's rules)"),
        Flag("force-legacy-iptables",              None, ("FORCE_LEGACY_IPTABLES",),                 False,              BOOL,
             "istio-iptables' name for --iptables-mode=legacy"),
    )),
    ("what to do", (
        Flag("dry-run",                            "n",  ("DRY_RUN",),                               False,              BOOL,
             "print the iptables-restore input for a fresh pod ('# ipv4', then '# ipv6' blocks) "
             "and change nothing"),
        Flag("cleanup-only",                       None, ("CLEANUP_ONLY",),                          False,              BOOL,
             "remove every rule of ours (from both iptables backends) and exit"),
        Flag("reconcile",                          None, ("RECONCILE",),                             False,              BOOL,
             "accepted for compatibility: every run replaces earlier rules of ours"),
        Flag("force-apply",                        None, ("FORCE_APPLY",),                           False,              BOOL,
             "accepted for compatibility: rules are always (re)applied"),
        Flag("skip-rule-apply",                    None, ("SKIP_RULE_APPLY",),                       False,              BOOL,
             "do not install rules (use with --run-validation)"),
        Flag("network-namespace",                  None, ("NETWORK_NAMESPACE",),                     "",                 PATH,
             "work inside this network namespace (a path under /var/run/netns or /proc)"),
    )),
    ("validation", (
        Flag("validate",                           None, ("REMORA_VALIDATE",),                       False,              BOOL,
             "after installing, prove that a probe connection is captured"),
        Flag("run-validation",                     None, ("RUN_VALIDATION",),                        False,              BOOL,
             "istio-iptables' name for --validate"),
        Flag("iptables-probe-port",                None, ("IPTABLES_PROBE_PORT",),                   "15002",            PORT,
             "destination port of the probe connection"),
        Flag("probe-timeout",                      None, ("PROBE_TIMEOUT",),                         "5s",               DURATION,
             "how long the probe may take"),
        Flag("probe-address",                      None, ("REMORA_PROBE_ADDRESS",),                  None,               IP,
             "address the outbound probe dials (default: 192.0.2.1 / 2001:db8::1, or the first "
             "-i address)"),
    )),
    ("unsupported istio-iptables modes (refused with an explanation)", (
        Flag("cni-mode",                           None, ("CNI_MODE",),                              False,              BOOL,
             "Remora captures from the init container, not a CNI plugin"),
        Flag("native-nftables",                    None, ("NATIVE_NFTABLES",),                       False,              BOOL,
             "native nftables rules are not implemented; iptables-nft is used"),
    )),
    ("logging", (
        Flag("log_output_level",                   None, (),                                         "default:info",     LEVEL,
             "istio-style level: 'default:debug', or debug/info/warn/error"),
        Flag("log_as_json",                        None, (),                                         False,              BOOL,
             "log one JSON object per line"),
    )),

)
# fmt: on

FLAGS = tuple(flag for _title, flags in FLAG_GROUPS for flag in flags)
