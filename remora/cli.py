"""The ``remora`` command: one entry point that fronts every role of the mesh.

Each subcommand lives in its role's package and is imported only when it runs, so that
``remora init`` (the capture init container, on every pod start) does not pay for the web,
gRPC and Kubernetes stacks that the other roles need.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from meshlib.version import remora_version

# name -> (module, attribute, one-line help). The help is repeated here so that
# ``remora --help`` lists every role without importing any of them.
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "proxy": (
        "sidecar.cli",
        "proxy",
        "The sidecar agent: runs Envoy, health, probes, metrics, SDS.",
    ),
    "demo": (
        "remora.demo",
        "demo",
        "Inject a workload through a real local API server, end to end (the README's demo).",
    ),
    "webhook": (
        "injector.cli",
        "webhook",
        "Run the sidecar injection webhook (mutating admission, HTTPS).",
    ),
    "kube-inject": (
        "injector.cli",
        "kube_inject",
        "Inject the sidecar into Kubernetes YAML offline (like istioctl kube-inject).",
    ),
    "discovery": (
        "controlplane.cli",
        "discovery",
        "The control plane: Kubernetes state -> Envoy config for every sidecar, over xDS.",
    ),
    "proxy-status": (
        "controlplane.cli",
        "proxy_status",
        "Whether each proxy has the config the control plane wants (SYNCED/STALE/NOT SENT).",
    ),
    "proxy-config": (
        "controlplane.cli",
        "proxy_config",
        "Show one proxy's clusters, listeners, routes or endpoints (offline: --config-dir).",
    ),
    "testbed": (
        "testbed.cli",
        "testbed",
        "Start, stop and inspect a local Kubernetes control plane (etcd + apiserver).",
    ),
}

MAIN_HELP = """Remora: an Istio-compatible sidecar service mesh for Kubernetes.

\b
Label a namespace with istio-injection=enabled and Remora's roles do the rest:
  webhook      the mutating admission webhook that injects the sidecar
  kube-inject  the same injection, offline, on YAML files
  init         the init container that redirects pod traffic to the sidecar
  discovery    the control plane: Kubernetes state -> Envoy config over xDS
  proxy        the sidecar agent that runs Envoy
  testbed      a real local Kubernetes API for trying all of it

Run 'remora COMMAND --help' for the details of one role.
"""


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *SUBCOMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in SUBCOMMANDS:
            module_name, attr, _ = SUBCOMMANDS[cmd_name]
            command = getattr(importlib.import_module(module_name), attr)
            if not isinstance(command, click.Command):
                raise TypeError(f"{module_name}.{attr} is not a click command")
            return command
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, _, help_) in SUBCOMMANDS.items()]
        rows += [
            (name, cmd.get_short_help_str(80))
            for name, cmd in self.commands.items()
            if name not in SUBCOMMANDS
        ]
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    # A callback, not click.version_option(remora_version()): reading the installed version
    # imports importlib.metadata (and email), ~2.6 MiB that every sidecar agent would carry.
    if value and not ctx.resilient_parsing:
        click.echo(f"remora, version {remora_version()}")
        ctx.exit()


@click.group(
    cls=LazyGroup, help=MAIN_HELP, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
def cli() -> None:
    pass


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def version(as_json: bool) -> None:
    """Print Remora's version and the versions of the parts it bundles."""
    import json
    import platform

    info: dict[str, Any] = {"remora": remora_version(), "python": platform.python_version()}
    if as_json:
        click.echo(json.dumps(info, sort_keys=True))
    else:
        for key, value in info.items():
            click.echo(f"{key}: {value}")


@cli.command(
    "init",
    add_help_option=False,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def init(args: tuple[str, ...]) -> None:
    """Redirect pod traffic to the sidecar (the init container; istio-iptables' flags)."""
    from initcontainer.cli import main as init_main

    sys.exit(init_main(list(args)))


def main(argv: list[str] | None = None) -> None:
    """Run the command tree (``remora.entry.main`` has already sent ``init`` to the capture code)."""
    args = sys.argv[1:] if argv is None else argv
    cli.main(args=args, prog_name="remora")
