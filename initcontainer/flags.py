"""istio-iptables' command line: every flag, the environment variables it reads, and the
translation of parsed flags into a :class:`~initcontainer.config.CaptureConfig`.

The names, short forms and environment bindings are istio-iptables' own, so the arguments
the injector renders and the commands in Istio's documentation work unchanged. An explicit
flag beats its environment variable. The inputs istio-iptables takes from the machine
(IPv6, DNS servers, the proxy uid) are derived here, only when their flag asks for it, and
logged.

Two parsers read the one flag table (:data:`GROUPS`):

* :func:`parse_command_line`, on every pod start: a small hand-written parser for the
  command lines argparse accepts (``-p 15001``, ``-p15001``, ``-p=15001``, ``--envoy-port
  15001``, ``--envoy-port=15001``; booleans with or without a value). It exists because
  ``import argparse`` and building its parser cost ~13 ms of a 40 ms start-up budget.
* :func:`build_parser`, argparse: ``--help``, and the reference for everything else. The
  fast parser hands any command line it does not fully understand, and every error, to
  argparse, so help and error messages are argparse's, word for word, and a command line
  argparse accepts is never refused. ``tests/unit/test_capture_flags.py`` checks that both
  parsers give the same values on a table of command lines.
"""

from __future__ import annotations

import os
import sys

from initcontainer import environment
from initcontainer.config import (
    CaptureConfig,
    ConfigError,
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
    split_list,
    validate,
)
from initcontainer.log import getLogger

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping
    from typing import Any

    # argparse.Namespace or Parsed: one attribute per flag (``args.envoy_port``).
    Args = Any

log = getLogger("initcontainer")

PROG = "remora init"

DESCRIPTION = """\
Redirect a pod's TCP traffic to its Envoy sidecar (the init container of every meshed pod).

Installs nat (and, for TPROXY, mangle) rules so that inbound connections land on Envoy's
inbound port (15006) and outbound ones on its outbound port (15001), while Envoy's own
traffic (uid/gid 1337) and the app's loopback traffic are left alone. Flags and
environment variables are those of istio-iptables. Each IP family is applied in one
transaction; re-running replaces our rules and never touches other tools' rules; any
failure exits non-zero with none of our rules left behind.

Run as root with the capabilities NET_ADMIN and NET_RAW (nft needs only NET_ADMIN).
"""

EPILOG = """\
examples:
  # What the injector runs in every pod (Istio's defaults):
  remora init -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020

  # Show the iptables-restore input without changing anything:
  remora init --dry-run -i '*' -b '*' -d 15090,15021,15020

  # Capture only inbound port 8080, skip a database port and a CIDR outbound:
  remora init -b 8080 -i '*' -o 5432 -x 10.96.0.0/12

  # Dual-stack, with DNS capture and a proof that capture works:
  remora init -i '*' -b '*' --dual-stack --redirect-dns --validate

  # Remove everything this command installed (a no-op when repeated):
  remora init --cleanup-only

  # Only check capture (e.g. when a CNI plugin installed the rules):
  remora init validate -i '*'

backends:
  iptables-restore (default) reads iptables-{nft,legacy}-save, picks the flavour that holds
    the node's rules (override with --iptables-mode) and writes one transaction per family.
  python-iptables writes through libiptc: IPv4 and iptables-legacy only, because of an
    upstream IPv6 bug (ldx/python-iptables #244) that lets IPv6 traffic bypass capture.

exit codes: 0 ok, 1 capture failed (the message says how to fix it), 2 bad flags,
  126 rules installed but validation showed traffic is not captured.
"""


# --- flag table ---------------------------------------------------------------------------


class FlagValueError(ValueError):
    """A flag's value has the wrong form; the message says what was expected."""


def parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "t", "true", "yes", "on"):
        return True
    if lowered in ("", "0", "f", "false", "no", "off"):
        return False
    raise FlagValueError(f"{value!r} is not a boolean (true/false)")


def parse_duration(value: str) -> float:
    """Go-style durations as istio-iptables takes them (``5s``, ``500ms``, ``1m``) or seconds."""
    number, scale = value.strip(), 1.0
    for suffix, unit in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):  # "ms" before "s"
        if number.endswith(suffix):
            number, scale = number.removesuffix(suffix), unit
            break
    try:
        seconds = float(number) * scale
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also rejects NaN
        raise FlagValueError(f"{value!r} is not a duration such as 5s or 500ms")
    return seconds


