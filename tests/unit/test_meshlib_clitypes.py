"""meshlib.clitypes: one duration syntax for every ``remora`` subcommand's flags."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from controlplane.cli import discovery
from injector.cli import webhook
from meshlib.clitypes import DURATION, Duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("45s", 45.0), ("1m30s", 90.0), ("500ms", 0.5), ("2160h", 7_776_000.0), ("5", 5.0), (2, 2.0)],
)
def test_duration_takes_istio_durations_and_plain_seconds(value: object, seconds: float) -> None:
    assert DURATION.convert(value, None, None) == seconds


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("soon", "'soon' is not a duration"),
        ("nan", "'nan' is not a duration"),
        ("inf", "'inf' is not a duration"),
        ("5 minutes", "'5 minutes' has the unknown unit ' minutes'"),
        ("1e999", "'1e999' has the unknown unit 'e'"),
        ("-1s", "'-1s' is negative"),
        ("-5", "'-5' is missing a unit"),
    ],
)
def test_duration_refuses_what_is_not_a_finite_duration(value: str, problem: str) -> None:
    """The message is meshlib.syntax's: one duration rule, one wording, click adds the flag."""
    with pytest.raises(click.BadParameter, match=problem):
        DURATION.convert(value, None, None)


def test_a_numeric_default_goes_through_the_same_rule() -> None:
    assert DURATION.convert(2.5, None, None) == 2.5
    with pytest.raises(click.BadParameter, match="is not a duration"):
        DURATION.convert(float("nan"), None, None)


def test_duration_refuses_less_than_its_minimum() -> None:
    with pytest.raises(click.BadParameter, match="'500ms' is shorter than 1s"):
        Duration(minimum=1.0).convert("500ms", None, None)
    assert Duration(minimum=1.0).convert("1s", None, None) == 1.0


@pytest.mark.parametrize("flag", ["--poll-interval", "--debounce-after", "--debounce-max"])
def test_discovery_names_the_flag_with_a_bad_duration(flag: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(discovery, ["--config-dir", str(tmp_path), flag, "soon"])
    assert result.exit_code == 2
    assert f"Invalid value for '{flag}': 'soon' is not a duration" in result.output


def test_discovery_refuses_a_debounce_max_below_debounce_after(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        discovery,
        ["--config-dir", str(tmp_path), "--debounce-after", "1m", "--debounce-max", "500ms"],
    )
    assert result.exit_code == 2
    assert "--debounce-max (0.5s) must be at least --debounce-after (60s)" in result.output


@pytest.mark.parametrize("flag", ["--cert-validity", "--cert-renew-before"])
def test_webhook_names_the_flag_with_a_bad_duration(flag: str) -> None:
    result = CliRunner().invoke(webhook, [flag, "90 days"])
    assert result.exit_code == 2
    assert f"Invalid value for '{flag}': '90 days' has the unknown unit ' days'" in result.output
