"""Golden files: expected output kept beside the tests, reviewed by eye, rewritten on request.

One rule for every golden test: ``REMORA_UPDATE_GOLDEN=1`` (that exact value, nothing else)
rewrites the files before comparing, so a person can review the diff; without it a missing
golden file is written for review and the test fails, so no run ever passes against output
it has just produced itself. CI refuses to start with the variable set at all (``.ci/run``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

UPDATE_VARIABLE = "REMORA_UPDATE_GOLDEN"


def updating() -> bool:
    """Whether this run rewrites golden files (``REMORA_UPDATE_GOLDEN=1``)."""
    return os.environ.get(UPDATE_VARIABLE) == "1"


def assert_golden(path: Path, actual: str, what: str = "") -> None:
    """``actual`` equals the golden file at ``path`` (rewritten first when updating)."""
    if updating():
        path.write_text(actual)
    elif not path.exists():
        path.write_text(actual)
        pytest.fail(f"wrote the missing golden file {path}: review it, commit it, run again")
    assert actual == path.read_text(), (
        f"{what or path.name} differs from {path}: if the change is intended, review the diff "
        f"and regenerate with {UPDATE_VARIABLE}=1"
    )