def parse_ip_address(value: str) -> str:
    """An IP address, checked while parsing so a typo fails before anything is changed."""
    import ipaddress

    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise FlagValueError(f"{value!r} is not an IP address") from None


class Flag:
    """One command-line flag and the environment variables it also reads."""

    __slots__ = ("choices", "default", "envs", "help", "long", "metavar", "short", "type")

    def __init__(
        self,
        long: str,
        short: str | None,
        envs: tuple[str, ...],
        default: Any,
        help: str,
        *,
        type: Callable[[str], Any] = str,
        choices: tuple[str, ...] | None = None,
        metavar: str | None = None,
    ) -> None:
        self.long = long
        self.short = short
        self.envs = envs
        self.default = default
        self.help = help
        self.type = type
        self.choices = choices
        self.metavar = metavar

    @property
    def dest(self) -> str:
        """The attribute name in the parsed arguments: ``--envoy-port`` -> ``envoy_port``."""
        return self.long.replace("-", "_")

    @property
    def is_bool(self) -> bool:
        return self.type is parse_bool

    def __repr__(self) -> str:
        return f"Flag(--{self.long})"


def _env(name: str) -> tuple[str, ...]:
    """istio-iptables' binding: a flag reads UPPER_SNAKE of its name from the environment."""
    return (name.upper().replace("-", "_"),)


