"""``remora init`` / ``python -m initcontainer``: parse the flags, then plan, install, validate.

This module is on the start-up path of every meshed pod, so it imports only the standard
library and this package (python-iptables only when that backend is chosen), and the
modules each mode needs only when that mode runs. Not argparse (the fast flag parser of
``flags`` hands only ``--help`` and errors to it), not ``logging`` (``initcontainer.log``),
not ``subprocess`` (``initcontainer.process``): see docs/capture.md, "Start-up time".
"""

from __future__ import annotations

import os
import sys
import time

from initcontainer import log as logs
from initcontainer.config import ConfigError, InterceptionMode, parse_port, split_list
from initcontainer.errors import EXIT_FAILURE, EXIT_USAGE, EXIT_VALIDATION_FAILED, CaptureError
from initcontainer.flags import config_from_args, parse_command_line

TYPE_CHECKING = False
if TYPE_CHECKING:
    from initcontainer.backend import Backend
    from initcontainer.flags import Args
    from initcontainer.iptables_mode import Mode

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
    """Do what the flags say. Raises ConfigError/CaptureError; returns the exit code."""
    from initcontainer import hostnet
    from initcontainer.plan import build_plan

    started = time.monotonic()
    _refuse_unsupported(args)
    if args.network_namespace:
        from initcontainer import netns

        netns.enter(args.network_namespace)
    config = config_from_args(args)
    plan = build_plan(config)

    if args.dry_run:
        from initcontainer.restore import install_text

        for family, rules in plan.families():
            sys.stdout.write(f"# {family.value}\n{install_text(rules)}")
        return 0

    if args.cleanup_only:
        backend = _make_backend(args)
        removed = backend.cleanup()
        # TPROXY's policy routing is undone in either mode (a REDIRECT clean-up may follow a
        # TPROXY install), but only TPROXY's clean-up needs `ip`: without it, none was added.
        routes = hostnet.remove_tproxy_route(
            config.tproxy_mark,
            config.tproxy_route_table,
            ip_required=config.mode == InterceptionMode.TPROXY,
        )
        log.info(
            "clean-up done" if removed else "nothing to clean up",
            extra={
                "rules_removed": removed,
                "backend": backend.name,
                "tproxy_routing": "removed" if routes else "skipped: ip is not installed",
            },
        )
        return 0

    if not (validate_only or args.skip_rule_apply):
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

    if validate_only or args.validate or args.run_validation:
        from initcontainer.probe import plan_probes, run_probe

        port = parse_port(args.iptables_probe_port, "--iptables-probe-port")
        for target in plan_probes(config, port, os.geteuid(), args.probe_address):
            run_probe(target, args.probe_timeout)
    return 0


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
    except ConfigError as error:
        log.error("invalid configuration", extra={"error": str(error)})
        return EXIT_USAGE
    except CaptureError as error:
        from initcontainer.probe import ValidationFailed

        failed = (
            "capture validation failed" if isinstance(error, ValidationFailed) else "capture failed"
        )
        log.error(failed, extra={"error": error.message, "fix": error.hint})
        return EXIT_VALIDATION_FAILED if isinstance(error, ValidationFailed) else EXIT_FAILURE
