"""``remora discovery``, ``remora proxy-status`` and ``remora proxy-config``."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from controlplane.ca.discovery import (
    ca_options,
    check_ca_flags,
    read_mesh_trust_domain,
    start_mesh_ca,
)
from controlplane.errors import ControlPlaneError
from meshlib.clitypes import DURATION
from meshlib.logs import setup_logging

if TYPE_CHECKING:
    from controlplane.app import DiscoveryOptions

log = logging.getLogger("controlplane")

DEFAULT_MONITORING = "http://127.0.0.1:15014"


@click.command(
    "discovery",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="""\b
Examples:
  # Serve the mesh of the cluster in $KUBECONFIG (or the pod's service account):
  remora discovery
\b
  # Serve a directory of Kubernetes YAML, reloaded when it changes (no cluster needed):
  remora discovery --config-dir ./mesh --log-format text
\b
  # Then look at what the connected proxies got:
  remora proxy-status
  remora proxy-config web-1.shop clusters
""",
)
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False),
    help="Watch this cluster (default: $KUBECONFIG, in-cluster account, ~/.kube/config).",
)
@click.option(
    "--config-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Read the mesh from this directory of Kubernetes YAML instead of a cluster (Services, EndpointSlices, Pods, Namespaces, the 'istio' ConfigMap).",
)
@click.option(
    "--poll-interval",
    type=DURATION,
    default="500ms",
    show_default=True,
    help="With --config-dir: how often to check the directory for changes.",
)
@click.option(
    "--xds-port",
    default=15010,
    show_default=True,
    help="Plaintext gRPC port for ADS (Envoy connects here).",
)
@click.option(
    "--monitoring-port",
    default=15014,
    show_default=True,
    help="HTTP port for /metrics, /ready and /debug/*; 0 disables it.",
)
@click.option(
    "--listen-address",
    default="0.0.0.0",
    show_default=True,
    help="Address both ports bind to (127.0.0.1 for local runs).",
)
@click.option(
    "--mesh-namespace",
    default="istio-system",
    show_default=True,
    help="Namespace of the 'istio' ConfigMap with the mesh config.",
)
@click.option(
    "--debounce-after",
    type=DURATION,
    default="100ms",
    show_default=True,
    help="Push once no change arrived for this long.",
)
@click.option(
    "--debounce-max",
    type=DURATION,
    default="1s",
    show_default=True,
    help="...but never later than this after the first change.",
)
@click.option(
    "--domain-suffix", default="cluster.local", show_default=True, help="The cluster's DNS domain."
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.option(
    "--log-format", default="json", show_default=True, type=click.Choice(["json", "text"])
)
@ca_options
def discovery(  # noqa: PLR0913, PLR0917 - one parameter per click option
    kubeconfig: str | None,
    config_dir: Path | None,
    poll_interval: float,
    xds_port: int,
    monitoring_port: int,
    listen_address: str,
    mesh_namespace: str,
    debounce_after: float,
    debounce_max: float,
    domain_suffix: str,
    log_level: str,
    log_format: str,
    **ca_flags: Any,
) -> None:
    """Run the control plane: watch the mesh and serve every sidecar its Envoy config over xDS.

    Sidecars connect over ADS (delta by default, state of the world supported) and get
    listeners, routes, clusters and endpoints for the services they may reach. The proxy
    identifies itself with node metadata NAME, NAMESPACE, INSTANCE_IPS and SERVICE_ACCOUNT
    (see docs/controlplane.md).
    """
    from controlplane.app import DiscoveryOptions

    setup_logging(log_level, log_format)
    if kubeconfig and config_dir:
        raise click.UsageError(
            "choose one source: --kubeconfig (a cluster) or --config-dir (YAML files)"
        )
    check_ca_flags(ca_flags, has_cluster=config_dir is None)
    if debounce_max < debounce_after:
        raise click.BadParameter(
            f"--debounce-max ({debounce_max:g}s) must be at least "
            f"--debounce-after ({debounce_after:g}s)"
        )
    options = DiscoveryOptions(
        xds_address=f"{listen_address}:{xds_port}",
        monitoring_address=(listen_address, monitoring_port) if monitoring_port else None,
        debounce_quiet=debounce_after,
        debounce_max=debounce_max,
    )
    try:
        asyncio.run(
            _serve(
                options,
                kubeconfig,
                config_dir,
                poll_interval,
                mesh_namespace,
                domain_suffix,
                ca_flags,
                listen_address,
            )
        )
    except OSError as exc:
        raise click.ClickException(str(exc)) from exc
    except RuntimeError as exc:  # no Kubernetes credentials: meshlib.kube says what to do
        raise click.ClickException(str(exc)) from exc


async def _serve(
    options: DiscoveryOptions,
    kubeconfig: str | None,
    config_dir: Path | None,
    poll_interval: float,
    mesh_namespace: str,
    domain_suffix: str,
    ca_flags: dict[str, Any],
    listen_address: str,
) -> None:
    from controlplane.app import DiscoveryServer
    from controlplane.sources.files import FileSource
    from controlplane.store import MeshStore

    # One trust domain for the CA and the translation: the listeners accept the SPIFFE ids
    # the CA signs. --trust-domain overrides the mesh config; without it, the cluster's mesh
    # ConfigMap decides (read once here, below, so that the CA starts with it).
    store = MeshStore(domain_suffix=domain_suffix, trust_domain=ca_flags["trust_domain"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    if config_dir is not None:
        # Read the directory before opening any port: a typo should fail fast and clearly.
        source = FileSource(config_dir, store, poll_interval)
        if not source.load():
            raise click.ClickException(f"cannot load --config-dir: {source.last_error}")
        server = DiscoveryServer(store, options, source_name="files")
        await server.start()
        try:
            server.mark_synced()
            task = asyncio.create_task(source.run())
            await stop.wait()
            task.cancel()
        finally:
            log.info("shutting down")
            await server.stop()
        return

    from controlplane.sources.kube import KubeSource
    from meshlib.kube import api_client

    api = api_client(kubeconfig)
    if ca_flags["trust_domain"] is None and (ca_flags["secure_xds_port"] or ca_flags["ca_port"]):
        trust_domain = read_mesh_trust_domain(api, mesh_namespace)
        ca_flags = {**ca_flags, "trust_domain": trust_domain}
        store = MeshStore(domain_suffix=domain_suffix, trust_domain=trust_domain)
    server = DiscoveryServer(store, options, source_name="kubernetes")
    await server.start()
    kube = KubeSource(api, store, server.metrics, mesh_namespace, on_synced=server.mark_synced)
    ca = None
    try:
        ca = await start_mesh_ca(
            ca_flags,
            api=api,
            listen_address=listen_address,
            namespace=mesh_namespace,
            domain_suffix=domain_suffix,
            hub=server.hub,
            registry=server.metrics.registry,
        )
        kube.start()
        await stop.wait()
    finally:
        kube.stop()
        log.info("shutting down")
        if ca is not None:
            await ca.stop()
        await server.stop()


def _get_json(
    base: str, path: str, params: dict[str, str] | None = None, envoy: bool = False
) -> Any:
    import httpx

    try:
        response = httpx.get(base.rstrip("/") + path, params=params, timeout=10.0)
    except httpx.HTTPError as exc:
        hint = (
            "Is Envoy running with its admin there? (in a pod: kubectl port-forward <pod> 15000)"
            if envoy
            else "Is 'remora discovery' running? Point --discovery at its monitoring port "
            "(for a cluster: kubectl port-forward ... 15014)."
        )
        raise click.ClickException(f"cannot reach {base}: {exc}. {hint}") from exc
    if response.status_code != 200:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise click.ClickException(f"{base}{path}: {response.status_code}: {detail}")
    return response.json()


_DISCOVERY_OPTION = click.option(
    "--discovery",
    "discovery_url",
    default=DEFAULT_MONITORING,
    show_default=True,
    envvar="REMORA_DISCOVERY_URL",
    help="Monitoring URL of 'remora discovery' ($REMORA_DISCOVERY_URL).",
)
_OUTPUT_OPTION = click.option(
    "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)


@click.command(
    "proxy-status",
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  remora proxy-status                      # every connected proxy
  remora proxy-status web-1.shop -o json   # one proxy, with versions and the last NACK
""",
)
@click.argument("proxy", required=False)
@_DISCOVERY_OPTION
@_OUTPUT_OPTION
def proxy_status(proxy: str | None, discovery_url: str, output: str) -> None:
    """Show whether each proxy has the configuration the control plane wants it to have.

    \b
    Per xDS type, like 'istioctl proxy-status':
      SYNCED    Envoy acknowledged the latest version sent
      NOT SENT  nothing sent yet (Envoy has not asked for this type)
      STALE     sent but not acknowledged yet, or rejected (see LAST NACK)
    """
    statuses = _get_json(discovery_url, "/debug/syncz")
    if proxy:
        statuses = [s for s in statuses if proxy in (s["proxy"], s["node_id"])]
        if not statuses:
            raise click.ClickException(
                f"no connected proxy {proxy!r} (use <pod>.<namespace>; run without it to list all)"
            )
    if output == "json":
        click.echo(json.dumps(statuses, indent=2))
        return
    from controlplane.inspect import format_proxy_status

    click.echo(format_proxy_status(statuses) if statuses else "no proxies connected")