GROUPS: list[tuple[str, list[Flag]]] = [
    (
        "ports and identity",
        [
            Flag(
                "envoy-port",
                "p",
                (),
                "15001",
                "outbound capture port (Envoy's virtualOutbound)",
                metavar="PORT",
            ),
            Flag(
                "inbound-capture-port",
                "z",
                _env("inbound-capture-port"),
                "15006",
                "inbound capture port (Envoy's virtualInbound)",
                metavar="PORT",
            ),
            Flag(
                "inbound-tunnel-port",
                "e",
                _env("inbound-tunnel-port"),
                "15008",
                "HBONE tunnel port: never captured inbound",
                metavar="PORT",
            ),
            Flag(
                "proxy-uid",
                "u",
                _env("proxy-uid"),
                "",
                "uid(s) of the proxy, comma separated; its traffic is never captured "
                "(empty: the uid of $ENVOY_USER, else 1337)",
                metavar="UIDS",
            ),
            Flag(
                "proxy-gid",
                "g",
                _env("proxy-gid"),
                "",
                "gid(s) of the proxy (empty: same as the uid)",
                metavar="GIDS",
            ),
        ],
    ),
    (
        "inbound",
        [
            Flag(
                "istio-inbound-interception-mode",
                "m",
                _env("istio-inbound-interception-mode"),
                "REDIRECT",
                "REDIRECT (nat) or TPROXY (mangle, keeps the client address)",
                metavar="MODE",
            ),
            Flag(
                "istio-inbound-ports",
                "b",
                _env("istio-inbound-ports"),
                "",
                "inbound ports to capture: '*' for all, a comma list, or empty for none",
                metavar="PORTS",
            ),
            Flag(
                "istio-local-exclude-ports",
                "d",
                _env("istio-local-exclude-ports"),
                "",
                "inbound ports never captured (with -b '*')",
                metavar="PORTS",
            ),
        ],
    ),
    (
        "outbound",
        [
            Flag(
                "istio-service-cidr",
                "i",
                _env("istio-service-cidr"),
                "",
                "destinations to capture: '*' for all, comma CIDRs, or empty for none",
                metavar="CIDRS",
            ),
            Flag(
                "istio-service-exclude-cidr",
                "x",
                _env("istio-service-exclude-cidr"),
                "",
                "destinations never captured, comma CIDRs",
                metavar="CIDRS",
            ),
            Flag(
                "istio-outbound-ports",
                "q",
                _env("istio-outbound-ports"),
                "",
                "ports always captured, whatever the destination",
                metavar="PORTS",
            ),
            Flag(
                "istio-local-outbound-ports-exclude",
                "o",
                _env("istio-local-outbound-ports-exclude"),
                "",
                "ports never captured (TCP and UDP)",
                metavar="PORTS",
            ),
            Flag(
                "outbound-owner-groups",
                None,
                ("ISTIO_OUTBOUND_OWNER_GROUPS",),
                "*",
                "only capture traffic of these groups (names or gids; '*' all)",
                metavar="GROUPS",
            ),
            Flag(
                "outbound-owner-groups-exclude",
                None,
                ("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE",),
                "",
                "never capture traffic of these groups",
                metavar="GROUPS",
            ),
            Flag(
                "outbound-ipv4-loopback-cidr",
                None,
                ("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR",),
                "127.0.0.1/32",
                "IPv4 loopback range treated as the pod itself",
                metavar="CIDR",
            ),
        ],
    ),
    (
        "interfaces",
        [
            Flag(
                "istio-exclude-interfaces",
                "c",
                _env("istio-exclude-interfaces"),
                "",
                "interfaces whose traffic is never captured",
                metavar="NICS",
            ),
            Flag(
                "kube-virt-interfaces",
                "k",
                _env("kube-virt-interfaces"),
                "",
                "virtual (VM) interfaces whose inbound traffic is captured as outbound",
                metavar="NICS",
            ),
        ],
    ),
    (
        "TPROXY",
        [
            Flag(
                "istio-inbound-tproxy-mark",
                "t",
                _env("istio-inbound-tproxy-mark"),
                "1337",
                "packet mark for TPROXY",
                type=int,
                metavar="MARK",
            ),
            Flag(
                "istio-inbound-tproxy-route-table",
                "r",
                _env("istio-inbound-tproxy-route-table"),
                "133",
                "route table for TPROXY's local delivery",
                type=int,
                metavar="TABLE",
            ),
        ],
    ),
    (
        "DNS and packet hygiene",
        [
            Flag(
                "redirect-dns",
                None,
                ("REDIRECT_DNS", "ISTIO_META_DNS_CAPTURE"),
                False,
                "send DNS (port 53) for the resolv.conf servers to the agent on 15053",
                type=parse_bool,
            ),
            Flag(
                "capture-all-dns",
                None,
                _env("capture-all-dns"),
                False,
                "with --redirect-dns: capture DNS to any server",
                type=parse_bool,
            ),
            Flag(
                "dns-servers",
                None,
                ("REMORA_DNS_SERVERS",),
                None,
                "DNS servers to capture (default: the nameservers in --resolv-conf)",
                metavar="IPS",
            ),
            Flag(
                "resolv-conf",
                None,
                ("REMORA_RESOLV_CONF",),
                str(environment.RESOLV_CONF),
                "where to read DNS servers from",
                metavar="PATH",
            ),
            Flag(
                "drop-invalid",
                None,
                ("DROP_INVALID", "INVALID_DROP"),
                False,
                "drop conntrack-INVALID packets instead of letting them reset connections",
                type=parse_bool,
            ),
        ],
    ),
    (
        "IPv6",
        [
            Flag(
                "dual-stack",
                None,
                ("DUAL_STACK", "ISTIO_DUAL_STACK"),
                False,
                "install IPv6 rules too (implies --enable-ipv6=true)",
                type=parse_bool,
            ),
            Flag(
                "enable-ipv6",
                None,
                ("REMORA_ENABLE_IPV6",),
                "auto",
                "install IPv6 rules: auto = when the pod has a global IPv6 address",
                choices=("auto", "true", "false"),
            ),
        ],
    ),
    (
        "backend",
        [
            Flag(
                "backend",
                None,
                ("REMORA_CAPTURE_BACKEND",),
                "iptables-restore",
                "how rules reach the kernel",
                choices=("iptables-restore", "python-iptables"),
            ),
            Flag(
                "iptables-mode",
                None,
                ("REMORA_IPTABLES_MODE",),
                "auto",
                "nft or legacy iptables (auto: the one holding the node's rules)",
                choices=("auto", "nft", "legacy"),
            ),
            Flag(
                "force-legacy-iptables",
                None,
                _env("force-legacy-iptables"),
                False,
                "istio-iptables' name for --iptables-mode=legacy",
                type=parse_bool,
            ),
        ],
    ),
    (
        "what to do",
        [
            Flag(
                "dry-run",
                "n",
                _env("dry-run"),
                False,
                "print the iptables-restore input for a fresh pod ('# ipv4', then "
                "'# ipv6' blocks) and change nothing",
                type=parse_bool,
            ),
            Flag(
                "cleanup-only",
                None,
                _env("cleanup-only"),
                False,
                "remove every rule of ours (from both iptables backends) and exit",
                type=parse_bool,
            ),
            Flag(
                "reconcile",
                None,
                _env("reconcile"),
                False,
                "accepted for compatibility: every run replaces earlier rules of ours",
                type=parse_bool,
            ),
            Flag(
                "force-apply",
                None,
                _env("force-apply"),
                False,
                "accepted for compatibility: rules are always (re)applied",
                type=parse_bool,
            ),
            Flag(
                "skip-rule-apply",
                None,
                _env("skip-rule-apply"),
                False,
                "do not install rules (use with --run-validation)",
                type=parse_bool,
            ),
            Flag(
                "network-namespace",
                None,
                _env("network-namespace"),
                "",
                "work inside this network namespace (a path under /var/run/netns or /proc)",
                metavar="PATH",
            ),
        ],
    ),
    (
        "validation",
        [
            Flag(
                "validate",
                None,
                ("REMORA_VALIDATE",),
                False,
                "after installing, prove that a probe connection is captured",
                type=parse_bool,
            ),
            Flag(
                "run-validation",
                None,
                _env("run-validation"),
                False,
                "istio-iptables' name for --validate",
                type=parse_bool,
            ),
            Flag(
                "iptables-probe-port",
                None,
                _env("iptables-probe-port"),
                "15002",
                "destination port of the probe connection",
                metavar="PORT",
            ),
            Flag(
                "probe-timeout",
                None,
                _env("probe-timeout"),
                "5s",
                "how long the probe may take",
                type=parse_duration,
                metavar="DURATION",
            ),
            Flag(
                "probe-address",
                None,
                ("REMORA_PROBE_ADDRESS",),
                None,
                "address the outbound probe dials "
                "(default: 192.0.2.1 / 2001:db8::1, or the first -i address)",
                type=parse_ip_address,
                metavar="IP",
            ),
        ],
    ),
    (
        "unsupported istio-iptables modes (refused with an explanation)",
        [
            Flag(
                "cni-mode",
                None,
                _env("cni-mode"),
                False,
                "Remora captures from the init container, not a CNI plugin",
                type=parse_bool,
            ),
            Flag(
                "native-nftables",
                None,
                _env("native-nftables"),
                False,
                "native nftables rules are not implemented; iptables-nft is used",
                type=parse_bool,
            ),
        ],
    ),
    (
        "logging",
        [
            Flag(
                "log_output_level",
                None,
                (),
                "default:info",
                "istio-style level: 'default:debug', or debug/info/warn/error",
                metavar="LEVEL",
            ),
            Flag("log_as_json", None, (), False, "log one JSON object per line", type=parse_bool),
        ],
    ),
]


