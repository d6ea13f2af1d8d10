"""``remora init`` / ``python -m initcontainer``: parse the flags, then plan, install, validate.

This module is on the start-up path of every meshed pod, so it imports only the standard
library and this package (python-iptables only when that backend is chosen), and the
modules each mode needs only when that mode runs. Not argparse (the fast flag parser of
``cmdline`` hands only ``--help`` and errors to it), not ``logging`` (``initcontainer.log``),
not ``subprocess`` (``initcontainer.process``): see docs/capture.md, "Start-up time".
"""

from __future__ import annotations

import os
import sys
import time

from initcontainer import environment
from initcontainer import log as logs
from initcontainer.cmdline import parse_command_line
from initcontainer.config import parse_port
from initcontainer.config_from_flags import (
    MachineFacts,
    config_from_args,
    ipv6_from_machine,
    nameservers_from_machine,
    proxy_uid_from_machine,
)
from initcontainer.errors import CaptureError, ConfigError, InitError, ValidationFailed
from meshlib import interception
from meshlib.syntax import split_list

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from initcontainer.backend import Backend
    from initcontainer.config import CaptureConfig
    from initcontainer.flags import Args
    from initcontainer.iptables_mode import Mode
    from initcontainer.plan import CapturePlan

log = logs.getLogger("initcontainer")


def _log_level(value: str) -> str:
    """``default:debug,foo:warn`` -> ``DEBUG`` (the ``default`` scope, or a bare level)."""
    level = "info"
    for item in split_list(value):
        scope, _, name = item.rpartition(":")
        if scope in ("", "default"):
            level = name
    mapping = {"warn": "warning", "fatal": "critical", "none": "critical"}
    level = mapping.get(level.lower(), level.lower())
    return level if level in ("debug", "info", "warning", "error", "critical") else "info"


def _make_backend(args: Args) -> Backend:
    if args.backend == "python-iptables":
        from initcontainer.backend_iptc import IptcBackend

        return IptcBackend()
    from initcontainer.backend_restore import RestoreBackend

    forced: Mode | None = None
    if args.force_legacy_iptables or args.iptables_mode == "legacy":
        forced = "legacy"
    elif args.iptables_mode == "nft":
        forced = "nft"
    return RestoreBackend(forced_mode=forced)


def _refuse_unsupported(args: Args) -> None:
    """Flag combinations that cannot work, refused before anything is read or changed."""
    if args.backend == "python-iptables" and args.iptables_mode == "nft":
        raise ConfigError(
            "--backend=python-iptables writes only iptables-legacy tables; it cannot "
            "honour --iptables-mode=nft (use --backend=iptables-restore)"
        )
    if args.cni_mode:
        raise ConfigError(
            "--cni-mode: Remora installs capture from the pod's init container, not from a "
            "CNI plugin; drop the flag (or use 'remora init validate' to check CNI rules)"
        )
    if args.native_nftables:
        raise ConfigError(
            "--native-nftables: native nftables rules are not implemented yet; without the "
            "flag Remora writes the same rules through iptables-nft (nf_tables underneath)"
        )


def run(args: Args, validate_only: bool) -> int:
    """Do what the flags say. Raises an InitError (ConfigError, CaptureError); returns 0."""
    from initcontainer.plan import build_plan

    started = time.monotonic()
    _refuse_unsupported(args)
    if args.network_namespace:
        from initcontainer import netns

        netns.enter(args.network_namespace)
    config = build_config(args, os.environ)
    plan = build_plan(config)
    if args.dry_run:
        from initcontainer.restore import install_text

        for family, rules in plan.families():
            sys.stdout.write(f"# {family.value}\n{install_text(rules)}")
        return 0
    if args.cleanup_only:
        _clean_up(args, config)
        return 0
    if not (validate_only or args.skip_rule_apply):
        _install(args, plan, started)
    if validate_only or args.validate or args.run_validation:
        _validate(args, config)
    return 0


