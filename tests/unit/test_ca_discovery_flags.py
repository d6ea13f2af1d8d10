"""The CA's flags of ``remora discovery`` are refused before anything starts when they cannot work."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from controlplane.cli import discovery


def test_ca_without_a_cluster_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(discovery, ["--config-dir", str(tmp_path), "--ca-port", "15999"])
    assert result.exit_code == 2
    assert "needs a cluster to review service-account tokens" in result.output


def test_same_port_twice_is_a_usage_error() -> None:
    result = CliRunner().invoke(
        discovery,
        ["--kubeconfig", "/nonexistent", "--ca-port", "15012", "--secure-xds-port", "15012"],
    )
    assert result.exit_code == 2
    assert "must differ" in result.output


def test_help_teaches_the_ca_flags() -> None:
    out = CliRunner().invoke(discovery, ["--help"]).output
    for flag in (
        "--ca-dir",
        "--secure-xds-port",
        "--ca-port",
        "--trust-domain",
        "--token-audience",
    ):
        assert flag in out