# --- the fast parser: every pod start ------------------------------------------------------


class _NeedsArgparse(Exception):
    """Help, an error, or a form the fast parser leaves to argparse (e.g. a ``--`` argument)."""


def _options() -> dict[str, Flag]:
    """``-p`` and ``--envoy-port`` -> the flag; every spelling argparse knows, but ``-h``."""
    options: dict[str, Flag] = {}
    for _title, flags in GROUPS:
        for flag in flags:
            options[f"--{flag.long}"] = flag
            if flag.short:
                options[f"-{flag.short}"] = flag
    return options


OPTIONS = _options()
_FLAG_NAMES = frozenset((*OPTIONS, "-h", "--help"))  # what argparse knows


def parse_command_line(argv: list[str], environ: Mapping[str, str] | None = None) -> Args:
    """The flags of ``argv`` (defaults from ``environ``), with the values argparse gives.

    Anything but a plain, valid command line (``--help``, a bad value, an unknown flag) goes
    to argparse, which prints the help or the error and exits 2.
    """
    env = os.environ if environ is None else environ
    try:
        return _parse_fast(argv, env)
    except _NeedsArgparse:
        return build_parser(env).parse_args(argv)


class Parsed:
    """The parsed flags as attributes, like ``argparse.Namespace`` (``args.envoy_port``)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    def __repr__(self) -> str:
        return f"Parsed({vars(self)!r})"


def _parse_fast(argv: list[str], env: Mapping[str, str]) -> Parsed:
    """argparse's rules for our flags (all optional, one value each, booleans ``nargs='?'``)."""
    values = {flag.dest: _default(flag, env) for flag in OPTIONS.values()}
    index = 0
    while index < len(argv):
        flag, value = _split_option(argv[index])
        index += 1
        if value is None:  # the value is the next argument, unless that is a flag
            if index < len(argv) and not _is_option(argv[index]):
                value = argv[index]
                index += 1
            elif flag.is_bool:  # a bare boolean flag means true
                values[flag.dest] = True
                continue
            else:
                raise _NeedsArgparse  # "expected one argument"
        if value == "--":  # argparse drops it: an edge case not worth a second implementation
            raise _NeedsArgparse
        values[flag.dest] = _convert(flag, value)
    return Parsed(values)


