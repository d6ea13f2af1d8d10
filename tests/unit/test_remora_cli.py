"""The ``remora`` front door: every role listed without importing any, and a cheap --version."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from meshlib.version import remora_version
from remora.cli import SUBCOMMANDS, cli


def test_version_flag_and_command_agree() -> None:
    flag = CliRunner().invoke(cli, ["--version"])
    command = CliRunner().invoke(cli, ["version"])
    assert flag.exit_code == 0 and command.exit_code == 0
    assert flag.output == f"remora, version {remora_version()}\n"
    assert f"remora: {remora_version()}" in command.output


def test_help_lists_every_role() -> None:
    out = CliRunner().invoke(cli, ["--help"]).output
    for name in SUBCOMMANDS:
        assert name in out


def test_importing_the_cli_loads_no_role_and_no_package_metadata() -> None:
    """The sidecar agent is started through this CLI: what it imports, every pod carries."""
    code = (
        "import sys, remora.cli\n"
        "heavy = ['importlib.metadata', 'email', 'sidecar', 'injector', 'controlplane', 'grpc']\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
