"""The hand-written flag parser gives exactly what argparse gives, and leaves the rest to it.

``cmdline.parse_command_line`` parses every pod's command line without importing argparse;
``cmdline.build_parser`` (argparse) prints ``--help`` and every error, and is the reference
these tests hold the fast parser to: same values for every flag, spelling and environment
variable, and, for anything argparse refuses, argparse's own message and exit code 2.
"""

from __future__ import annotations

import random
import shlex
from typing import Any

import pytest

from initcontainer import cmdline
from initcontainer.cli import main
from initcontainer.cmdline import (
    OPTIONS,
    _NeedsArgparse,
    _parse_fast,
    build_parser,
    parse_command_line,
)
from initcontainer.flags import FLAGS, Flag

ALL_FLAGS = list(FLAGS)

# A valid, non-default value for every flag, as the command line spells it.
SAMPLE = {
    "envoy-port": "15101",
    "inbound-capture-port": "15106",
    "inbound-tunnel-port": "15108",
    "proxy-uid": "1000,1001",
    "proxy-gid": "2000",
    "istio-inbound-interception-mode": "TPROXY",
    "istio-inbound-ports": "8080,9090",
    "istio-local-exclude-ports": "15090,15021",
    "istio-service-cidr": "10.0.0.0/8,fd00::/8",
    "istio-service-exclude-cidr": "10.96.0.0/12",
    "istio-outbound-ports": "5432",
    "istio-local-outbound-ports-exclude": "6379",
    "outbound-owner-groups": "app,1000",
    "outbound-owner-groups-exclude": "backup",
    "outbound-ipv4-loopback-cidr": "127.0.0.0/8",
    "istio-exclude-interfaces": "eth1",
    "kube-virt-interfaces": "tap0",
    "istio-inbound-tproxy-mark": "7",
    "istio-inbound-tproxy-route-table": "77",
    "dns-servers": "10.96.0.10",
    "resolv-conf": "/tmp/resolv.conf",
    "enable-ipv6": "true",
    "backend": "python-iptables",
    "iptables-mode": "legacy",
    "network-namespace": "/var/run/netns/pod",
    "iptables-probe-port": "15102",
    "probe-timeout": "500ms",
    "probe-address": "192.0.2.9",
    "log_output_level": "default:debug",
}


def _sample(flag: Flag) -> str:
    return "true" if flag.is_bool else SAMPLE[flag.long]


