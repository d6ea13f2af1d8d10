"""``remora testbed``: a real local Kubernetes control plane for trying Remora by hand."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import click

from testbed.errors import TestBedError
from testbed.launcher import TestBed, default_detached_workdir

NAME_OPTION = click.option(
    "--name",
    default="default",
    show_default=True,
    help="Which test bed: several can run side by side, each on its own free ports.",
)


@click.group(
    help="""Start, stop and inspect a local Kubernetes control plane.

\b
A real etcd, kube-apiserver, kube-controller-manager and kube-scheduler (built by
hack/testbed/build.sh) listen on free loopback ports. There is no kubelet: Pods are
stored and stay Pending, which is all the injector and the control plane need.

\b
Example:
  remora testbed up
  eval "$(remora testbed env)"
  kubectl get namespaces
  remora testbed down
"""
)
def testbed() -> None:
    pass


@testbed.command()
@NAME_OPTION
@click.option("--no-controllers", is_flag=True, help="Only etcd and the apiserver (faster start).")
def up(name: str, no_controllers: bool) -> None:
    """Start a test bed in the background and print how to use it."""
    workdir = default_detached_workdir(name)
    if (workdir / "state.json").exists():
        raise click.ClickException(
            f"test bed '{name}' already runs (state in {workdir}); "
            f"use 'remora testbed env --name {name}' or stop it with 'remora testbed down --name {name}'"
        )
    started = time.monotonic()
    try:
        bed = TestBed.start(
            workdir=workdir,
            controllers=not no_controllers,
            detached=True,
            progress=lambda msg: click.echo(f"testbed: {msg}", err=True),
        )
    except TestBedError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"testbed: '{name}' up in {time.monotonic() - started:.1f}s at {bed.server}", err=True
    )
    click.echo(f"testbed: kubeconfig {bed.kubeconfig}", err=True)
    click.echo(f"testbed: try: kubectl --kubeconfig {bed.kubeconfig} get namespaces", err=True)
    click.echo(f"testbed: stop it with: remora testbed down --name {name}", err=True)


@testbed.command()
@NAME_OPTION
def down(name: str) -> None:
    """Stop a test bed started with 'up' and delete its data."""
    workdir = default_detached_workdir(name)
    try:
        bed = TestBed.attach(workdir)
    except TestBedError as exc:
        raise click.ClickException(str(exc)) from exc
    bed.stop(remove_workdir=True)
    click.echo(f"testbed: '{name}' stopped, {workdir} removed", err=True)


@testbed.command()
@NAME_OPTION
def env(name: str) -> None:
    """Print shell exports for a running test bed: eval "$(remora testbed env)"."""
    workdir = default_detached_workdir(name)
    try:
        bed = TestBed.attach(workdir)
    except TestBedError as exc:
        raise click.ClickException(str(exc)) from exc
    kubectl_dir = str(Path(bed.state.kubectl).parent)
    click.echo(f"export KUBECONFIG={shlex.quote(str(bed.kubeconfig))}")
    click.echo(f'export PATH={shlex.quote(kubectl_dir)}:"$PATH"')


@testbed.command()
@NAME_OPTION
def status(name: str) -> None:
    """Show the components of a test bed, their PIDs and memory."""
    workdir = default_detached_workdir(name)
    try:
        bed = TestBed.attach(workdir)
    except TestBedError as exc:
        raise click.ClickException(str(exc)) from exc
    rss = bed.rss_bytes()
    click.echo(f"server: {bed.server}  version: {bed.state.version}")
    for comp in bed.state.components:
        mem = f"{rss[comp.name] / 2**20:.0f} MiB" if comp.name in rss else "NOT RUNNING"
        click.echo(f"  {comp.name:26} pid {comp.pid:<8} {mem}")
    if len(rss) != len(bed.state.components):
        sys.exit(1)