def build_config(args: Args, environ: Mapping[str, str]) -> CaptureConfig:
    """The capture config, with the machine facts the flags leave to the machine (logged)."""
    config = config_from_args(args, machine_facts(args, environ))
    if config.dns.enabled and not config.dns.capture_all and not config.dns.servers:
        log.warning("DNS capture is on but no DNS server is known: DNS is not captured")
    return config


def machine_facts(args: Args, environ: Mapping[str, str]) -> MachineFacts:
    """Read what istio-iptables reads from the machine, only where the flags ask for it."""
    facts = MachineFacts()
    if proxy_uid_from_machine(args):
        user = environ.get("ENVOY_USER", "istio-proxy")
        uid = environment.proxy_id_for_user(user)
        log.info("proxy uid derived", extra={"envoy_user": user, "uid": uid})
        facts = facts._replace(envoy_user_uid=uid)
    if ipv6_from_machine(args):
        ipv6 = environment.has_global_ipv6()
        log.info(
            "IPv6 detected" if ipv6 else "no IPv6 address: IPv4 rules only", extra={"ipv6": ipv6}
        )
        facts = facts._replace(global_ipv6=ipv6)
    if nameservers_from_machine(args):
        try:
            found = environment.resolv_conf_nameservers(args.resolv_conf)
        except OSError as error:
            raise ConfigError(
                f"--resolv-conf: cannot read {args.resolv_conf}: {error.strerror}; "
                "pass --dns-servers instead"
            ) from None
        log.info("DNS servers read", extra={"path": args.resolv_conf, "servers": found})
        facts = facts._replace(nameservers=tuple(found))
    return facts


def _clean_up(args: Args, config: CaptureConfig) -> None:
    from initcontainer import hostnet

    backend = _make_backend(args)
    removed = backend.cleanup()
    # TPROXY's policy routing is undone in either mode (a REDIRECT clean-up may follow a
    # TPROXY install), but only TPROXY's clean-up needs `ip`: without it, none was added.
    routes = hostnet.remove_tproxy_route(
        config.tproxy_mark,
        config.tproxy_route_table,
        ip_required=config.mode == interception.TPROXY,
    )
    log.info(
        "clean-up done" if removed else "nothing to clean up",
        extra={
            "rules_removed": removed,
            "backend": backend.name,
            "tproxy_routing": "removed" if routes else "skipped: ip is not installed",
        },
    )


def _install(args: Args, plan: CapturePlan, started: float) -> None:
    from initcontainer import hostnet

    backend = _make_backend(args)
    backend.install(plan)
    try:
        hostnet.setup(plan)
    except CaptureError:
        backend.cleanup()
        raise
    log.info(
        "capture rules installed",
        extra={
            "backend": backend.name,
            "ipv4_rules": len(plan.ipv4),
            "ipv6_rules": len(plan.ipv6) if plan.ipv6 is not None else 0,
            "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
        },
    )
    if log.is_enabled_for(logs.DEBUG):
        for family, text in backend.saved_state().items():
            log.debug("final state", extra={"family": family.value, "save": text})


def _validate(args: Args, config: CaptureConfig) -> None:
    from initcontainer.probe import plan_probes, run_probe

    port = parse_port(args.iptables_probe_port, "--iptables-probe-port")
    for target in plan_probes(config, port, os.geteuid(), args.probe_address):
        run_probe(target, args.probe_timeout)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``remora init`` and ``python -m initcontainer``; returns the exit code.

    ``remora init validate [flags]`` only checks that capture works (nothing is installed).
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    validate_only = arguments[:1] == ["validate"]
    if validate_only:
        arguments = arguments[1:]
    args = parse_command_line(arguments)
    logs.configure(_log_level(args.log_output_level), "json" if args.log_as_json else "text")
    try:
        return run(args, validate_only)
    except InitError as error:
        _log_failure(error)
        return error.exit_code


def _log_failure(error: InitError) -> None:
    """One error line: what was wrong, and for a capture failure how to fix it."""
    if isinstance(error, CaptureError):
        failed = (
            "capture validation failed" if isinstance(error, ValidationFailed) else "capture failed"
        )
        log.error(failed, extra={"error": error.message, "fix": error.hint})
    else:
        log.error("invalid configuration", extra={"error": str(error)})
