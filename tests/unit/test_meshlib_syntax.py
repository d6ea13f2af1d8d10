"""The shared value syntaxes: Go's ParseBool and ParseDuration, Istio's lists, CIDRs, ports."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshlib.syntax import (
    SyntaxProblem,
    is_wildcard,
    parse_bool,
    parse_cidr,
    parse_cidr_list,
    parse_duration,
    parse_port,
    parse_port_list,
    split_list,
)


@pytest.mark.parametrize("text", ["1", "t", "T", "TRUE", "true", "True", " true "])
def test_go_true_spellings(text: str) -> None:
    assert parse_bool(text) is True


@pytest.mark.parametrize("text", ["0", "f", "F", "FALSE", "false", "False"])
def test_go_false_spellings(text: str) -> None:
    assert parse_bool(text) is False


@pytest.mark.parametrize("text", ["yes", "on", "no", "off", "tRuE", "", "2", "y"])
def test_what_go_refuses_is_refused(text: str) -> None:
    with pytest.raises(SyntaxProblem, match="not a boolean"):
        parse_bool(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("-0", 0.0),
        ("+0", 0.0),
        ("45s", 45.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("2us", 2e-6),
        ("3\u00b5s", 3e-6),
        ("3\u03bcs", 3e-6),
        ("7ns", 7e-9),
        ("1h2m3.5s", 3723.5),
        ("+2s", 2.0),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "not a duration"),
        ("s", "not a duration"),
        (".s", "not a duration"),
        ("5", "missing a unit"),
        ("1x", "unknown unit 'x'"),
        ("1 s", "unknown unit"),
        ("1e3s", "unknown unit 'e'"),
        ("\u00b2s", "not a duration"),
        ("-1s", "negative"),
        ("nan", "not a duration"),
        ("3000000h", "too long"),
    ],
)
def test_what_go_refuses_as_a_duration(text: str, problem: str) -> None:
    with pytest.raises(SyntaxProblem, match=problem):
        parse_duration(text)


def test_bare_seconds_only_where_asked() -> None:
    assert parse_duration("5", bare_seconds=True) == 5.0
    assert parse_duration("2.5", bare_seconds=True) == 2.5
    assert parse_duration("1m", bare_seconds=True) == 60.0
    for text in ("-5", "nan", "inf", "1e3", "\u00b2"):
        with pytest.raises(SyntaxProblem):
            parse_duration(text, bare_seconds=True)


_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


@given(st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(sorted(_UNITS))), min_size=1))
def test_any_sum_of_go_terms_is_its_value(terms: list[tuple[int, str]]) -> None:
    text = "".join(f"{number}{unit}" for number, unit in terms)
    expected = sum(number * _UNITS[unit] for number, unit in terms)
    assert parse_duration(text) == pytest.approx(expected)


def test_lists_drop_empty_items_and_trim() -> None:
    assert split_list(" a, ,b,,c ") == ["a", "b", "c"]
    assert split_list("") == []
    assert is_wildcard(" * ") and not is_wildcard("*,10.0.0.0/8")


def test_cidrs_need_a_prefix_length_as_in_istio() -> None:
    assert str(parse_cidr("10.1.2.3/8")) == "10.0.0.0/8"  # host bits allowed, as net.ParseCIDR
    assert str(parse_cidr("fd00::1/64")) == "fd00::/64"
    with pytest.raises(SyntaxProblem, match=r"write 10\.0\.0\.1/32 for one address"):
        parse_cidr("10.0.0.1")
    with pytest.raises(SyntaxProblem, match="write fd00::1/128"):
        parse_cidr("fd00::1")
    for bad in ("x", "10.0.0.0/33", "10.0.0/8", "*"):
        with pytest.raises(SyntaxProblem, match="not a CIDR"):
            parse_cidr(bad)


def test_cidr_lists_keep_order_and_drop_duplicates() -> None:
    networks = parse_cidr_list("10.0.0.0/8,,fd00::/8, 10.0.0.0/8")
    assert [str(n) for n in networks] == ["10.0.0.0/8", "fd00::/8"]


def test_ports() -> None:
    assert parse_port(" 80 ") == 80
    assert parse_port_list("80, 443,80,,") == (80, 443)
    for bad in ("0", "65536", "-1", "http", "\u00b2", "8 0"):
        with pytest.raises(SyntaxProblem):
            parse_port(bad)


def test_import_free_for_the_init_container() -> None:
    """The init container imports this on every pod start: nothing heavy may come along."""
    code = (
        "import sys; before = set(sys.modules); import meshlib.syntax, meshlib.interception; "
        "new = set(sys.modules) - before - {'__future__', 'meshlib', 'meshlib.syntax', 'meshlib.interception'}; "
        "print(sorted(new))"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], check=False, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