def _split_option(arg: str) -> tuple[Flag, str | None]:
    """``--flag``, ``--flag=value``, ``-f``, ``-f=value`` or ``-fvalue`` -> (flag, value)."""
    flag = OPTIONS.get(arg)
    if flag is not None:
        return flag, None
    name, equals, value = arg.partition("=")
    if equals and name in OPTIONS:
        return OPTIONS[name], value
    if arg[:1] == "-" and arg[1:2] not in ("", "-") and arg[:2] in OPTIONS:
        return OPTIONS[arg[:2]], arg[2:]
    raise _NeedsArgparse  # help, "--", an unknown flag or a stray argument


def _is_option(arg: str) -> bool:
    """Whether argparse reads ``arg`` as a flag (then it is not the previous flag's value).

    Its rule: a ``-`` prefix makes a flag, except ``-`` alone, a negative number, or a
    string with a space that names no flag of ours (so ``-x ''``, ``-d -1`` take values).
    """
    if not arg.startswith("-"):
        return False
    if arg in _FLAG_NAMES:
        return True
    if len(arg) == 1:
        return False
    if "=" in arg and arg.partition("=")[0] in _FLAG_NAMES:
        return True
    if arg[1] != "-" and arg[:2] in _FLAG_NAMES:
        return True
    return not _looks_negative(arg) and " " not in arg


def _looks_negative(arg: str) -> bool:
    """argparse's ``^-\\d+$|^-\\d*\\.\\d+$`` (``$`` also matches before a final newline)."""
    body = arg[1:].removesuffix("\n")
    whole, dot, fraction = body.partition(".")
    if not dot:
        return whole.isdecimal()
    return (not whole or whole.isdecimal()) and fraction.isdecimal()


def _convert(flag: Flag, value: str) -> Any:
    try:
        converted = flag.type(value)
    except ValueError:
        raise _NeedsArgparse from None
    if flag.choices is not None and converted not in flag.choices:
        raise _NeedsArgparse
    return converted


def _default(flag: Flag, env: Mapping[str, str]) -> Any:
    """The first of the flag's environment variables that is set, else the flag's default.

    Like argparse, a default given as a string goes through the flag's type (``"5s"`` -> 5.0).
    """
    default = flag.default
    for name in flag.envs:
        if name in env:
            default = _convert(flag, env[name])
            break
    return flag.type(default) if isinstance(default, str) else default


