"""Failures of the capture init container, each with what failed and what to do about it.

The init container's users read these in ``kubectl logs <pod> -c istio-init`` while their
pod is stuck in ``Init:CrashLoopBackOff``; the hint is the part that gets them unstuck.

Every failure the init container reports is an :class:`InitError`; its class decides the
exit code, which existing alerts may match::

    InitError                     anything ``remora init`` reports instead of a traceback
    ├── ConfigError               exit 2: a flag or environment value is wrong (names it)
    │   └── FlagValueError        a flag's value has the wrong form, found while parsing
    └── CaptureError              exit 1: capture could not be set up or removed (+ a hint):
        │                         an iptables tool missing or refusing the rules, python-
        │                         iptables, ``ip``, the network namespace, the probe set-up
        └── ValidationFailed      exit 126: rules installed, but a probe was not captured
"""

from __future__ import annotations

# Exit codes: 1 for a capture failure, 2 for bad flags (argparse's), 126 for a failed
# validation (istio-iptables' --run-validation code, which existing alerts may match).
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_VALIDATION_FAILED = 126


class InitError(Exception):
    """The root of the init container's failures; ``exit_code`` is what the process returns."""

    exit_code = EXIT_FAILURE


class ConfigError(InitError, ValueError):
    """A flag or environment value is invalid. The message names the flag and the fix."""

    exit_code = EXIT_USAGE


class FlagValueError(ConfigError):
    """A flag's value has the wrong form; the message says what was expected.

    Raised by the flag table's value parsers while the command line is read; argparse shows
    it after the flag's name (``argument --probe-timeout: 'soon' is not a duration ...``).
    """


class CaptureError(InitError):
    """Capture could not be set up (or removed). ``hint`` says how to fix it."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  fix: {self.hint}" if self.hint else self.message


class ValidationFailed(CaptureError):
    """The rules are in place but a probe connection was not captured."""

    exit_code = EXIT_VALIDATION_FAILED


CAPABILITY_HINT = (
    "run the init container as root with the capabilities NET_ADMIN and NET_RAW "
    "(securityContext.capabilities.add: [NET_ADMIN, NET_RAW]); the nft backend needs only "
    "NET_ADMIN, iptables-legacy and python-iptables need both"
)

# (substrings of iptables' error output, lower-cased) -> the fix. Substrings, not regular
# expressions: this module is imported on every pod start, and compiling costs milliseconds.
_KNOWN_FAILURES: list[tuple[tuple[str, ...], str]] = [
    (("permission denied", "operation not permitted", "must be root"), CAPABILITY_HINT),
    (
        ("could not fetch rule set generation id", "protocol not supported"),
        "this kernel has no usable nf_tables; retry with --iptables-mode=legacy",
    ),
    (
        ("unable to initialize table",),
        "iptables-legacy could not open the table: it needs both NET_ADMIN and NET_RAW, and "
        "the node's ip_tables/iptable_nat kernel modules; or retry with --iptables-mode=nft",
    ),
    (
        ("table does not exist", "can't initialize iptables table", "insmod"),
        "the kernel lacks the x_tables modules for this backend (ip_tables/iptable_nat, "
        "ip6table_nat for IPv6): load them on the node, or retry with the other "
        "--iptables-mode",
    ),
    (
        ("no chain/target/match by that name", "couldn't load match", "couldn't load target"),
        "a netfilter extension is missing (owner, multiport, REDIRECT, TPROXY, conntrack, "
        "comment): load the matching xt_* kernel module on the node",
    ),
    (
        ("xtables lock", "another app is currently holding"),
        "another process holds the xtables lock; retry, or set XTABLES_LOCKFILE to a writable path",
    ),
]


def hint_for(stderr: str) -> str:
    """The fix for a known iptables error message, or a generic next step."""
    lowered = stderr.lower()
    for needles, hint in _KNOWN_FAILURES:
        if any(needle in lowered for needle in needles):
            return hint
    return "rerun with --log_output_level=default:debug and --dry-run to see the rules"
