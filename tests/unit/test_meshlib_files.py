"""meshlib.files.write_atomically: old or new content, never half; keys never world-readable."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from meshlib.files import write_atomically


def test_replaces_the_content_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "envoy-rev.json"
    write_atomically(target, b"old")
    write_atomically(target, b"new")
    assert target.read_bytes() == b"new"
    assert os.listdir(target.parent) == ["envoy-rev.json"]


def test_a_key_is_created_with_its_mode_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o000)
    try:
        write_atomically(tmp_path / "tls.key", b"secret", 0o600)
        write_atomically(tmp_path / "tls.crt", b"public")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "tls.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tls.crt").stat().st_mode) == 0o644


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "tls.key"
    write_atomically(target, b"old", 0o600)

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_atomically(target, b"new", 0o600)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["tls.key"]