# --- argparse: --help, errors, and the reference ---------------------------------------------


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The argparse parser, with defaults taken from ``environ`` (the process environment)."""
    import argparse

    class HelpFormatter(argparse.RawDescriptionHelpFormatter):
        """The width from $COLUMNS or the terminal, found without shutil (zlib, bz2, lzma)."""

        def __init__(self, prog: str) -> None:
            super().__init__(prog, width=_help_width())

    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} [validate] [flags]",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=HelpFormatter,
        allow_abbrev=False,
    )
    for title, flags in GROUPS:
        group = parser.add_argument_group(title)
        for flag in flags:
            names = ([f"-{flag.short}"] if flag.short else []) + [f"--{flag.long}"]
            default = flag.default
            env_name = next((e for e in flag.envs if e in env), None)
            if env_name is not None:
                default = _from_env(flag, env_name, env[env_name], parser)
            help_text = flag.help
            if flag.envs:
                help_text += f" [env {', '.join(flag.envs)}]"
            kwargs: dict[str, Any] = {"dest": flag.dest, "default": default}
            convert = _argparse_type(flag.type, argparse.ArgumentTypeError)
            if flag.is_bool:
                kwargs.update(nargs="?", const=True, type=convert, metavar="BOOL")
            else:
                kwargs.update(type=convert, choices=flag.choices, metavar=flag.metavar)
            group.add_argument(*names, help=help_text, **kwargs)
    return parser


def _argparse_type(convert: Callable[[str], Any], error: type[Exception]) -> Callable[[str], Any]:
    """``convert`` with FlagValueError's message shown as is (argparse's ArgumentTypeError)."""
    if convert in (str, int):
        return convert

    def checked(value: str) -> Any:
        try:
            return convert(value)
        except FlagValueError as bad:
            raise error(str(bad)) from None

    checked.__name__ = convert.__name__
    return checked


def _help_width() -> int:
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno() if sys.__stdout__ else 1).columns
        except (OSError, ValueError):
            columns = 100
    return max(columns, 40) - 2


def _from_env(flag: Flag, name: str, value: str, parser: argparse.ArgumentParser) -> Any:
    try:
        converted = flag.type(value)
    except ValueError as error:
        parser.error(f"environment variable {name}: {error}")
    if flag.choices and converted not in flag.choices:
        parser.error(f"environment variable {name}: {value!r} is not one of {flag.choices}")
    return converted


# --- args -> config -------------------------------------------------------------------------


def config_from_args(args: Args, environ: Mapping[str, str] | None = None) -> CaptureConfig:
    """Build the config, deriving what istio-iptables derives from the machine (logged)."""
    env = os.environ if environ is None else environ
    uids = args.proxy_uid
    if not uids.strip():
        user = env.get("ENVOY_USER", "istio-proxy")
        uids = environment.proxy_id_for_user(user)
        log.info("proxy uid derived", extra={"envoy_user": user, "uid": uids})
    proxy_uids = parse_owner_ids(uids, "-u/--proxy-uid")
    proxy_gids = (
        parse_owner_ids(args.proxy_gid, "-g/--proxy-gid") if args.proxy_gid.strip() else proxy_uids
    )

    ipv6 = args.dual_stack or args.enable_ipv6 == "true"
    if args.enable_ipv6 == "auto" and not ipv6:
        ipv6 = environment.has_global_ipv6()
        log.info(
            "IPv6 detected" if ipv6 else "no IPv6 address: IPv4 rules only", extra={"ipv6": ipv6}
        )

    dns = DnsCapture()
    if args.redirect_dns:
        servers: tuple[Any, ...] = ()
        if not args.capture_all_dns:
            if args.dns_servers is not None:
                servers = parse_dns_servers(split_list(args.dns_servers), "--dns-servers")
            else:
                try:
                    found = environment.resolv_conf_nameservers(args.resolv_conf)
                except OSError as error:
                    raise ConfigError(
                        f"--resolv-conf: cannot read {args.resolv_conf}: {error.strerror}; "
                        "pass --dns-servers instead"
                    ) from None
                servers = parse_dns_servers(found, args.resolv_conf)
                log.info("DNS servers read", extra={"path": args.resolv_conf, "servers": found})
            if not servers:
                log.warning("DNS capture is on but no DNS server is known: DNS is not captured")
        dns = DnsCapture(enabled=True, capture_all=args.capture_all_dns, servers=servers)

    groups = args.outbound_owner_groups.strip()
    include_groups = (
        None if groups in ("", "*") else parse_owner_groups(groups, "ISTIO_OUTBOUND_OWNER_GROUPS")
    )
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
        dns=dns,
        drop_invalid=args.drop_invalid,
        ipv6=ipv6,
        owner_groups=OwnerGroups(
            include=include_groups,
            exclude=parse_owner_groups(
                args.outbound_owner_groups_exclude, "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE"
            ),
        ),
        ipv4_loopback_cidr=parse_ipv4_loopback_cidr(
            args.outbound_ipv4_loopback_cidr, "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR"
        ),
    )
    validate(config)
    return config