def reference(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    return vars(build_parser(env).parse_args(argv))


def fast(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """The fast parser alone: fails the test if it would have handed over to argparse."""
    return vars(_parse_fast(argv, env))


def outcome(parse: Any, argv: list[str], env: dict[str, str], capsys: Any) -> tuple[Any, ...]:
    """Values, or (exit code, stderr) when the parser exits."""
    try:
        return ("ok", vars(parse(argv, env)))
    except SystemExit as exit_info:
        return ("exit", exit_info.code, capsys.readouterr().err)


def test_every_flag_has_a_sample_value() -> None:
    missing = [f.long for f in ALL_FLAGS if not f.is_bool and f.long not in SAMPLE]
    assert not missing


def test_the_fast_parser_knows_every_spelling_of_every_flag() -> None:
    spellings = {f"--{f.long}" for f in ALL_FLAGS} | {f"-{f.short}" for f in ALL_FLAGS if f.short}
    assert set(OPTIONS) == spellings
    assert "-h" not in OPTIONS and "--help" not in OPTIONS  # help always goes to argparse


@pytest.mark.parametrize("flag", ALL_FLAGS, ids=lambda f: f.long)
def test_every_flag_in_every_spelling(flag: Flag) -> None:
    value = _sample(flag)
    names = [f"--{flag.long}"] + ([f"-{flag.short}"] if flag.short else [])
    forms = []
    for name in names:
        forms += [[name, value], [f"{name}={value}"]]
    if flag.short:
        forms.append([f"-{flag.short}{value}"])
    if flag.is_bool:
        forms += [[name] for name in names]
    expected = reference(forms[0], {})
    assert expected[flag.dest] != reference([], {})[flag.dest], "the sample must not be the default"
    for argv in forms:
        assert fast(argv, {}) == reference(argv, {}) == expected, argv


@pytest.mark.parametrize("flag", [f for f in ALL_FLAGS if f.envs], ids=lambda f: f.long)
def test_every_environment_variable(flag: Flag) -> None:
    for name in flag.envs:
        env = {name: _sample(flag)}
        assert fast([], env) == reference([], env), name
        assert fast([], env)[flag.dest] != fast([], {})[flag.dest], name


def test_a_flag_beats_its_environment_variable_and_the_first_variable_wins() -> None:
    env = {"ISTIO_INBOUND_PORTS": "8080", "REDIRECT_DNS": "false", "ISTIO_META_DNS_CAPTURE": "1"}
    parsed = fast(["-b", "9090"], env)
    assert parsed["istio_inbound_ports"] == "9090"
    assert parsed["redirect_dns"] is False  # REDIRECT_DNS is listed before ISTIO_META_DNS_CAPTURE
    assert parsed == reference(["-b", "9090"], env)


def test_defaults_go_through_the_flag_type_as_in_argparse() -> None:
    parsed = fast([], {"PROBE_TIMEOUT": "2s"})
    assert parsed["probe_timeout"] == 2.0
    assert (
        fast([], {})["probe_timeout"] == 5.0 and fast([], {})["istio_inbound_tproxy_mark"] == 1337
    )


INJECTOR = "-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x '' -b '*' -d 15090,15021,15020"

# Command lines the fast parser must handle itself, with argparse's result.
EQUIVALENT = [
    INJECTOR,
    INJECTOR + " --log_output_level=default:info",
    "",
    "-p15001 -z=15006 --envoy-port=15002",  # the last one wins
    "-x '' -i ''",  # empty values
    "-d -1",  # a negative number is a value, not a flag
    "-d -1.5 -q -.5",
    "-x ' -y'",  # a value with a space
    "-x '-Q y'",  # starts with a dash, names no flag, has a space: a value
    "-x -",  # a lone dash is a value
    "--dry-run",
    "-n",
    "-n false",
    "-nfalse",
    "-n=0",
    "--dry-run -i '*'",  # the next flag is not taken as the value
    "--redirect-dns T --capture-all-dns 1 --drop-invalid=False",  # Go's strconv.ParseBool
    "--log_as_json --log_output_level info",
    "--dual-stack TRUE --enable-ipv6=auto",
    "--probe-timeout=1m --probe-address ' 2001:db8::5 '",
    "-t 0x10",  # int(): no, "0x10" is not an int -> argparse error (see ERRORS)
]
EQUIVALENT.remove("-t 0x10")
EQUIVALENT.append("-t ' 12 ' -r +5")  # int() accepts surrounding spaces and a sign


@pytest.mark.parametrize("line", EQUIVALENT)
def test_the_fast_parser_matches_argparse(line: str) -> None:
    argv = shlex.split(line)
    assert fast(argv, {}) == reference(argv, {})


# Command lines argparse refuses: the error is argparse's, it names the flag and the value.
ERRORS = [
    ("-t abc", "argument -t/--istio-inbound-tproxy-mark: invalid int value: 'abc'"),
    ("-t 0x10", "invalid int value: '0x10'"),
    ("--redirect-dns=maybe", "argument --redirect-dns: 'maybe' is not a boolean (use true or"),
    # Go's strconv.ParseBool, as istio-iptables' pflag booleans: no yes/on, no empty value.
    ("--redirect-dns yes", "argument --redirect-dns: 'yes' is not a boolean"),
    ("--drop-invalid=on", "argument --drop-invalid: 'on' is not a boolean"),
    ("--dry-run=", "argument -n/--dry-run: '' is not a boolean"),
    ("-n perhaps", "argument -n/--dry-run: 'perhaps' is not a boolean"),
    ("--backend iptc", "argument --backend: invalid choice: 'iptc'"),
    ("--iptables-mode=both", "argument --iptables-mode: invalid choice: 'both'"),
    ("--probe-timeout soon", "argument --probe-timeout: 'soon' is not a duration (use e.g. 500ms"),
    ("--probe-timeout=-1s", "argument --probe-timeout: '-1s' is negative"),
    ("--probe-address example.com", "argument --probe-address: 'example.com' is not an IP"),
    ("-p", "argument -p/--envoy-port: expected one argument"),
    ("-x -i '*'", "argument -x/--istio-service-exclude-cidr: expected one argument"),
    ("--no-such-flag", "unrecognized arguments: --no-such-flag"),
    ("--envoy", "unrecognized arguments: --envoy"),  # no abbreviations, as in istio-iptables
    ("stray", "unrecognized arguments: stray"),
    ("-p 1 -- -z 2", "unrecognized arguments"),
]


@pytest.mark.parametrize(("line", "message"), ERRORS)
def test_errors_are_argparse_messages(
    line: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = shlex.split(line)
    with pytest.raises(_NeedsArgparse):
        _parse_fast(argv, {})
    with pytest.raises(SystemExit) as exit_info:
        parse_command_line(argv, {})
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: remora init [validate] [flags]\n")
    assert message in err


def test_an_empty_boolean_environment_variable_is_unset_as_in_istio_iptables() -> None:
    """pflag refuses to set a bool to "": istio-iptables keeps the default (or the next name)."""
    assert fast([], {"DRY_RUN": ""})["dry_run"] is False
    assert fast([], {"DRY_RUN": " "}) == reference([], {"DRY_RUN": " "})
    env = {"REDIRECT_DNS": "", "ISTIO_META_DNS_CAPTURE": "true"}
    assert fast([], env)["redirect_dns"] is True
    assert fast([], env) == reference([], env)


def test_a_bad_environment_value_names_the_variable(capsys: pytest.CaptureFixture[str]) -> None:
    for env, message in [
        ({"INVALID_DROP": "maybe"}, "environment variable INVALID_DROP: 'maybe' is not a boolean"),
        ({"REMORA_IPTABLES_MODE": "x"}, "environment variable REMORA_IPTABLES_MODE: 'x' is not"),
        ({"ISTIO_INBOUND_TPROXY_MARK": "m"}, "environment variable ISTIO_INBOUND_TPROXY_MARK"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            parse_command_line([], env)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_help_teaches_and_is_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "remora init --cleanup-only" in out
    assert "-p PORT, --envoy-port PORT" in out and "[env INBOUND_CAPTURE_PORT]" in out
    with pytest.raises(SystemExit):
        main(["-p", "15001", "-h"])
    assert "exit codes:" in capsys.readouterr().out


def test_the_start_up_path_imports_no_heavy_module() -> None:
    """What the fast paths exist for: a pod start loads none of these (docs/capture.md)."""
    import subprocess
    import sys

    code = (
        "import io, sys\n"
        "import initcontainer.backend_restore, initcontainer.hostnet\n"
        "from initcontainer.cli import main\n"
        "sys.stdout, stdout = io.StringIO(), sys.stdout\n"
        f"main({['--dry-run', '--enable-ipv6=false', *shlex.split(INJECTOR)]!r})\n"
        "sys.stdout = stdout\n"
        "heavy = ('argparse', 'logging', 'subprocess', 'typing', 'enum', 'ipaddress', 're',\n"
        "         'json', 'collections', 'functools', 'threading', 'dataclasses', 'inspect')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(cmdline.__file__).rsplit("/initcontainer/", 1)[0]},
    )
    assert result.stdout.strip() == "[]", result.stderr


# Random command lines from tokens that exercise argparse's rules (values that look like
# flags, negative numbers, spaces, '=', glued short flags, '--', help): either both parsers
# give the same values, or the fast parser hands over and the result is argparse's.
TOKENS = [
    *(f"--{f.long}" for f in ALL_FLAGS[::3]),
    "-p", "-z", "-n", "-x", "-d", "-t", "-h", "--help", "--", "-", "",
    "15001", "-1", "-1.5", "-.5", "-5\n", "-1e3", " -z", "-z 1", "a b", "*", "true", "F",
    "-p15001", "-p=1", "-nfalse", "-n=", "--dry-run=True", "--log_as_json=1", "-zz", "-q-1",
    "yes", "1m30s",
    "--envoy-port=x", "10.0.0.0/8", "--no-such", "-Z", "REDIRECT", "--backend=python-iptables",
]  # fmt: skip


def test_random_command_lines_agree_with_argparse(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    parser = build_parser({})  # built once: parse_args leaves it unchanged
    monkeypatch.setattr(cmdline, "build_parser", lambda env: parser)
    chooser = random.Random(4)
    handled_fast = 0
    for _ in range(800):
        argv = [chooser.choice(TOKENS) for _ in range(chooser.randint(1, 5))]
        expected = outcome(lambda a, e: parser.parse_args(a), argv, {}, capsys)
        assert outcome(parse_command_line, argv, {}, capsys) == expected, argv
        try:
            values = fast(argv, {})
        except _NeedsArgparse:
            continue
        handled_fast += 1
        assert expected == ("ok", values), argv
    assert handled_fast > 100  # the table is not only errors