PROXY_CONFIG_KINDS = ("clusters", "listeners", "routes", "endpoints")


@click.command(
    "proxy-config",
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  remora proxy-config web-1.shop clusters
  remora proxy-config web-1 routes -n shop -o json
  # What Envoy itself holds, through the pod's sidecar agent (kubectl exec):
  remora proxy-config web-1.shop endpoints --from-pod
  # ... or from its admin port directly (e.g. after kubectl port-forward web-1 15000):
  remora proxy-config web-1.shop endpoints --envoy-admin http://127.0.0.1:15000
  # Offline, before a change reaches the mesh: what the control plane would send the pod,
  # from a directory of YAML (Namespaces, Services, EndpointSlices, Pods, Istio's kinds):
  remora proxy-config web-1.shop all --config-dir ./mesh -o json
""",
)
@click.argument("pod")
@click.argument("kind", type=click.Choice([*PROXY_CONFIG_KINDS, "all"]))
@click.option(
    "-n",
    "--namespace",
    default=None,
    help="The pod's namespace (or write POD as <pod>.<namespace>).",
)
@_DISCOVERY_OPTION
@click.option(
    "--envoy-admin",
    default=None,
    help="Read Envoy's own config from this admin URL instead of the control plane's view.",
)
@click.option(
    "--from-pod",
    is_flag=True,
    help="Read Envoy's own config inside the pod, through the sidecar agent (kubectl exec).",
)
@click.option("--kubeconfig", default=None, help="With --from-pod: the kubeconfig kubectl uses.")
@click.option(
    "--config-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Compute offline what the control plane would send the pod, from this directory of "
    "YAML (read as 'remora discovery --config-dir' reads it); no cluster, no running proxy.",
)
@_OUTPUT_OPTION
def proxy_config(  # noqa: PLR0913, PLR0917 - one parameter per click option
    pod: str,
    kind: str,
    namespace: str | None,
    discovery_url: str,
    envoy_admin: str | None,
    from_pod: bool,
    kubeconfig: str | None,
    config_dir: Path | None,
    output: str,
) -> None:
    """Show the clusters, listeners, routes or endpoints (or all) of one proxy.

    By default this is the control plane's view: what it wants the proxy to have (compare
    with 'remora proxy-status' to know whether the proxy has it). With --from-pod or
    --envoy-admin it is what Envoy actually holds; with --config-dir, what the control plane
    would send, computed offline. Resources are Envoy v3 JSON, as in Envoy's config dump.
    """
    from controlplane.inspect import format_resources

    if config_dir is not None and (from_pod or envoy_admin):
        raise click.UsageError(
            "--config-dir computes the config offline: drop --from-pod/--envoy-admin"
        )
    target = f"{pod}.{namespace}" if namespace else pod
    kinds = PROXY_CONFIG_KINDS if kind == "all" else (kind,)
    if config_dir is not None:
        found = _previewed(config_dir, target, kinds)
    else:
        found = {
            k: _proxy_resources(k, target, discovery_url, envoy_admin, from_pod, kubeconfig)
            for k in kinds
        }
    if output == "json":
        click.echo(json.dumps(found if kind == "all" else found[kind], indent=2))
    else:
        click.echo("\n\n".join(format_resources(k, found[k]) for k in kinds))


def _previewed(
    directory: Path, target: str, kinds: tuple[str, ...]
) -> dict[str, list[dict[str, Any]]]:
    """The resources of ``kinds`` the control plane would send ``target``, as Envoy JSON."""
    from google.protobuf import json_format

    from controlplane.preview import preview
    from controlplane.resources import TYPE_BY_SHORT_NAME

    try:
        resources = preview(directory, target)
    except ControlPlaneError as exc:
        raise click.ClickException(str(exc)) from None
    return {
        kind: [
            json_format.MessageToDict(r.message)
            for r in sorted(resources[TYPE_BY_SHORT_NAME[kind]], key=lambda r: r.name)
        ]
        for kind in kinds
    }


def _proxy_resources(
    kind: str,
    target: str,
    discovery_url: str,
    envoy_admin: str | None,
    from_pod: bool,
    kubeconfig: str | None,
) -> list[dict[str, Any]]:
    """One kind of a running proxy's resources: from its pod, its Envoy, or the control plane."""
    from controlplane.inspect import (
        envoy_dump_path,
        kubectl_exec_agent_request,
        resources_from_envoy_dump,
    )

    if from_pod:
        name, _, ns = target.partition(".")
        command = kubectl_exec_agent_request(
            name, ns or "default", envoy_dump_path(kind), kubeconfig
        )
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
        if done.returncode != 0:
            raise click.ClickException(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
        return resources_from_envoy_dump(kind, json.loads(done.stdout))
    if envoy_admin:
        return resources_from_envoy_dump(
            kind, _get_json(envoy_admin, envoy_dump_path(kind), envoy=True)
        )
    if "." not in target:
        target += ".default"
    dump = _get_json(discovery_url, "/debug/config_dump", {"proxy": target, "type": kind})
    return [entry["resource"] for entry in dump[kind]]
