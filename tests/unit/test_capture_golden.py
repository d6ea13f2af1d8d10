"""Golden files for capture: ``tests/golden/capture/<case>.in`` -> ``<case>.out``.

A ``.in`` file holds the inputs, one per line:

* ``args: <flags>``: ``remora init`` flags (shell syntax), parsed by the real CLI parser;
* ``env: KEY=VALUE``: environment variables the CLI reads (nothing else leaks in);
* ``existing: <file>``: ``iptables-save`` output (from ``existing/``) the pod already has;
  the output is then the IPv4 transaction that replaces (or, with ``action: cleanup``,
  removes) our rules;
* ``# ...``: what the case shows.

Without ``existing``, the output is ``--dry-run``'s: the restore text per family.
Every case is also checked for properties any correct output has, whatever it is.

Regenerate after a reviewed change with
``REMORA_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_capture_golden.py``.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from pathlib import Path

import pytest

from harness.golden import assert_golden
from initcontainer.cmdline import build_parser
from initcontainer.config_from_flags import MachineFacts, config_from_args
from initcontainer.plan import build_plan
from initcontainer.restore import cleanup_text, install_text, parse_save, transaction
from initcontainer.rules import BUILTIN_CHAINS, OWNER_COMMENT

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "capture"
CASES = sorted(p.name.removesuffix(".in") for p in GOLDEN.glob("*.in"))
# Inputs a golden must not take from the machine: IPv6 detection and the uid lookup.
PINNED = ["--enable-ipv6=false"]


def _inputs(case: str) -> dict[str, list[str]]:
    inputs: dict[str, list[str]] = {"args": [], "env": [], "existing": [], "action": []}
    for line in (GOLDEN / f"{case}.in").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, _, value = line.partition(":")
        inputs[key.strip()].append(value.strip())
    return inputs


def render(case: str) -> str:
    inputs = _inputs(case)
    environ = dict(item.split("=", 1) for item in inputs["env"])
    argv = PINNED + [token for args in inputs["args"] for token in shlex.split(args)]
    args = build_parser(environ).parse_args(argv)
    plan = build_plan(config_from_args(args, MachineFacts()))
    if not inputs["existing"]:
        return "".join(
            f"# {family.value}\n{install_text(rules)}" for family, rules in plan.families()
        )
    existing = parse_save((GOLDEN / "existing" / inputs["existing"][0]).read_text())
    text = (
        cleanup_text(existing)
        if inputs["action"] == ["cleanup"]
        else transaction(plan.ipv4, existing)
    )
    return f"# ipv4\n{text}"


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 20, CASES


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    out = render(case)
    expected_path = GOLDEN / f"{case}.out"
    assert_golden(expected_path, out, f"{case}'s rules")
    _check_invariants(case, out)


def _blocks(out: str) -> dict[str, str]:
    blocks: dict[str, str] = {}
    current = ""
    for line in out.splitlines():
        if line in ("# ipv4", "# ipv6"):
            current = line[2:]
            blocks[current] = ""
        else:
            blocks[current] += line + "\n"
    return blocks


_IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?:/\d+)?\b")


def _check_invariants(case: str, out: str) -> None:
    for family, text in _blocks(out).items():
        # Each transaction is whole: every table opened is committed.
        assert text.count("\n*") + text.startswith("*") == text.count("COMMIT\n"), case
        for line in text.splitlines():
            if not line.startswith(("-A ", "-I ")):
                continue
            chain = line.split()[1]
            # Rules we add to the kernel's chains are marked, so a clean-up finds them.
            if chain in BUILTIN_CHAINS:
                assert f"--comment {OWNER_COMMENT}" in line, f"{case}: unmarked {line!r}"
            # A family's rules never carry the other family's addresses.
            addresses = _IPV4.findall(line) if family == "ipv6" else _ipv6_addresses(line)
            assert not addresses, f"{case} ({family}): foreign-family address in {line!r}"


def _ipv6_addresses(line: str) -> list[str]:
    found = []
    for token in line.split():
        try:
            if ipaddress.ip_network(token, strict=False).version == 6:
                found.append(token)
        except ValueError:
            continue
    return found
