"""The ``remora`` console script's first stop, kept free of third-party imports.

``remora init`` runs in every meshed Pod's init container, so it goes straight to the capture
code with istio-iptables' flags untouched; importing click and the command tree (about 50 ms
here) is left to every other subcommand.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["init"]:
        from initcontainer.cli import main as init_main

        sys.exit(init_main(args[1:]))
    from remora.cli import main as cli_main

    cli_main(args)
