"""The one golden-file rule: only REMORA_UPDATE_GOLDEN=1 rewrites, and nothing passes vacuously."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.golden import UPDATE_VARIABLE, assert_golden, updating


@pytest.mark.parametrize("value", ["", "0", "true", "yes", "1 "])
def test_only_the_value_1_updates(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(UPDATE_VARIABLE, value)
    assert not updating()
    monkeypatch.setenv(UPDATE_VARIABLE, "1")
    assert updating()


def test_a_difference_fails_without_touching_the_golden(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(UPDATE_VARIABLE, "yes")
    golden = tmp_path / "case.txt"
    golden.write_text("expected\n")
    with pytest.raises(AssertionError, match="REMORA_UPDATE_GOLDEN=1"):
        assert_golden(golden, "actual\n")
    assert golden.read_text() == "expected\n"


def test_a_missing_golden_is_written_for_review_and_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(UPDATE_VARIABLE, raising=False)
    golden = tmp_path / "new.txt"
    with pytest.raises(pytest.fail.Exception, match="review it"):
        assert_golden(golden, "fresh\n")
    assert golden.read_text() == "fresh\n"


def test_updating_rewrites_then_compares(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(UPDATE_VARIABLE, "1")
    golden = tmp_path / "case.txt"
    golden.write_text("old\n")
    assert_golden(golden, "new\n")
    assert golden.read_text() == "new\n"
